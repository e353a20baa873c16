"""The HEROES service's settings: one pydantic-settings model, read from the environment.

The hub starts the service as a managed service and passes JupyterHub's own variables
(``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``); everything the
gateway adds is prefixed ``HEROES_SERVICE_``. Later capabilities add their fields here, so that one
model documents every knob of the service.
"""
from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Everything the service reads from its environment (prefix ``HEROES_SERVICE_``)."""

    model_config = SettingsConfigDict(env_prefix="HEROES_SERVICE_", extra="ignore")

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

    @property
    def api_prefix(self) -> str:
        """Where the versioned REST API is mounted, e.g. ``/services/heroes/api/v1``."""
        return self.prefix.rstrip("/") + "/api/v1"


@lru_cache
def get_settings() -> ServiceSettings:
    """The process-wide settings (a FastAPI dependency that tests can override)."""
    return ServiceSettings()
