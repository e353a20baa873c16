"""The service's door to Keycloak's admin API (python-keycloak), with errors turned into API errors.

Every call goes through ``Identity.call`` so that an unreachable Keycloak is always a 503 that says so,
an unknown object a 404 and a duplicate a 409, whatever python-keycloak raised.

Model in the realm:
* an organization is a top-level group with the attribute ``heroes.organization = true``;
* a group of an organization is a subgroup of it named ``<org>.<group>`` (the ``groups`` claim carries
  leaf names only, so the prefix keeps names unique across organizations and equal to the hub group);
* roles are the realm roles ``platform-admin``, ``org-admin`` and ``user``.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from keycloak import KeycloakAdmin, KeycloakOpenID
from keycloak.exceptions import (KeycloakAuthenticationError, KeycloakConnectionError, KeycloakError)

from ..errors import Conflict, Invalid, NotFound, Unavailable
from ..settings import ServiceSettings

log = logging.getLogger("heroes_service.identity")
T = TypeVar("T")
ORG_ATTRIBUTE = "heroes.organization"


def _keycloak_message(exc: Exception) -> str:
    """Keycloak's own error text (errorMessage / error_description / error), short and printable."""
    import json

    raw = getattr(exc, "error_message", b"") or b""
    try:
        body = json.loads(raw)
        text = body.get("errorMessage") or body.get("error_description") or body.get("error") or ""
    except (ValueError, AttributeError, TypeError):
        text = ""
    text = "".join(ch for ch in str(text) if ch.isprintable())[:200]
    return text or "invalid value"


#: what Keycloak ids look like (UUIDs); anything else cannot name an object, so it is simply not found
_ID_CHARS = set("0123456789abcdefABCDEF-")


def plausible_id(value: str) -> bool:
    return 0 < len(value) <= 64 and set(value) <= _ID_CHARS


def group_name(org: str, name: str) -> str:
    """Keycloak subgroup / hub group name of an organization's group."""
    return f"{org}.{name}"


class Identity:
    """Thin, thread-safe wrapper over ``KeycloakAdmin`` for the ``heroes`` realm."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self._admin: KeycloakAdmin | None = None
        self._lock = threading.Lock()
        self._orgs: tuple[float, dict[str, str]] | None = None  # (expires, name -> group id)
        #: short-lived answers of read-only admin queries (member lists, roles); every change made through
        #: the API clears it, so only changes made in Keycloak behind the service's back wait out the TTL
        self._reads: dict[tuple, tuple[float, Any]] = {}
        self.read_ttl = min(3.0, settings.auth_cache_s)

    # --- plumbing -------------------------------------------------------------------------------------
    @property
    def admin(self) -> KeycloakAdmin:
        with self._lock:
            if self._admin is None:
                s = self.settings
                password = s.admin_password()
                if not password:
                    raise Unavailable("Keycloak unreachable: the service has no admin password configured "
                                      "(HEROES_SERVICE_KEYCLOAK_ADMIN_PASSWORD or <state>/etc/keycloak/admin-password)")
                self._admin = KeycloakAdmin(server_url=s.keycloak_url.rstrip("/") + "/", username=s.keycloak_admin_user,
                                            password=password, realm_name=s.keycloak_realm,
                                            user_realm_name=s.keycloak_admin_realm,
                                            timeout=int(max(1, s.keycloak_timeout_s)), pool_maxsize=32)
            return self._admin

    def openid(self) -> KeycloakOpenID:
        s = self.settings
        return KeycloakOpenID(server_url=s.keycloak_url.rstrip("/") + "/", realm_name=s.keycloak_realm,
                              client_id=s.keycloak_client_id, client_secret_key=s.client_secret(),
                              timeout=int(max(1, s.keycloak_timeout_s)))

    def call(self, fn: Callable[..., T], *args: Any, what: str = "object", openid: bool = False, **kwargs: Any) -> T:
        """Run one python-keycloak call; map its failures to 503 / 404 / 409 / 422 (``what`` names the object).

        ``openid=True`` (token, refresh, logout endpoints): only "unreachable" is mapped; the caller reads
        Keycloak's 400/401 answers itself (wrong password, expired refresh token).
        """
        try:
            return fn(*args, **kwargs)
        except (KeycloakConnectionError, requests.ConnectionError, requests.Timeout) as exc:
            log.warning("Keycloak unreachable: %s", exc)
            raise Unavailable(f"Keycloak unreachable at {self.settings.keycloak_url}; try again later") from None
        except KeycloakError as exc:
            if openid:
                raise
            return self._map(exc, what)

    def _map(self, exc: KeycloakError, what: str):
        """Keycloak's refusal of an admin call, as the API error the client gets."""
        code = getattr(exc, "response_code", None)
        if isinstance(exc, KeycloakAuthenticationError) and code == 401:
            with self._lock:
                self._admin = None  # the admin session may have expired: rebuild it on the next call
            raise Unavailable("Keycloak refused the service's admin credentials") from None
        if code == 404:
            raise NotFound(f"{what} not found") from None
        if code == 409:
            raise Conflict(f"{what} already exists") from None
        if code == 400:
            raise Invalid(f"Keycloak refused the {what}: {_keycloak_message(exc)}",
                          rule="values Keycloak accepts (e.g. a valid e-mail address)") from None
        log.warning("Keycloak error: %s", exc)
        raise Unavailable(f"Keycloak failed ({code or 'no answer'}); try again later") from None

    # --- organizations --------------------------------------------------------------------------------
    def organizations(self, fresh: bool = False) -> dict[str, str]:
        """Organization name -> Keycloak group id (top-level groups marked as organizations), cached briefly."""
        now = time.monotonic()
        cached = self._orgs
        if cached and cached[0] > now and not fresh:
            return cached[1]
        groups = self.call(self.admin.get_groups, {"briefRepresentation": "false"}, what="groups")
        orgs = {g["name"]: g["id"] for g in groups
                if (g.get("attributes") or {}).get(ORG_ATTRIBUTE, ["false"])[0] == "true"}
        self._orgs = (now + self.settings.auth_cache_s, orgs)
        return orgs

    def forget_organizations(self) -> None:
        self._orgs = None

    def cached(self, key: tuple, fn: Callable[[], T]) -> T:
        """``fn()``, reusing an answer younger than ``read_ttl`` seconds for the same key."""
        now = time.monotonic()
        hit = self._reads.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = fn()
        if len(self._reads) > 2048:
            self._reads.clear()
        self._reads[key] = (now + self.read_ttl, value)
        return value

    def forget_reads(self) -> None:
        self._reads.clear()

    def end_session(self, session_id: str) -> None:
        """End a user session in Keycloak (its refresh tokens die); an already ended one is fine."""
        path = f"admin/realms/{self.settings.keycloak_realm}/sessions/{session_id}"
        response = self.call(self.admin.connection.raw_delete, path, what="session")
        if response.status_code not in (204, 404):
            log.warning("Keycloak did not end session: HTTP %s", response.status_code)
            raise Unavailable(f"Keycloak failed to end the session ({response.status_code}); try again later")

    # --- users as principals --------------------------------------------------------------------------
    def user_by_username(self, username: str) -> dict | None:
        found = self.call(self.admin.get_users, {"username": username, "exact": "true"}, what="user")
        return next((u for u in found if u.get("username") == username), None)

    def user_by_id(self, user_id: str) -> dict:
        return self.call(self.admin.get_user, user_id, what="user")

    def user_group_paths(self, user_id: str) -> list[str]:
        groups = self.call(self.admin.get_user_groups, user_id, {"briefRepresentation": "true"}, what="user")
        return [g.get("path") or "/" + g["name"] for g in groups]

    def user_realm_roles(self, user_id: str) -> set[str]:
        roles = self.call(self.admin.get_realm_roles_of_user, user_id, what="user")
        return {r["name"] for r in roles}


