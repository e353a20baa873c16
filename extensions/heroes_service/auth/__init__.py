"""Who is calling: JupyterHub tokens and Keycloak bearer tokens, resolved to one ``Principal``.

Two ways in, one identity:

* ``Authorization: token <jupyterhub token>`` (a user's ``JUPYTERHUB_API_TOKEN``): resolved through the
  hub's ``GET /user``; the token must carry ``access:services!service=heroes`` (or ``access:services``).
* ``Authorization: Bearer <Keycloak access token>``: a JWT verified against the realm's JWKS (signature,
  ``iss``, ``exp``, and ``azp``/``aud`` one of the accepted clients); tokens of a session ended through
  ``/organization/auth/logout`` are refused.

Either way, the organization, groups and roles are then read from Keycloak (cached for
``auth_cache_s`` and dropped whenever this service changes identities), so that a role or group granted
by an admin shows on the user's very next call, not only after their next login.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Literal

import anyio
import httpx
import jwt
from fastapi import Depends, Request
from sqlalchemy import select

from ..errors import Forbidden, Unauthorized, Unavailable
from ..identity.keycloak import Identity
from ..settings import ServiceSettings

#: how long a verified bearer token's principal is answered from memory: the revocation check's own lifetime
BEARER_CACHE_S = 2.0

Via = Literal["hub", "keycloak"]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as the routes see it."""

    username: str
    organization: str | None
    groups: list[str] = field(default_factory=list)
    roles: frozenset[str] = frozenset()
    via: Via = "hub"
    user_id: str = ""

    @property
    def is_platform_admin(self) -> bool:
        return "platform-admin" in self.roles

    @property
    def is_org_admin(self) -> bool:
        """Administers their organization (needs both the role and an organization)."""
        return "org-admin" in self.roles and self.organization is not None

    @property
    def is_user(self) -> bool:
        return bool(self.roles & {"user", "org-admin", "platform-admin"})

    def public(self) -> dict:
        return {"username": self.username, "organization": self.organization, "groups": list(self.groups),
                "roles": sorted(self.roles), "via": self.via}


