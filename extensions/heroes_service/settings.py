"""The HEROES service's settings: one pydantic-settings model, read from the environment.

The hub starts the service as a managed service and passes JupyterHub's own variables
(``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``); everything the
gateway adds is prefixed ``HEROES_SERVICE_``. Later capabilities add their fields here, so that one
model documents every knob of the service.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Everything the service reads from its environment (prefix ``HEROES_SERVICE_``)."""

    model_config = SettingsConfigDict(env_prefix="HEROES_SERVICE_", extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", description="Address uvicorn binds; loopback only in the embedded stack.")
    port: int = Field(10101, description="Port uvicorn binds; the hub's proxy routes /services/heroes/ to it.")
    prefix: str = Field(
        "/services/heroes/",
        validation_alias=AliasChoices("HEROES_SERVICE_PREFIX", "JUPYTERHUB_SERVICE_PREFIX"),
        description="URL prefix the proxy forwards unchanged (it does not strip it), so routes live below it.",
    )
    hub_api_url: str = Field(
        "http://127.0.0.1:8081/hub/api",
        validation_alias=AliasChoices("HEROES_SERVICE_HUB_API_URL", "JUPYTERHUB_API_URL"),
        description="The hub's REST API, used to resolve users' tokens.",
    )
    hub_api_token: SecretStr = Field(
        SecretStr(""),
        validation_alias=AliasChoices("HEROES_SERVICE_HUB_API_TOKEN", "JUPYTERHUB_API_TOKEN"),
        description="The service's own hub token (set by the hub for a managed service); never logged.",
    )
    service_name: str = Field(
        "heroes",
        validation_alias=AliasChoices("HEROES_SERVICE_NAME", "JUPYTERHUB_SERVICE_NAME"),
        description="The service's name in the hub (c.JupyterHub.services).",
    )
    server_keys_service: str = Field(
        "hub-server-keys",
        description="Name of the hub's token-only service that alone may ask for a single-user server's S3 keys "
                    "(POST/DELETE /organization/data/server-credentials) on behalf of a user.",
    )

    # --- state and database ------------------------------------------------------------------------------
    state_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("HEROES_STATE_DIR") or Path.cwd()),
        validation_alias=AliasChoices("HEROES_SERVICE_STATE_DIR", "HEROES_STATE_DIR"),
        description="The stack's state dir; the default SQLite database and the Keycloak secret files live below it.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the service database. Empty: SQLite (WAL) at "
                    "<state_dir>/data/heroes-service/heroes.db. postgresql+psycopg://... is supported.",
    )

    # --- Keycloak (realm users log in to; admin API for organizations, users, groups, roles) -------------
    keycloak_url: str = Field(
        "http://127.0.0.1:8080",
        validation_alias=AliasChoices("HEROES_SERVICE_KEYCLOAK_URL", "HEROES_KEYCLOAK_URL"),
        description="Keycloak's base URL (no /auth prefix on Keycloak >= 17).",
    )
    keycloak_realm: str = Field(
        "heroes",
        validation_alias=AliasChoices("HEROES_SERVICE_KEYCLOAK_REALM", "HEROES_KEYCLOAK_REALM"),
        description="The realm whose tokens the service accepts and whose users it administers.",
    )
    keycloak_client_id: str = Field(
        "jupyterhub", description="Confidential client used for the login (direct grant) and refresh routes.",
    )
    keycloak_client_secret: SecretStr = Field(
        SecretStr(""),
        description="That client's secret. Empty: read from <state_dir>/etc/keycloak/client-secret (0600).",
    )
    keycloak_admin_realm: str = Field("master", description="Realm of the admin account the service uses.")
    keycloak_admin_user: str = Field("admin", description="Admin account for Keycloak's admin API.")
    keycloak_admin_password: SecretStr = Field(
        SecretStr(""),
        description="Its password. Empty: read from <state_dir>/etc/keycloak/admin-password (0600).",
    )
    keycloak_timeout_s: float = Field(5.0, description="Timeout of every call to Keycloak, seconds.")
    token_audiences: str = Field(
        "jupyterhub",
        description="Comma-separated client ids whose access tokens (azp or aud) the service accepts, besides "
                    "the OAuth clients it created for organizations.",
    )
    auth_cache_s: float = Field(
        20.0, description="How long resolved hub tokens, principals and the realm's JWKS are cached, seconds.",
    )

    # --- data (S3 object storage; extensions/heroes_service/data) -----------------------------------------
    s3_endpoint: str = Field(
        "http://127.0.0.1:9000",
        validation_alias=AliasChoices("HEROES_SERVICE_S3_ENDPOINT", "HEROES_S3_ENDPOINT"),
        description="S3 server the data API stores users' and organizations' buckets on.",
    )
    s3_region: str = Field("us-east-1", description="Region the S3 requests are signed for.")
    s3_sign_payload: Literal["auto", "always", "never"] = Field(
        "auto", description="SHA-256 of uploaded bodies in the request signature. auto: only over plain http to a "
        "non-loopback server (TLS or the loopback already protect the body; hashing costs CPU on every byte).")
    s3_access_key: str = Field("", description="The service's S3 access key. Empty: read from s3_credentials_file.")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="The service's S3 secret key (never logged).")
    s3_credentials_file: str = Field(
        "",
        description="JSON file {access_key, secret_key} with the service's S3 keys. Empty: the embedded stack's "
                    "<state_dir>/etc/s3/root-credentials.json (0600).",
    )
    s3_user_accounts: bool = Field(
        True, description="Create per-user S3 accounts (Versity Gateway admin API) scoped to the user's own bucket "
                          "for s3contents in single-user servers.",
    )
    data_bucket_base: str = Field("heroes", description="First part of every bucket name the service creates.")
    data_quota_bytes: int = Field(10 * 1024**3, description="Default storage quota of an organization (0 = none).")
    data_org_quotas: dict[str, int] = Field(
        default_factory=dict, description="Per-organization quotas in bytes (JSON object), overriding the default.",
    )
    data_readonly_group: str = Field(
        "data-readonly", description="Members of an organization in this group only read its shared space.",
    )
    data_presign_ttl_s: int = Field(3600, description="Lifetime of presigned download/upload URLs, seconds.")
    data_part_bytes: int = Field(8 * 1024**2, description="Part size of streamed (multipart) uploads, bytes; downloads stream one GET at the socket's pace.")
    data_parts_in_flight: int = Field(4, description="Parts of one upload sent to S3 at the same time.")

    # --- visualization (desktop sessions; extensions/heroes_service/visualization) -------------------------
    visualization_idle_minutes: float = Field(
        30.0, ge=0.1, description="A running desktop with no viewer for this long is ended with scancel (a "
                                  "session may ask for a shorter time, never a longer one).")
    visualization_ticket_s: int = Field(60, ge=5, le=600, description="Lifetime of a one-time websocket ticket, "
                                                                      "seconds (it is spent on first use).")
    visualization_share_max_minutes: int = Field(24 * 60, ge=1, description="Longest lifetime of a view-only link.")
    visualization_max_sessions: int = Field(4, ge=1, description="Live desktops one user may have at once.")
    visualization_allowed_origins: str = Field(
        "", description="Comma-separated browser origins allowed to open desktop websockets, besides the "
                        "request's own host (same origin). Other origins are refused.")
    visualization_bridge: Literal["srun", "direct"] = Field(
        "srun", description="How the login node reaches a desktop's socket: srun --overlap into the job (no "
                            "route to nodes needed), or direct (login and nodes share /tmp: one-host sites).")
    visualization_energy: bool = Field(
        True, description="Run each desktop under the energy collector (heroes_energy, staged into its session "
                          "folder; needs python3 on the nodes): its energy is the collector's while it runs and "
                          "its energy record when it ends. Off: estimated from the cluster's power profile.")
    visualization_energy_read_s: float = Field(
        10.0, ge=1, description="Seconds between two reads of a running desktop's energy so far (one small file "
                                "over SSH per desktop).")

    @property
    def issuer(self) -> str:
        """The realm's OIDC issuer (tokens must carry exactly this ``iss``)."""
        return f"{self.keycloak_url.rstrip('/')}/realms/{self.keycloak_realm}"

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file under the state dir (created on demand)."""
        if self.database_url:
            return self.database_url
        folder = Path(self.state_dir) / "data" / "heroes-service"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'heroes.db'}"

    def client_secret(self) -> str:
        """The login client's secret (setting, else the stack's 0600 file)."""
        return self.keycloak_client_secret.get_secret_value() or _read_secret(
            Path(self.state_dir) / "etc" / "keycloak" / "client-secret")

    def admin_password(self) -> str:
        """The Keycloak admin password (setting, else the stack's 0600 file)."""
        return self.keycloak_admin_password.get_secret_value() or _read_secret(
            Path(self.state_dir) / "etc" / "keycloak" / "admin-password")

    @property
    def api_prefix(self) -> str:
        """Where the versioned REST API is mounted, e.g. ``/services/heroes/api/v1``."""
        return self.prefix.rstrip("/") + "/api/v1"


def _read_secret(path: Path) -> str:
    """A secret from a file; empty when the file is missing (callers then report Keycloak as unusable)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@lru_cache
def get_settings() -> ServiceSettings:
    """The process-wide settings (a FastAPI dependency that tests can override)."""
    return ServiceSettings()
