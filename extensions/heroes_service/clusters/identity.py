"""Who the gateway is on a cluster, per (cluster, user): the credential behind every connector.

Two modes, chosen per cluster at enrollment (``identity_mode``):

* ``per-user`` (the embedded stack's default): each user acts as the Unix account the cluster's owner
  mapped them to (``logins.login_for``; never simply their username). The gateway signs a short-lived SSH
  user certificate (its own CA, ``certs.UserCA``) whose principal is the user's *gateway principal*
  ``<user>@<organization>`` and whose key id names organization, user and account; the login node trusts
  the CA (``TrustedUserCAKeys``) and lets the principal in only where the account's
  ``AuthorizedPrincipalsFile`` lists it. Certificates are cached per (cluster, account, principal) until
  ``cert_renew_margin_s`` before they expire; a deleted or disabled user's are dropped at once
  (``forget_user``), with their pooled sessions.
* ``service-account``: every user of the organization runs as one account (the seed's way) whose
  private key was given at enrollment and is stored encrypted (``vault.Vault``).

``connector_for(cluster, principal)`` applies both, and refuses a principal of another organization.
"""
from __future__ import annotations

import hashlib
import io
import threading
import time
from typing import Any, Callable, Protocol

import paramiko

from . import logins
from .certs import UserCA
from .config import ClustersSettings, get_clusters_settings
from .connector import ClusterConnector, Endpoint, HostKey, close_pools, pool_for
from .errors import ClusterError, NoClusterAccess
from .logins import LOGIN_RE, SERVICE_PRINCIPAL, gateway_principal  # noqa: F401 (re-exported: callers use identity.LOGIN_RE)
from .vault import Vault

PER_USER = "per-user"
SERVICE_ACCOUNT = "service-account"
IDENTITY_MODES = (PER_USER, SERVICE_ACCOUNT)


class ClusterLike(Protocol):
    """What identity needs from a cluster record (the ORM model ``models.Cluster`` has these)."""

    id: str
    name: str
    organization: str
    host: str
    port: int
    host_key_type: str
    host_key_b64: str
    identity_mode: str
    service_login: str
    service_key_enc: str | None


# --- process-wide secrets ------------------------------------------------------------------------------
_vault: Vault | None = None
_ca: UserCA | None = None
_lock = threading.Lock()


def get_vault(settings: ClustersSettings | None = None) -> Vault:
    global _vault
    with _lock:
        if _vault is None:
            _vault = Vault((settings or get_clusters_settings()).secrets_dir)
        return _vault


def get_ca(settings: ClustersSettings | None = None) -> UserCA:
    global _ca
    vault = get_vault(settings)
    with _lock:
        if _ca is None:
            _ca = UserCA(vault)
        return _ca


def forget_secrets() -> None:
    """Forget the cached vault, CA and certificates (the secrets dir changed; tests point it elsewhere).
    Pools built on the old credentials are replaced on their next use (``pool_for`` compares them)."""
    global _vault, _ca
    with _lock:
        _vault = None
        _ca = None
    with _CERTS_LOCK:
        _CERTS.clear()


# --- credentials -------------------------------------------------------------------------------------
def load_private_key(text: str) -> paramiko.PKey:
    """Parse an OpenSSH/PEM private key (ed25519, ECDSA or RSA; unencrypted). Never echoes the key."""
    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError, TypeError) as exc:
            errors.append(type(exc).__name__)
    raise ValueError("not an unencrypted ed25519, ECDSA or RSA private key in OpenSSH or PEM format")


class ServiceKeyCredential:
    """The enrolled service account's private key (decrypted in memory once per pool)."""

    kind = "service-key"

    def __init__(self, login: str, encrypted_key: str, vault: Vault):
        self.login = login
        self._encrypted = encrypted_key
        self._vault = vault
        self._pkey: paramiko.PKey | None = None
        #: what makes two credentials interchangeable for a pool (no secret in it: a hash of the token)
        self.identity = (self.kind, login, hashlib.sha256(encrypted_key.encode()).hexdigest())

    def current(self) -> tuple[paramiko.PKey, float | None]:
        if self._pkey is None:
            self._pkey = load_private_key(self._vault.decrypt(self._encrypted))
        return self._pkey, None