class TTLCache:
    """A tiny thread-safe cache with one expiry per entry (tokens, principals)."""

    def __init__(self, ttl: float, max_entries: int = 4096):
        self.ttl, self.max_entries = ttl, max_entries
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] < time.monotonic():
                self._data.pop(key, None)
                return None
            return hit[1]

    def put(self, key: Any, value: Any, ttl: float | None = None) -> None:
        with self._lock:
            if len(self._data) >= self.max_entries:
                self._data.clear()
            self._data[key] = (time.monotonic() + (self.ttl if ttl is None else ttl), value)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class Authenticator:
    """Resolves credentials to principals for one app (kept on ``app.state.authenticator``)."""

    def __init__(self, settings: ServiceSettings, identity: Identity, sessions=None):
        self.settings = settings
        self.identity = identity
        self.sessions = sessions  # sessionmaker, for the revoked-session check
        self.tokens = TTLCache(settings.auth_cache_s)      # hub token -> username
        self.principals = TTLCache(settings.auth_cache_s)  # ("name"|"id", value) -> Principal
        self.extra_audiences: Callable[[], set[str]] = lambda: set()
        self._jwks = jwt.PyJWKClient(f"{settings.issuer}/protocol/openid-connect/certs", cache_keys=True,
                                     lifespan=max(60, int(settings.auth_cache_s) * 15),
                                     timeout=int(max(1, settings.keycloak_timeout_s)))
        self._http = httpx.Client(timeout=settings.keycloak_timeout_s)

    def forget(self) -> None:
        """Drop cached principals and admin reads (called after every identity change made through the API)."""
        self.principals.clear()
        self.identity.forget_reads()

    # --- entry point ----------------------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("authentication required: send 'Authorization: token <JupyterHub token>' or "
                               "'Authorization: Bearer <Keycloak access token>'")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if not credential:
            raise Unauthorized("empty credential in the Authorization header")
        if scheme.lower() == "token":
            return self.from_hub_token(credential)
        if scheme.lower() == "bearer":
            return self.from_keycloak_token(credential)
        raise Unauthorized(f"unsupported Authorization scheme {scheme!r}; use 'token' or 'Bearer'")

    def cached_principal(self, authorization: str | None) -> Principal | None:
        """``authenticate``'s answer when everything it needs is cached (no I/O: the access middleware calls it
        on the event loop and hands a miss to a worker thread); None on a miss.

        The same caches as the threaded path: a hub token's owner for ``auth_cache_s``; a bearer token's
        verification for at most ``BEARER_CACHE_S`` (the revocation check's own lifetime) and never past the
        token's expiry, and a session logged out through this service is refused at once."""
        scheme, _, credential = (authorization or "").strip().partition(" ")
        credential = credential.strip()
        if not credential:
            return None
        if scheme.lower() == "token":
            username = self.tokens.get(credential)
            return self.principals.get(("name", username, "hub")) if username is not None else None
        if scheme.lower() == "bearer":
            hit = self.principals.get(("bearer", credential))
            if hit is None:
                return None
            principal, sid = hit
            return None if sid and self.principals.get(("revoked", sid)) else principal
        return None

    # --- JupyterHub tokens ----------------------------------------------------------------------------
    def from_hub_token(self, token: str) -> Principal:
        username = self.tokens.get(token)
        if username is None:
            username = self._hub_lookup(token)
            self.tokens.put(token, username)
        return self.principal_by_username(username, via="hub")

    def _hub_whoami(self, token: str) -> dict:
        """The hub's model of the token's owner (``GET /user``): users' and services' tokens alike."""
        try:
            response = self._http.get(f"{self.settings.hub_api_url.rstrip('/')}/user",
                                      headers={"Authorization": f"token {token}"})
        except httpx.HTTPError:
            raise Unavailable("JupyterHub unreachable: cannot check the token; try again later") from None
        if response.status_code in (401, 403):
            raise Unauthorized("invalid or expired JupyterHub token")
        if response.status_code != 200:
            raise Unavailable(f"JupyterHub answered {response.status_code} while checking the token")
        return response.json()

    def _hub_lookup(self, token: str) -> str:
        model = self._hub_whoami(token)
        if model.get("kind", "user") != "user":
            raise Unauthorized("only users' JupyterHub tokens are accepted (this one belongs to a service)")
        scopes = set(model.get("scopes") or [])
        wanted = {f"access:services!service={self.settings.service_name}", "access:services"}
        if not scopes & wanted:
            raise Unauthorized(f"the JupyterHub token lacks the scope access:services!service="
                               f"{self.settings.service_name}")
        return model["name"]

    # --- the hub itself (a token-only hub service) -----------------------------------------------------
    def hub_service_caller(self, authorization: str | None) -> str:
        """The hub's own service (``settings.server_keys_service``) or 401/403: routes the hub calls for a user.

        The token is checked by the hub (``GET /user`` answers ``kind: service`` and its name), so the service
        keeps no copy of it. Any other valid credential, a user's included, gets 403.
        """
        if not authorization:
            raise Unauthorized("authentication required: this route is called by the hub with its service token")
        scheme, _, credential = authorization.strip().partition(" ")
        wanted = self.settings.server_keys_service
        if scheme.lower() == "token" and credential.strip():
            name = self.tokens.get(("service", credential.strip()))
            if name is None:
                name = self._hub_service_name(credential.strip())
                self.tokens.put(("service", credential.strip()), name)
            if name == wanted:
                return name
            raise Forbidden(f"only the hub's service {wanted!r} may call this route")
        self.authenticate(authorization)  # 401 for a bad credential, else the caller is a user
        raise Forbidden(f"only the hub's service {wanted!r} may call this route")

    def cached_hub_service_caller(self, authorization: str | None) -> str | None:
        """``hub_service_caller``'s answer when the token's owner is cached (no I/O: the access middleware
        calls it on the event loop and only hands a miss to a worker thread); None on a miss.

        The same cache and TTL (``auth_cache_s``) as the threaded path: a token the hub revoked keeps working
        here no longer than there."""
        scheme, _, credential = (authorization or "").strip().partition(" ")
        if scheme.lower() != "token" or not credential.strip():
            return None
        name = self.tokens.get(("service", credential.strip()))
        if name is None:
            return None
        if name == self.settings.server_keys_service:
            return name
        raise Forbidden(f"only the hub's service {self.settings.server_keys_service!r} may call this route")

    def _hub_service_name(self, token: str) -> str:
        """The hub service a token belongs to ("" for a user's token)."""
        model = self._hub_whoami(token)
        return model.get("name", "") if model.get("kind") == "service" else ""

    # --- Keycloak tokens ------------------------------------------------------------------------------
    def from_keycloak_token(self, token: str) -> Principal:
        claims = self.verify_jwt(token)
        sid = claims.get("sid")
        if sid and self._revoked(sid):
            raise Unauthorized("this Keycloak session was logged out; log in again")
        principal = self.principal_by_id(claims["sub"], via="keycloak")
        left = float(claims["exp"]) - time.time()
        if left > 0:
            self.principals.put(("bearer", token), (principal, sid), ttl=min(BEARER_CACHE_S, left))
        return principal

    def verify_jwt(self, token: str) -> dict:
        """Signature, issuer, expiry and audience of a Keycloak access token; 401 with the reason otherwise."""
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError:
            raise Unavailable("Keycloak unreachable: cannot fetch the realm's signing keys") from None
        except (jwt.PyJWKClientError, jwt.DecodeError) as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from None
        try:
            claims = jwt.decode(token, key.key, algorithms=["RS256", "RS384", "RS512", "PS256", "ES256"],
                                issuer=self.settings.issuer, options={"verify_aud": False, "require": ["exp", "sub"]},
                                leeway=10)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("bearer token expired; refresh it (GET /organization/auth/refresh_token)") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(f"bearer token from another issuer; expected {self.settings.issuer}") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from None
        if claims.get("typ", "Bearer") != "Bearer":
            raise Unauthorized(f"a {claims.get('typ')} token is not an access token")
        accepted = {a.strip() for a in self.settings.token_audiences.split(",") if a.strip()}
        accepted |= self.extra_audiences()
        aud = claims.get("aud") or []
        audiences = {aud} if isinstance(aud, str) else set(aud)
        if claims.get("azp") not in accepted and not audiences & accepted:
            raise Unauthorized("bearer token issued for a client this service does not accept")
        return claims

    def _revoked(self, sid: str) -> bool:
        if self.sessions is None:
            return False
        from ..store.models import RevokedSession

        cached = self.principals.get(("revoked", sid))
        if cached is not None:
            return cached
        with self.sessions() as session:
            row = session.execute(select(RevokedSession.expires_at).where(RevokedSession.session_id == sid)).first()
        revoked = row is not None and _aware(row[0]) > datetime.now(timezone.utc)
        self.principals.put(("revoked", sid), revoked, ttl=2.0)
        return revoked

    # --- Keycloak users -> principals -----------------------------------------------------------------
    def principal_by_username(self, username: str, via: Via) -> Principal:
        hit = self.principals.get(("name", username, via))
        if hit is not None:
            return hit
        user = self.identity.user_by_username(username)
        if user is None or not user.get("enabled", True):
            raise Unauthorized(f"user {username!r} is not (or no longer) an enabled HEROES user")
        principal = self._build(user, via)
        self.principals.put(("name", username, via), principal)
        return principal

    def principal_by_id(self, user_id: str, via: Via) -> Principal:
        hit = self.principals.get(("id", user_id, via))
        if hit is not None:
            return hit
        try:
            user = self.identity.user_by_id(user_id)
        except Exception as exc:  # a deleted user keeps a valid token until it expires
            if getattr(exc, "status", None) == 404:
                raise Unauthorized("the token's user no longer exists") from None
            raise
        if not user.get("enabled", True):
            raise Unauthorized(f"user {user.get('username')!r} is disabled")
        principal = self._build(user, via)
        self.principals.put(("id", user_id, via), principal)
        return principal

    def _build(self, user: dict, via: Via) -> Principal:
        paths = self.identity.user_group_paths(user["id"])
        roles = frozenset(r for r in self.identity.user_realm_roles(user["id"]) if not r.startswith("default-roles-"))
        orgs = self.identity.organizations()
        organization = next((p.strip("/").split("/")[0] for p in paths if p.strip("/").split("/")[0] in orgs), None)
        groups = sorted({p.rstrip("/").rsplit("/", 1)[-1] for p in paths})
        return Principal(username=user["username"], organization=organization, groups=groups, roles=roles, via=via,
                         user_id=user["id"])


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the caller, or 401 (no/invalid credential) / 503 (hub or Keycloak down).

    Async on purpose: the access middleware has already resolved the caller for every non-public route,
    so this usually reads ``request.state`` without a trip through the thread pool.
    """
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    principal = await anyio.to_thread.run_sync(request.app.state.authenticator.authenticate,
                                               request.headers.get("authorization"))
    request.state.principal = principal
    return principal


#: the last level is no role of a person: only the hub's own service token meets it (api/server_keys.py)
LEVELS = ("public", "user", "org-admin", "platform-admin", "hub-service")


def allowed(level: str, principal: Principal | None) -> bool:
    """Whether ``principal`` meets an access level of the table (api/access.py)."""
    if level == "public":
        return True
    if principal is None:
        return False
    if level == "user":
        return principal.is_user
    if level == "org-admin":
        return principal.is_org_admin
    if level == "platform-admin":
        return principal.is_platform_admin
    if level == "hub-service":
        return False  # a person never meets it; the middleware checks the hub's token instead
    raise ValueError(f"unknown access level {level!r}")


def require_role(level: str):
    """Dependency factory: the caller if they meet ``level`` (user | org-admin | platform-admin), else 403."""
    if level not in LEVELS:
        raise ValueError(f"unknown access level {level!r}")

    async def _dependency(principal: Principal = Depends(current_principal)) -> Principal:
        # async: no I/O here, so no trip through the thread pool (~0.3-1 ms on a busy host, every call)
        check(level, principal)
        return principal

    return _dependency


def check(level: str, principal: Principal) -> None:
    """403 with the reason when ``principal`` does not meet ``level``."""
    if allowed(level, principal):
        return
    if level == "org-admin" and "org-admin" in principal.roles:
        raise Forbidden("you have the org-admin role but belong to no organization")
    raise Forbidden(f"this route needs the {level} role")


__all__ = ["Principal", "current_principal", "require_role", "allowed", "check", "Authenticator", "LEVELS"]
