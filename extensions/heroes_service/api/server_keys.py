"""``/organization/data/server-credentials``: a single-user server's S3 keys, for the hub only (issue 17).

The hub's pre-spawn hook (hub_config/heroes_data.py) asks here for the keys of the server it is about to
start, and its post-stop hook revokes them. Only the hub's token-only service (``server_keys_service``)
may call these routes (access level ``hub-service``, checked by the access middleware and again below);
the user is named in the request because the hub acts on their behalf. The hub therefore holds no S3
admin keys: the service is the only component that does.
"""
from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from .. import data as data_pkg
from ..data import server_keys
from ..errors import NotFound, Unauthorized
from .data import data_service

router = APIRouter(prefix="/organization/data", tags=["data"])

#: JupyterHub user names and server names: no '/', no control characters (server "" is the default one)
USER_PATTERN = r"^[^/\x00-\x1f\x7f]{1,255}$"
SERVER_PATTERN = r"^[^/\x00-\x1f\x7f]{0,255}$"


class ServerKeysRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are refused, never ignored
    user: str = Field(pattern=USER_PATTERN, description="The JupyterHub (and Keycloak) user name.")
    server: str = Field("", pattern=SERVER_PATTERN, description="The server's name; '' is the default server.")


class ServerKeys(BaseModel):
    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str


async def hub_only(request: Request) -> str:
    """The hub's service name (the middleware resolved it); checked again so the route never runs without.
    Async: the usual case reads ``request.state`` and costs no thread-pool round trip per hub call."""
    caller = getattr(request.state, "hub_service", None)
    if caller is None:
        caller = await anyio.to_thread.run_sync(request.app.state.authenticator.hub_service_caller,
                                                request.headers.get("authorization"))
    return caller


def _organization_of(request: Request, user: str) -> str:
    """The user's organization (the bucket's quota tag); 404 for a name that is no enabled HEROES user."""
    try:
        principal = request.app.state.authenticator.principal_by_username(user, via="hub")
    except Unauthorized:
        raise NotFound(f"no enabled HEROES user named {user!r}") from None
    return principal.organization or ""


@router.post("/server-credentials", response_model=ServerKeys,
             summary="(hub only) New S3 keys of one single-user server, limited to its user's personal bucket")
def issue(body: ServerKeysRequest, request: Request, _hub: str = Depends(hub_only),
          data: data_pkg.DataService = Depends(data_service)) -> dict:
    organization = _organization_of(request, body.user)
    return server_keys.server_credentials(data, body.user, organization, body.server)


@router.delete("/server-credentials", summary="(hub only) Revoke a stopped server's S3 keys")
def revoke(request: Request, user: str = Query(..., pattern=USER_PATTERN),
           server: str = Query("", pattern=SERVER_PATTERN), _hub: str = Depends(hub_only),
           data: data_pkg.DataService = Depends(data_service)) -> dict:
    return {"user": user, "server": server, "revoked": server_keys.revoke_server_credentials(data, user, server)}