# --- organization-scoped helpers (used by the admin routers) ------------------------------------------
def is_service_account(user: dict) -> bool:
    return bool(user.get("serviceAccountClientLink")) or user.get("username", "").startswith("service-account-")


class OrgDirectory:
    """Users, groups and roles of ONE organization; everything outside it is reported as not found."""

    def __init__(self, identity: Identity, org: str):
        self.identity = identity
        self.org = org
        orgs = identity.organizations()
        if org not in orgs:
            orgs = identity.organizations(fresh=True)
        if org not in orgs:
            raise NotFound(f"organization {org!r} not found")
        self.group_id = orgs[org]

    @property
    def admin(self) -> KeycloakAdmin:
        return self.identity.admin

    def call(self, fn, *args, what="object", **kwargs):
        return self.identity.call(fn, *args, what=what, **kwargs)

    # users -------------------------------------------------------------------------------------------
    def members(self) -> list[dict]:
        """The organization's people (service accounts of its OAuth clients left out)."""
        users = self.identity.cached(("members", self.group_id), lambda: self.call(
            self.admin.get_group_members, self.group_id, {"max": 10000, "briefRepresentation": "false"},
            what="organization"))
        return [u for u in users if not is_service_account(u)]

    def member(self, user_id: str) -> dict:
        """A user of this organization by id; 404 (same message) for unknown ids and other organizations."""
        if not plausible_id(user_id):
            raise NotFound("user not found in your organization")
        try:
            user = self.call(self.admin.get_user, user_id, what="user")
        except NotFound:
            raise NotFound("user not found in your organization") from None
        if is_service_account(user) or f"/{self.org}" not in self.identity.user_group_paths(user["id"]):
            raise NotFound("user not found in your organization")
        return user

    def member_by_username(self, username: str) -> dict | None:
        if not re.fullmatch(r"[A-Za-z0-9._@-]{1,255}", username or ""):
            return None  # no account of ours is named like that
        user = self.identity.user_by_username(username)
        if user is None or is_service_account(user) or f"/{self.org}" not in self.identity.user_group_paths(user["id"]):
            return None
        return user

    # groups ------------------------------------------------------------------------------------------
    def groups(self) -> list[dict]:
        children = self.identity.cached(("children", self.group_id), lambda: self.call(
            self.admin.get_group_children, self.group_id, {"max": 10000}, what="organization"))
        prefix = f"{self.org}."
        return [g for g in children if g["name"].startswith(prefix)]

    def group(self, group_id: str) -> dict:
        if not plausible_id(group_id):
            raise NotFound("group not found in your organization")
        try:
            group = self.call(self.admin.get_group, group_id, what="group")
        except NotFound:
            raise NotFound("group not found in your organization") from None
        if group.get("parentId") != self.group_id and not str(group.get("path", "")).startswith(f"/{self.org}/"):
            raise NotFound("group not found in your organization")
        return group

    def group_members(self, group_id: str) -> list[dict]:
        users = self.identity.cached(("members", group_id), lambda: self.call(
            self.admin.get_group_members, group_id, {"max": 10000}, what="group"))
        return [u for u in users if not is_service_account(u)]

    # roles -------------------------------------------------------------------------------------------
    def role_members(self, role: str) -> list[dict]:
        """Members of this organization that hold a realm role."""
        holders = self.identity.cached(("role-members", role), lambda: self.call(
            self.admin.get_realm_role_members, role, {"max": 10000}, what="role"))
        ours = {u["id"] for u in self.members()}
        return [u for u in holders if u["id"] in ours]