class CertificateCredential:
    """A per-user certificate from the gateway CA for ``login``, re-signed when it nears its end.

    ``principals``: the gateway principals it names (``<user>@<organization>``, or the service's own);
    the login node admits it only where ``login``'s principals file lists one of them. None: the
    principals known to act as ``login`` on the cluster are looked up at signing time.
    """

    kind = "user-certificate"

    def __init__(self, cluster, login: str, ca: UserCA, settings: ClustersSettings,
                 principals: tuple[str, ...] | None = None, user_id: str = ""):
        self.cluster = getattr(cluster, "name", cluster)
        self._record = cluster if not isinstance(cluster, str) else None
        self.login = login
        self.principals = tuple(principals) if principals else None
        self.user_id = user_id
        self._ca = ca
        self._settings = settings
        self._signed = None
        self._lock = threading.Lock()
        self.identity = (self.kind, login, id(ca), self.principals)

    def _principals(self) -> tuple[str, ...]:
        if self.principals:
            return self.principals
        found = logins.principals_for(self._record, self.login) if self._record is not None else ()
        if not found:
            raise NoClusterAccess(f"no gateway user is known to act as {self.login!r} on cluster {self.cluster!r}")
        return found

    def current(self) -> tuple[paramiko.PKey, float | None]:
        with self._lock:
            now = time.time()
            principals = self._principals()
            revoked = [p for p in principals if _revoked(p)]
            if revoked:
                raise NoClusterAccess(f"{revoked[0]} was deleted or disabled: no certificate is signed for it")
            if self._signed is None or self._signed.valid_before - self._settings.cert_renew_margin_s <= now \
                    or self._signed.principals != principals:
                who = ",".join(principals)
                self._signed = self._ca.sign(
                    list(principals), key_id=f"heroes:{who}{':' + self.user_id if self.user_id else ''}"
                                             f" as {self.login}@{self.cluster}",
                    validity_s=self._settings.cert_validity_minutes * 60)
            return self._signed.pkey, float(self._signed.valid_before)

    @property
    def certificate(self):
        """The current ``certs.SignedKey`` (public parts: key id, serial, validity) or None."""
        return self._signed


_CERTS: dict[tuple, CertificateCredential] = {}
_CERTS_LOCK = threading.Lock()
#: gateway principals of deleted or disabled users: no certificate is signed for them in this process
_REVOKED: set[str] = set()
#: organizations deleted in this process: none of their principals gets a certificate
_REVOKED_ORGS: set[str] = set()


def _certificate_for(cluster: ClusterLike, login: str, settings: ClustersSettings,
                     principals: tuple[str, ...] | None = None, user_id: str = "") -> CertificateCredential:
    with _CERTS_LOCK:
        key = (cluster.id, login, principals)
        cred = _CERTS.get(key)
        if cred is None:
            cred = CertificateCredential(cluster, login, get_ca(settings), settings, principals, user_id)
            _CERTS[key] = cred
        return cred


# --- cluster logins ----------------------------------------------------------------------------------
#: optional hook the identity core may install: principal -> cluster login (e.g. read from Keycloak)
_login_resolver: Callable[[Any], str | None] | None = None


def set_cluster_login_resolver(resolver: Callable[[Any], str | None] | None) -> None:
    """Install how a principal's cluster login is found (e.g. a cached Keycloak attribute lookup)."""
    global _login_resolver
    _login_resolver = resolver


def cluster_login(principal: Any, settings: ClustersSettings | None = None, cluster: ClusterLike | None = None) -> str:
    """The principal's Unix login on ``cluster`` as the cluster's owner mapped it (``logins.login_for``).

    Without a cluster only an explicit login or the platform admin's Keycloak attribute count. A login
    that is root, a system, service or gateway-host account is refused (``NoClusterAccess``)."""
    settings = settings or get_clusters_settings()
    return logins.login_for(cluster, principal, settings, _login_resolver)[0]


# --- connectors --------------------------------------------------------------------------------------
def endpoint_of(cluster: ClusterLike) -> Endpoint:
    return Endpoint(cluster=cluster.name, host=cluster.host, port=int(cluster.port),
                    host_key=HostKey(cluster.host_key_type, cluster.host_key_b64))


def connector_as(cluster: ClusterLike, login: str, *, mode: str | None = None,
                 settings: ClustersSettings | None = None, acting_for: str | None = None,
                 user_id: str = "") -> ClusterConnector:
    """A connector for an explicit account. Trusted callers only (no organization check).

    ``acting_for``: the gateway principal the certificate names (``<user>@<org>``, or the service's own);
    without it, the principals known to act as ``login`` on the cluster (an instance's owner)."""
    settings = settings or get_clusters_settings()
    mode = mode or cluster.identity_mode
    if mode == PER_USER:
        if acting_for != SERVICE_PRINCIPAL:
            logins.check_login(login, settings)
        principals = (acting_for,) if acting_for else None
        credential = _certificate_for(cluster, login, settings, principals, user_id)
    elif mode == SERVICE_ACCOUNT:
        if not cluster.service_key_enc:
            raise NoClusterAccess(f"cluster {cluster.name!r} has no service-account key")
        credential = ServiceKeyCredential(cluster.service_login, cluster.service_key_enc, get_vault(settings))
        acting_for = None
    else:
        raise ClusterError(f"unknown identity mode {mode!r}")
    key = (cluster.id, credential.login, credential.kind, acting_for)
    return ClusterConnector(pool_for(endpoint_of(cluster), credential, key, settings))


