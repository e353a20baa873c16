"""``/organization/auth``: log in with Keycloak credentials, refresh, log out (revokes), who am I."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fastapi import APIRouter, Depends, Header, Request
from keycloak.exceptions import KeycloakAuthenticationError, KeycloakError, KeycloakPostError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from ..auth import Principal, current_principal
from ..errors import ApiError, Unauthorized
from ..store import get_session
from ..store.models import RevokedSession

router = APIRouter(prefix="/organization/auth", tags=["auth"])


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are refused, never ignored
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)


class LogoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are refused, never ignored
    refresh_token: str | None = Field(None, max_length=16384,
                                      description="Also end the refresh token's Keycloak session (optional).")


class Tokens(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    token_type: str = "Bearer"


class Me(BaseModel):
    username: str
    organization: str | None
    groups: list[str]
    roles: list[str]
    via: str


def _tokens(answer: dict) -> Tokens:
    return Tokens(access_token=answer["access_token"], refresh_token=answer.get("refresh_token", ""),
                  expires_in=int(answer.get("expires_in", 0)), refresh_expires_in=int(answer.get("refresh_expires_in", 0)),
                  token_type=answer.get("token_type", "Bearer"))


def _keycloak_refusal(exc: KeycloakError, message: str) -> ApiError:
    code = getattr(exc, "response_code", None) or 0
    body = str(getattr(exc, "error_message", "") or exc)
    if "unauthorized_client" in body or "invalid_client" in body:
        return ApiError("Keycloak refused the service's own client credentials (service misconfigured)", status=503)
    if code in (400, 401):
        return Unauthorized(message)
    return ApiError(f"Keycloak failed ({code}); try again later", status=503)


@router.post("/login", response_model=Tokens, summary="Log in with Keycloak credentials (direct grant)")
def login(body: LoginRequest, request: Request) -> Tokens:
    identity = request.app.state.identity
    openid = identity.openid()
    try:
        answer = identity.call(openid.token, body.username, body.password, what="user", openid=True)
    except (KeycloakAuthenticationError, KeycloakPostError, KeycloakError) as exc:
        raise _keycloak_refusal(exc, "invalid username or password") from None
    return _tokens(answer)


@router.get("/refresh_token", response_model=Tokens, summary="New tokens for a refresh token")
def refresh_token(request: Request,
                  x_refresh_token: str = Header(..., max_length=16384,
                                                description="The refresh token from login or an earlier refresh.")) -> Tokens:
    identity = request.app.state.identity
    openid = identity.openid()
    try:
        answer = identity.call(openid.refresh_token, x_refresh_token, what="session", openid=True)
    except KeycloakError as exc:
        raise _keycloak_refusal(exc, "invalid or expired refresh token; log in again") from None
    return _tokens(answer)


@router.post("/logout", status_code=204, summary="End the Keycloak session of the bearer token")
def logout(request: Request, body: LogoutRequest | None = None, principal: Principal = Depends(current_principal),
           session: Session = Depends(get_session, scope="function")) -> None:
    """Revoke: the session's refresh tokens die in Keycloak and its access tokens are refused here at once."""
    if principal.via != "keycloak":
        raise ApiError("this call carries a JupyterHub token: log out of the hub instead (/hub/logout)", status=400)
    authorization = request.headers.get("authorization", "")
    claims = request.app.state.authenticator.verify_jwt(authorization.split(" ", 1)[1].strip())
    identity = request.app.state.identity
    sid = claims.get("sid")
    if sid:
        expires = datetime.fromtimestamp(int(claims["exp"]), timezone.utc) + timedelta(minutes=5)
        existing = session.get(RevokedSession, sid)
        if existing is None:
            session.add(RevokedSession(session_id=sid, expires_at=expires))
        session.commit()
        request.app.state.authenticator.principals.put(("revoked", sid), True, ttl=3600)
        identity.end_session(sid)
    if body is not None and body.refresh_token:
        try:
            identity.call(identity.openid().logout, body.refresh_token, what="session", openid=True)
        except KeycloakError:
            pass  # the session is already gone with the sid above


@router.get("/me", response_model=Me, summary="The caller: user, organization, groups, roles")
async def me(principal: Principal = Depends(current_principal)) -> Me:
    return Me(**principal.public())
