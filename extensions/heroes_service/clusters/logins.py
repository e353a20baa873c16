"""Users' cluster logins from Keycloak (user attribute ``cluster_login``), cached briefly.

Installed as ``identity``'s default resolver so every caller of ``connector_for`` (routes, reconcilers)
gets the same answer. A user without the attribute acts as their username (the demo realm's case).
A Keycloak outage raises (the service's 503), never silently falls back to another account.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from . import identity
from .config import get_clusters_settings

TTL_S = 60.0
_cache: dict[str, tuple[float, str | None]] = {}
_lock = threading.Lock()
_keycloak = None


def _identity():
    global _keycloak
    with _lock:
        if _keycloak is None:
            from ..identity.keycloak import Identity
            from ..settings import get_settings

            _keycloak = Identity(get_settings())
        return _keycloak


def bind(keycloak_identity) -> None:
    """Use the app's own ``Identity`` (its settings, its admin session) instead of building one."""
    global _keycloak
    with _lock:
        if _keycloak is not keycloak_identity:
            _keycloak = keycloak_identity
            _cache.clear()


def keycloak_cluster_login(principal: Any) -> str | None:
    """The ``cluster_login`` attribute of the principal's Keycloak user (None when unset)."""
    key = getattr(principal, "user_id", "") or getattr(principal, "username", "")
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
    kc = _identity()
    user_id = getattr(principal, "user_id", "")
    user = kc.user_by_id(user_id) if user_id else kc.user_by_username(principal.username)
    attribute = get_clusters_settings().default_cluster_login_attribute
    values = ((user or {}).get("attributes") or {}).get(attribute) or []
    login = values[0] if values else None
    with _lock:
        _cache[key] = (now + TTL_S, login)
    return login


def forget(principal_key: str | None = None) -> None:
    with _lock:
        if principal_key is None:
            _cache.clear()
        else:
            _cache.pop(principal_key, None)


def install_default() -> None:
    """Make Keycloak the source of cluster logins unless something else was installed."""
    if identity._login_resolver is None:
        identity.set_cluster_login_resolver(keycloak_cluster_login)