def connector_for(cluster: ClusterLike, principal: Any, *,
                  settings: ClustersSettings | None = None) -> ClusterConnector:
    """The connector a user's actions on ``cluster`` go through.

    Per-user clusters: the account the cluster's owner mapped the user to, by a certificate naming the
    user's gateway principal. Service-account clusters: the shared account. A principal of another
    organization gets ``NoClusterAccess`` (platform admins pass), so does a deleted or disabled user.
    """
    settings = settings or get_clusters_settings()
    org = getattr(principal, "organization", None)
    if org != cluster.organization and not getattr(principal, "is_platform_admin", False):
        raise NoClusterAccess(f"cluster {cluster.name!r} is not available to your organization")
    if cluster.identity_mode == PER_USER:
        login, name = logins.login_for(cluster, principal, settings, _login_resolver)
        if _revoked(name):
            raise NoClusterAccess(f"{name} was deleted or disabled")
        return connector_as(cluster, login, mode=PER_USER, settings=settings, acting_for=name,
                            user_id=getattr(principal, "user_id", "") or "")
    return connector_as(cluster, cluster.service_login, mode=SERVICE_ACCOUNT, settings=settings)


def service_connector(cluster: ClusterLike, *, settings: ClustersSettings | None = None) -> ClusterConnector:
    """The gateway's own account on ``cluster`` (reconcilers, probes): the service key if one was
    enrolled, else a certificate naming the service principal for ``service_login`` (per-user clusters;
    the login node lists that principal for its gateway service account only)."""
    if cluster.service_key_enc:
        return connector_as(cluster, cluster.service_login, mode=SERVICE_ACCOUNT, settings=settings)
    return connector_as(cluster, cluster.service_login, mode=PER_USER, settings=settings,
                        acting_for=SERVICE_PRINCIPAL)


def forget_cluster(cluster_id: str) -> None:
    """Close the pools and drop the cached certificates of a deleted cluster."""
    close_pools(lambda key: key[0] == cluster_id)
    with _CERTS_LOCK:
        for key in [k for k in _CERTS if k[0] == cluster_id]:
            del _CERTS[key]


def forget_user(username: str, organization: str | None, *, revoke: bool = True) -> int:
    """A user was deleted or disabled: close every pooled SSH session opened for them and drop their
    certificates at once; with ``revoke`` no new certificate is signed for them (until ``restore_user``).
    Returns how many pools were closed."""
    if not organization:
        return 0
    name = f"{username}@{organization}"
    if revoke:
        with _CERTS_LOCK:
            _REVOKED.add(name)
    def theirs(key: tuple, pool) -> bool:
        """Pools opened for them, or whose certificate names them (a reconciler acting for their instance)."""
        signed = getattr(pool.credential, "certificate", None)
        return (len(key) > 3 and key[3] == name) or bool(signed and name in signed.principals)

    closed = close_pools(where=theirs)
    with _CERTS_LOCK:
        for key in [k for k, cred in _CERTS.items() if cred.principals and name in cred.principals]:
            del _CERTS[key]
    logins.forget_principal(name)
    return closed


def forget_organization(organization: str) -> int:
    """An organization was deleted: every pooled session of its users ends and nothing is signed for them
    any more (until an organization of that name is created again: ``restore_organization``)."""
    suffix = f"@{organization}"
    with _CERTS_LOCK:
        _REVOKED_ORGS.add(organization)

    def theirs(key: tuple, pool) -> bool:
        signed = getattr(pool.credential, "certificate", None)
        named = list(signed.principals) if signed else []
        if len(key) > 3 and key[3]:
            named.append(key[3])
        return any(p.endswith(suffix) for p in named)

    closed = close_pools(where=theirs)
    with _CERTS_LOCK:
        for key in [k for k, cred in _CERTS.items() if any(p.endswith(suffix) for p in cred.principals or ())]:
            del _CERTS[key]
    return closed


def restore_organization(organization: str) -> None:
    with _CERTS_LOCK:
        _REVOKED_ORGS.discard(organization)


def _revoked(principal: str) -> bool:
    return principal in _REVOKED or principal.rpartition("@")[2] in _REVOKED_ORGS


def restore_user(username: str, organization: str | None) -> None:
    """A user was enabled again (or created anew under the same name): certificates may be signed again."""
    if organization:
        with _CERTS_LOCK:
            _REVOKED.discard(f"{username}@{organization}")
