"""Who the gateway is on a cluster, per (cluster, user): the credential behind every connector.

Two modes, chosen per cluster at enrollment (``identity_mode``):

* ``per-user`` (the embedded stack's default): each user acts as their own Unix account. The gateway
  signs a short-lived SSH user certificate (its own CA, ``certs.UserCA``) whose only principal is the
  user's cluster login, a Keycloak user attribute (``cluster_login``; the username when absent). sshd
  trusts the CA through ``TrustedUserCAKeys``; nothing per user is installed on the cluster. Certificates
  are cached per (cluster, login) until ``cert_renew_margin_s`` before they expire.
* ``service-account``: every user of the organization runs as one account (the seed's way) whose
  private key was given at enrollment and is stored encrypted (``vault.Vault``).

``connector_for(cluster, principal)`` applies both, and refuses a principal of another organization.
"""
from __future__ import annotations

import hashlib
import io
import re
import threading
import time
from typing import Any, Callable, Protocol

import paramiko

from .certs import UserCA
from .config import ClustersSettings, get_clusters_settings
from .connector import ClusterConnector, Endpoint, HostKey, pool_for
from .errors import ClusterError, NoClusterAccess
from .vault import Vault

PER_USER = "per-user"
SERVICE_ACCOUNT = "service-account"
IDENTITY_MODES = (PER_USER, SERVICE_ACCOUNT)
#: a POSIX login a certificate may name (also what useradd accepts by default)
LOGIN_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


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


reset_for_tests = forget_secrets


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
    """A per-user certificate from the gateway CA, re-signed when it nears its end."""

    kind = "user-certificate"

    def __init__(self, cluster: str, login: str, ca: UserCA, settings: ClustersSettings):
        self.cluster = cluster
        self.login = login
        self._ca = ca
        self._settings = settings
        self._signed = None
        self._lock = threading.Lock()
        self.identity = (self.kind, login, id(ca))

    def current(self) -> tuple[paramiko.PKey, float | None]:
        with self._lock:
            now = time.time()
            if self._signed is None or self._signed.valid_before - self._settings.cert_renew_margin_s <= now:
                self._signed = self._ca.sign(
                    [self.login], key_id=f"heroes:{self.login}@{self.cluster}",
                    validity_s=self._settings.cert_validity_minutes * 60)
            return self._signed.pkey, float(self._signed.valid_before)

    @property
    def certificate(self):
        """The current ``certs.SignedKey`` (public parts: key id, serial, validity) or None."""
        return self._signed


_CERTS: dict[tuple[str, str], CertificateCredential] = {}
_CERTS_LOCK = threading.Lock()


def _certificate_for(cluster: ClusterLike, login: str, settings: ClustersSettings) -> CertificateCredential:
    with _CERTS_LOCK:
        key = (cluster.id, login)
        cred = _CERTS.get(key)
        if cred is None:
            cred = CertificateCredential(cluster.name, login, get_ca(settings), settings)
            _CERTS[key] = cred
        return cred


# --- cluster logins ----------------------------------------------------------------------------------
#: optional hook the identity core may install: principal -> cluster login (e.g. read from Keycloak)
_login_resolver: Callable[[Any], str | None] | None = None


def set_cluster_login_resolver(resolver: Callable[[Any], str | None] | None) -> None:
    """Install how a principal's cluster login is found (e.g. a cached Keycloak attribute lookup)."""
    global _login_resolver
    _login_resolver = resolver


def cluster_login(principal: Any, settings: ClustersSettings | None = None) -> str:
    """The principal's Unix login on clusters: attribute ``cluster_login`` if known, else the username."""
    settings = settings or get_clusters_settings()
    login = getattr(principal, "cluster_login", None)
    if not login:
        attributes = getattr(principal, "attributes", None) or {}
        value = attributes.get(settings.default_cluster_login_attribute)
        login = value[0] if isinstance(value, (list, tuple)) and value else value
    if not login and _login_resolver is not None:
        login = _login_resolver(principal)
    login = login or getattr(principal, "username", None)
    if not login or not LOGIN_RE.match(login):
        raise NoClusterAccess(f"user {getattr(principal, 'username', '?')!r} has no valid cluster login "
                              f"(attribute {settings.default_cluster_login_attribute!r})")
    return login


# --- connectors --------------------------------------------------------------------------------------
def endpoint_of(cluster: ClusterLike) -> Endpoint:
    return Endpoint(cluster=cluster.name, host=cluster.host, port=int(cluster.port),
                    host_key=HostKey(cluster.host_key_type, cluster.host_key_b64))


def connector_as(cluster: ClusterLike, login: str, *, mode: str | None = None,
                 settings: ClustersSettings | None = None) -> ClusterConnector:
    """A connector for an explicit account. Trusted callers only (no principal check)."""
    settings = settings or get_clusters_settings()
    mode = mode or cluster.identity_mode
    if mode == PER_USER:
        if not LOGIN_RE.match(login):
            raise NoClusterAccess(f"{login!r} is not a valid cluster login")
        credential = _certificate_for(cluster, login, settings)
    elif mode == SERVICE_ACCOUNT:
        if not cluster.service_key_enc:
            raise NoClusterAccess(f"cluster {cluster.name!r} has no service-account key")
        credential = ServiceKeyCredential(cluster.service_login, cluster.service_key_enc, get_vault(settings))
    else:
        raise ClusterError(f"unknown identity mode {mode!r}")
    key = (cluster.id, credential.login, credential.kind)
    return ClusterConnector(pool_for(endpoint_of(cluster), credential, key, settings))


def connector_for(cluster: ClusterLike, principal: Any, *,
                  settings: ClustersSettings | None = None) -> ClusterConnector:
    """The connector a user's actions on ``cluster`` go through.

    Per-user clusters: the user's own login, by certificate. Service-account clusters: the shared
    account. A principal of another organization gets ``NoClusterAccess`` (platform admins pass).
    """
    settings = settings or get_clusters_settings()
    org = getattr(principal, "organization", None)
    if org != cluster.organization and not getattr(principal, "is_platform_admin", False):
        raise NoClusterAccess(f"cluster {cluster.name!r} is not available to your organization")
    if cluster.identity_mode == PER_USER:
        return connector_as(cluster, cluster_login(principal, settings), mode=PER_USER, settings=settings)
    return connector_as(cluster, cluster.service_login, mode=SERVICE_ACCOUNT, settings=settings)


def service_connector(cluster: ClusterLike, *, settings: ClustersSettings | None = None) -> ClusterConnector:
    """The gateway's own account on ``cluster`` (reconcilers, probes): the service key if one was
    enrolled, else a certificate for ``service_login`` (per-user clusters)."""
    if cluster.service_key_enc:
        return connector_as(cluster, cluster.service_login, mode=SERVICE_ACCOUNT, settings=settings)
    return connector_as(cluster, cluster.service_login, mode=PER_USER, settings=settings)


def forget_cluster(cluster_id: str) -> None:
    """Close the pools and drop the cached certificates of a deleted cluster."""
    from .connector import close_pools

    close_pools(lambda key: key[0] == cluster_id)
    with _CERTS_LOCK:
        for key in [k for k in _CERTS if k[0] == cluster_id]:
            del _CERTS[key]
