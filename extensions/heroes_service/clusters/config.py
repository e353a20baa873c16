"""Settings of the clusters capability (environment prefix ``HEROES_SERVICE_CLUSTERS_``).

Kept in its own pydantic-settings model so this module does not depend on the service core's settings;
the state directory follows the core's rule (``HEROES_SERVICE_STATE_DIR`` or ``HEROES_STATE_DIR``).
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


#: the running app's state dir (``bind_state_dir``), preferred over the environment
_bound_state_dir: Path | None = None


def _state_dir() -> Path:
    """The service's state dir: the app's (once bound), else the core's environment rule.

    Never the current directory: secrets must not land in a checkout because a process started there.
    """
    if _bound_state_dir is not None:
        return _bound_state_dir
    value = os.environ.get("HEROES_SERVICE_STATE_DIR") or os.environ.get("HEROES_STATE_DIR")
    return Path(value) if value else Path.home() / ".local" / "share" / "heroes-service"


def bind_state_dir(path: Path | str) -> bool:
    """Follow the app's ``ServiceSettings.state_dir``; True when it changed (callers drop cached secrets)."""
    global _bound_state_dir
    path = Path(path)
    if _bound_state_dir == path:
        return False
    _bound_state_dir = path
    get_clusters_settings.cache_clear()
    return True


class ClustersSettings(BaseSettings):
    """Knobs of cluster access. Secrets never live here: they are files under ``secrets_dir``."""

    model_config = SettingsConfigDict(env_prefix="HEROES_SERVICE_CLUSTERS_", extra="ignore")

    secrets_dir: Path = Field(
        default_factory=lambda: _state_dir() / "data" / "heroes-service" / "secrets",
        description="0700 directory with the at-rest encryption key and the encrypted user-CA key (0600 files).",
    )
    cert_validity_minutes: int = Field(
        15, ge=1, le=24 * 60, description="Lifetime of the per-user SSH certificates the gateway signs.")
    cert_renew_margin_s: int = Field(
        120, ge=5, description="A cached certificate is replaced when it has less than this many seconds left.")
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP connect + SSH handshake + auth timeout.")
    connect_attempts: int = Field(3, ge=1, description="Connection attempts per call before giving up.")
    backoff_base_s: float = Field(0.5, gt=0, description="First reconnect delay; doubles per failure.")
    backoff_max_s: float = Field(15.0, gt=0, description="Upper bound of the reconnect delay.")
    keepalive_s: int = Field(30, ge=0, description="SSH keepalive interval on pooled connections (0: off).")
    max_connections: int = Field(4, ge=1, description="SSH connections per (cluster, account) pool.")
    channels_per_connection: int = Field(
        16, ge=1, description="Concurrent channels (commands, SFTP sessions) on one connection.")
    idle_close_s: float = Field(600.0, gt=0, description="Pooled connections unused this long are closed.")
    warm_exec_idle_s: float = Field(
        60.0, ge=0, description="A command run often and fed on its input (sbatch's submitter) is kept started "
                                "ahead of need, one per connection that is up anyway, and closed unused after "
                                "this many seconds (0: always started on demand).")
    max_output_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="stdout/stderr beyond this are dropped (result marked truncated).")
    embedded_login_nodes_dir: Path = Field(
        default_factory=lambda: _state_dir() / "etc" / "embedded-login-nodes",
        description="Folder where the embedded dev stack describes its login nodes (one <cluster>.json each: "
                    "address, trusted-CA file, principals folder). Absent on a real site: nothing is embedded.",
    )
    install_embedded_ca: bool = Field(
        True, description="At enrollment, write the gateway's user-CA public key into the TrustedUserCAKeys file "
                          "of an embedded-stack login node (only for host:port pairs of this machine's stack).")
    default_cluster_login_attribute: str = Field(
        "cluster_login", description="Keycloak user attribute that holds a user's login on the clusters. Only the "
                                     "platform (Keycloak) admin can set it; organization admins cannot.")
    service_logins: tuple[str, ...] = Field(
        ("heroes",), description="The gateway's service accounts on clusters: never a user's cluster login.")
    refused_logins: tuple[str, ...] = Field(
        ("nobody", "slurm", "munge", "sshd", "admin", "administrator", "operator", "toor"),
        description="More accounts that can never be a user's cluster login (root, system accounts and jh-* "
                    "accounts always are).")
    refuse_gateway_host_accounts: bool = Field(
        True, description="Refuse a cluster login that is an account of the gateway host itself (unless an embedded "
                          "login node publishes it). Turn off only where the gateway host shares the clusters' "
                          "user directory (LDAP), so every cluster account also exists there.")
    allow_local_hosts: bool = Field(
        False, description="Platform admin setting: let enrollment and the host-key probe reach loopback, link-local "
                           "and cloud metadata addresses. The embedded stack's own login nodes are always allowed.")
    host_key_probes_per_minute: int = Field(
        10, ge=1, description="Failed host-key probes (and enrollment attempts that cannot read the host key) one "
                              "organization may make per minute; then every probe is refused until the minute ends.")


@lru_cache
def get_clusters_settings() -> ClustersSettings:
    return ClustersSettings()
