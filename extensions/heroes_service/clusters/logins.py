"""Who a gateway user is on a cluster: decided by someone the cluster trusts, never by a chosen name.

A user is known to clusters by their *gateway principal* ``<username>@<organization>`` (``@`` is in no
username nor organization name, so two organizations can never produce the same principal). The Unix
account that principal may act as is the cluster owner's decision, and the login node checks it: the
certificate the gateway signs names the principal, and sshd's ``AuthorizedPrincipalsFile`` of each account
lists the principals that may log in as it. The gateway itself learns the login from, in this order:

1. a trusted caller's explicit ``cluster_login`` (the spawner, tests);
2. the Keycloak user attribute ``cluster_login``, which only the platform (Keycloak) admin can set: the
   organization admin API never writes user attributes;
3. the mapping an embedded-stack login node publishes (its principals files; this machine only). A caller
   that names no cluster gets the login every embedded node agrees on (better: name the cluster).

There is no default: a username an organization admin picked never becomes a Unix account by itself. And
whatever the source, a login that is root, a system account (uid < 1000 or no login shell), the gateway's
service account or one of its ``jh-*`` accounts, or another account of the gateway host is refused before
anything connects. A Keycloak outage raises (the service's 503), never falls back to another account.
"""
from __future__ import annotations

import pwd
import re
import threading
import time
from typing import Any

from . import embedded
from .config import ClustersSettings, get_clusters_settings
from .errors import NoClusterAccess

#: a POSIX login a certificate may name (also what useradd accepts by default)
LOGIN_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
#: the gateway service's own principal: ':' is in no username or organization name, so no user has it
SERVICE_PRINCIPAL = "heroes:service"
#: accounts the gateway itself runs as on its host: per-user JupyterLab servers (``jh-<user>``)
GATEWAY_ACCOUNT_PREFIXES = ("jh-",)
#: the lowest uid of an ordinary account (Debian's FIRST_UID); below it: system accounts
FIRST_USER_UID = 1000
NO_LOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false", "")

TTL_S = 60.0
_cache: dict[str, tuple[float, str | None]] = {}
_lock = threading.Lock()
_keycloak = None
#: (cluster id, login) -> the gateway principals that last resolved to it (for trusted callers that only
#: know the login, e.g. a reconciler acting for an instance's owner)
_RESOLVED: dict[tuple[str, str], set[str]] = {}


# --- principals ----------------------------------------------------------------------------------------
def gateway_principal(principal: Any) -> str:
    """``<username>@<organization>``: what a certificate names and a login node's principals file lists."""
    username = getattr(principal, "username", "") or ""
    organization = getattr(principal, "organization", None) or ""
    if not organization:
        raise NoClusterAccess(f"user {username!r} belongs to no organization, so has no identity on clusters")
    if not LOGIN_RE.match(username) or not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", organization):
        raise NoClusterAccess(f"user {username[:40]!r} has no valid cluster identity")
    return f"{username}@{organization}"


# --- refused logins -----------------------------------------------------------------------------------
def refusal(login: str, settings: ClustersSettings | None = None, *, service: bool = False) -> str | None:
    """Why ``login`` can never be a user's cluster login (None: it may be).

    ``service=True`` checks an enrolled *service* login instead: the gateway's service account is then
    allowed, root, system and ``jh-*`` accounts still are not.
    """
    settings = settings or get_clusters_settings()
    if not LOGIN_RE.match(login or ""):
        return f"{login[:40]!r} is not a valid POSIX login"
    if login == "root":
        return "root can never be a cluster login"
    if login.startswith(GATEWAY_ACCOUNT_PREFIXES):
        return f"{login!r} is a gateway account name (jh-*: the gateway's per-user servers)"
    if not service and login in settings.service_logins:
        return f"{login!r} is the gateway's service account"
    if login in settings.refused_logins:
        return f"{login!r} is a reserved account"
    try:
        entry = pwd.getpwnam(login)
    except KeyError:
        return None
    if entry.pw_uid < FIRST_USER_UID or entry.pw_shell in NO_LOGIN_SHELLS:
        return f"{login!r} is a system account of the gateway host"
    if not service and settings.refuse_gateway_host_accounts and login not in embedded.published_accounts():
        return f"{login!r} is an account of the gateway host, not a cluster login"
    return None


def check_login(login: str, settings: ClustersSettings | None = None) -> str:
    reason = refusal(login, settings)
    if reason:
        raise NoClusterAccess(f"refused cluster login: {reason}")
    return login


# --- where a login comes from ---------------------------------------------------------------------------
def _explicit(principal: Any, settings: ClustersSettings) -> str | None:
    login = getattr(principal, "cluster_login", None)
    if not login:
        attributes = getattr(principal, "attributes", None) or {}
        value = attributes.get(settings.default_cluster_login_attribute)
        login = value[0] if isinstance(value, (list, tuple)) and value else value
    return login or None


def login_for(cluster: Any, principal: Any, settings: ClustersSettings | None = None,
              resolver=None) -> tuple[str, str]:
    """(login, gateway principal) of ``principal`` on ``cluster``; NoClusterAccess when none may be used."""
    settings = settings or get_clusters_settings()
    name = gateway_principal(principal)
    login = _explicit(principal, settings)
    if not login and resolver is not None:
        login = resolver(principal)
    if not login and cluster is not None:
        login = (embedded.published_logins(cluster.host, int(cluster.port)) or {}).get(name)
    elif not login:
        login = embedded.published_login_anywhere(name)  # callers that name no cluster (the embedded stack)
    if not login:
        where = f" on cluster {cluster.name!r}" if cluster is not None else ""
        raise NoClusterAccess(f"{name} has no login{where}: the cluster's owner maps gateway users to accounts "
                              f"(the platform admin sets the {settings.default_cluster_login_attribute!r} attribute)")
    check_login(login, settings)
    if cluster is not None:
        with _lock:
            _RESOLVED.setdefault((cluster.id, login), set()).add(name)
    return login, name


def principals_for(cluster: Any, login: str) -> tuple[str, ...]:
    """The gateway principals known to act as ``login`` on ``cluster`` (trusted callers that hold only a
    login): those resolved in this process plus what an embedded node publishes."""
    with _lock:
        found = set(_RESOLVED.get((cluster.id, login), ()))
    published = embedded.published_logins(cluster.host, int(cluster.port)) or {}
    found |= {p for p, account in published.items() if account == login}
    return tuple(sorted(found))


def forget_principal(name: str) -> None:
    """Drop what was resolved for a gateway principal (a deleted or disabled user)."""
    with _lock:
        for names in _RESOLVED.values():
            names.discard(name)


# --- the Keycloak attribute ------------------------------------------------------------------------------
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
    from . import identity

    if identity._login_resolver is None:
        identity.set_cluster_login_resolver(keycloak_cluster_login)
