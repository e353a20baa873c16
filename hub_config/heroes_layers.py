"""The hub configuration's layers: built-in defaults -> optional site YAML -> environment.

``HeroesHubSettings`` holds the few values a site really changes (URLs, ports, directories, the OAuth
client). Each is a traitlet with ``help=`` and an environment variable (its ``env`` metadata):

1. the trait's default (the embedded stack on 127.0.0.1),
2. the ``HeroesHubSettings:`` section of the site YAML named by ``HEROES_HUB_SITE_CONFIG`` (optional),
3. the environment variable, which wins (the stack's component passes ports and secrets this way).

The site YAML may also carry sections named after any configurable class (``JupyterHub:``,
``HeroesKeycloakAuthenticator:``, ``HeroesLocalSpawner:``...); they are merged over the config built from
the settings, for what the settings do not cover.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import yaml
from traitlets import Int, Unicode
from traitlets.config import Config, Configurable

SITE_CONFIG_ENV = "HEROES_HUB_SITE_CONFIG"
REPO_ROOT = Path(__file__).resolve().parents[1]


class HeroesHubSettings(Configurable):
    """Site values of the HEROES hub (see the module docstring for how they are layered)."""

    public_url = Unicode(
        "http://127.0.0.1:8000", config=True,
        help="URL users open; the proxy binds its host and port; Keycloak redirects back below it.",
    ).tag(env="HEROES_HUB_PUBLIC_URL")
    hub_api_port = Int(
        8081, config=True, help="Port of the hub's internal API (bound on 127.0.0.1).",
    ).tag(env="HEROES_HUB_API_PORT")
    proxy_api_port = Int(
        8001, config=True, help="Port of configurable-http-proxy's REST API (bound on 127.0.0.1).",
    ).tag(env="HEROES_PROXY_API_PORT")
    service_port = Int(
        10101, config=True, help="Port of the hub-managed 'heroes' service (uvicorn, bound on 127.0.0.1).",
    ).tag(env="HEROES_SERVICE_PORT")
    data_dir = Unicode(
        "", config=True,
        help="The hub's state: sqlite database, cookie secret, gateway users' homes. Empty: the current dir.",
    ).tag(env="HEROES_HUB_DATA_DIR")
    homes_dir = Unicode(
        "", config=True,
        help="Parent of the gateway accounts' homes (must be traversable by them). Empty: <data_dir>/homes.",
    ).tag(env="HEROES_HUB_HOMES_DIR")
    admin_token = Unicode(
        "", config=True,
        help="Token of the token-only service 'stack-admin' (manages users, servers, groups for the stack's "
             "tooling and tests). Pass it through the environment. Empty: no such service.",
    ).tag(env="HEROES_HUB_ADMIN_TOKEN")
    singleuser_env = Unicode(
        "", config=True,
        help="Python environment (venv prefix) the single-user servers run from; it must be readable and "
             "executable by the gateway accounts. Empty: the hub's own environment.",
    ).tag(env="HEROES_SINGLEUSER_ENV")
    singleuser_pythonpath = Unicode(
        "", config=True,
        help="A folder of the gateway's user-side packages (heroes_widgets), readable by the gateway accounts, "
             "put on PYTHONPATH of single-user servers so dashboards import the apps. The stack copies the "
             "packages there at every hub start, so a checkout under a private folder still works. "
             "Empty: nothing added.",
    ).tag(env="HEROES_SINGLEUSER_PYTHONPATH")
    state_dir = Unicode(
        "", config=True, help="The embedded stack's state dir, handed to the heroes service. Empty: unset.",
    ).tag(env="HEROES_STATE_DIR")
    notebooks_dir = Unicode(
        str(REPO_ROOT / "notebooks"), config=True,
        help="Dashboards copied into every user's home at spawn (rendered by Voila).",
    ).tag(env="HEROES_NOTEBOOKS_DIR")
    keycloak_url = Unicode(
        "http://127.0.0.1:8080", config=True, help="Keycloak's base URL (no /auth prefix on Keycloak >= 17).",
    ).tag(env="HEROES_KEYCLOAK_URL")
    keycloak_realm = Unicode("heroes", config=True, help="The Keycloak realm users log in to.").tag(
        env="HEROES_KEYCLOAK_REALM")
    oauth_client_id = Unicode("jupyterhub", config=True, help="The hub's confidential OIDC client.").tag(
        env="HEROES_OAUTH_CLIENT_ID")
    oauth_client_secret = Unicode(
        "", config=True,
        help="The OIDC client's secret. Pass it through the environment (never commit it to a site YAML).",
    ).tag(env="HEROES_OAUTH_CLIENT_SECRET")
    allowed_groups = Unicode(
        "", config=True,
        help="Comma-separated Keycloak groups allowed to log in besides the users holding one of "
             "allowed_roles. Empty: access is decided by realm role only.",
    ).tag(env="HEROES_HUB_ALLOWED_GROUPS")
    allowed_roles = Unicode(
        "user,platform-admin", config=True,
        help="Comma-separated Keycloak realm roles whose holders may log in. Organizations created later "
             "through the service give their members the role 'user', so they need no hub change.",
    ).tag(env="HEROES_HUB_ALLOWED_ROLES")
    admin_roles = Unicode(
        "platform-admin", config=True, help="Comma-separated Keycloak realm roles that make a user hub admin.",
    ).tag(env="HEROES_HUB_ADMIN_ROLES")

    @property
    def oidc_base(self) -> str:
        return f"{self.keycloak_url.rstrip('/')}/realms/{self.keycloak_realm}/protocol/openid-connect"


def read_site_yaml(environ: Mapping[str, str]) -> dict:
    """The site YAML named by HEROES_HUB_SITE_CONFIG, or {} when the variable is unset."""
    path = environ.get(SITE_CONFIG_ENV)
    if not path:
        return {}
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the site config must be a mapping of class names to options")
    return data


def env_layer(environ: Mapping[str, str]) -> dict:
    """Trait values of HeroesHubSettings taken from the environment (strings cast by the trait)."""
    values = {}
    for name, trait in HeroesHubSettings.class_traits(config=True).items():
        var = trait.metadata.get("env")
        if var and environ.get(var, "") != "":
            values[name] = trait.from_string(environ[var])
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> tuple[HeroesHubSettings, Config]:
    """Layer defaults -> site YAML -> environment; return the settings and the YAML's other sections."""
    environ = os.environ if environ is None else environ
    site = read_site_yaml(environ)
    layered = Config()
    layered.merge(Config({"HeroesHubSettings": site.get("HeroesHubSettings", {})}))
    layered.merge(Config({"HeroesHubSettings": env_layer(environ)}))
    settings = HeroesHubSettings(config=layered)
    extra = Config({k: v for k, v in site.items() if k != "HeroesHubSettings"})
    return settings, extra


def split_list(value: str) -> set[str]:
    return {part.strip() for part in value.split(",") if part.strip()}
