"""Fixtures and helpers of the HEROES service tests (``test_service_*.py``): a real Keycloak, the real hub,
and the service built in-process with ``create_app()`` on SQLite or on the stack's PostgreSQL.

``service`` is parametrized by database backend, so every test that uses it runs on both. ``tenants``
creates two throwaway organizations through the API (each with an org admin, a user and a group) and
deletes them, with their accounts, at the end; the demo realm's acme/globex are never touched.
"""
from __future__ import annotations

import contextlib
import html
import os
import re
import secrets
import warnings
from dataclasses import dataclass, field

import psycopg
import pytest
import requests

warnings.filterwarnings("ignore", message=".*httpx2.*")
from fastapi.testclient import TestClient  # noqa: E402

from heroes_dev.components import keycloak as kc  # noqa: E402
from heroes_dev.components import postgres as pg  # noqa: E402
from heroes_dev.components.jupyterhub import admin_token  # noqa: E402
from heroes_service.app import create_app  # noqa: E402
from heroes_service.settings import ServiceSettings, get_settings  # noqa: E402

PREFIX = "/services/heroes/api/v1"
BACKENDS = ["sqlite", "postgresql"]
DEMO_PASSWORDS = {"alice": "alice-pass", "bob": "bob-pass", "carol": "carol-pass", "root": "root-pass"}


def hub_api(stack_settings) -> str:
    return f"http://{stack_settings.host}:{stack_settings.ports.hub_api}/hub/api"


def hub_public(stack_settings) -> str:
    return f"http://{stack_settings.host}:{stack_settings.ports.hub}"


def service_settings(stack_settings, database_url: str, **overrides) -> ServiceSettings:
    """Settings of an in-process service wired to the running stack (the hub mirror uses stack-admin's token)."""
    values = dict(state_dir=stack_settings.state, database_url=database_url, keycloak_url=kc.base_url(stack_settings),
                  hub_api_url=hub_api(stack_settings), hub_api_token=admin_token(stack_settings), auth_cache_s=20.0)
    values.update(overrides)
    return ServiceSettings(**values)


class Api:
    """A TestClient bound to one caller's Authorization header; paths are relative to the API prefix."""

    def __init__(self, client: TestClient, authorization: str | None = None):
        self.client = client
        self.headers = {"Authorization": authorization} if authorization else {}

    def request(self, method: str, path: str, **kwargs):
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, PREFIX + path, headers=headers, **kwargs)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def as_bearer(self, token: str) -> "Api":
        return Api(self.client, f"Bearer {token}")

    def login(self, username: str, password: str) -> "Api":
        r = self.client.post(PREFIX + "/organization/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return self.as_bearer(r.json()["access_token"])


class LiveClient(requests.Session):
    """A requests session that sends relative paths to the running hub's proxy (a client for ``Api``)."""

    def __init__(self, base: str):
        super().__init__()
        self.base = base

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", 60)
        return super().request(method, self.base + url if url.startswith("/") else url, *args, **kwargs)


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request, stack_settings, tmp_path_factory):
    """A fresh, empty database per test module: a SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('heroes-db') / 'heroes.db'}"
        return
    with throwaway_postgres(request.getfixturevalue("require"), "heroes_test") as url:
        yield url


@contextlib.contextmanager
def throwaway_postgres(require, prefix: str):
    """A new, empty database on the embedded PostgreSQL (its SQLAlchemy URL), dropped afterwards."""
    component = require("postgres")
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin_url = pg.database_url(component.settings, "postgres").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg.database_url(component.settings, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def service(database_url, stack_settings, require):
    """The service app built on that database; yields an anonymous ``Api``."""
    require("keycloak")
    require("jupyterhub")
    # code that reads the process-wide settings (e.g. lifecycle hooks) must find this stack too
    os.environ["HEROES_STATE_DIR"] = str(stack_settings.state)
    get_settings.cache_clear()
    app = create_app(service_settings(stack_settings, database_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.app_ref = app
        yield Api(client)
    app.state.engine.dispose()


@dataclass
class Tenant:
    """One throwaway organization: its id/name, an org admin, a user, a group (and their APIs)."""

    name: str
    id: str
    admin: str
    admin_id: str
    user: str
    user_id: str
    group: str
    group_id: str
    password: str
    apis: dict = field(default_factory=dict)

    def secrets(self) -> set[str]:
        """Names and ids no other organization may ever see."""
        return {self.name, self.id, self.admin, self.admin_id, self.user, self.user_id, self.group_id,
                f"{self.name}.{self.group}"}


def make_tenant(service: Api, root: Api, tag: str) -> Tenant:
    name, password = f"t{secrets.token_hex(4)}{tag}", "Pw-" + secrets.token_urlsafe(12)
    admin, user = f"adm{secrets.token_hex(4)}", f"usr{secrets.token_hex(4)}"
    r = root.post("/heroes/admin/organizations/", json={"name": name, "display_name": f"Tenant {tag}",
                                                       "admins": [{"username": admin, "password": password}]})
    assert r.status_code == 201, r.text
    org_id = r.json()["id"]
    admin_api = service.login(admin, password)
    r = admin_api.post("/organization/admin/users/", json={"username": user, "password": password})
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    group = f"grp{secrets.token_hex(3)}"
    r = admin_api.post("/organization/admin/groups/", json={"name": group, "members": [user]})
    assert r.status_code == 201, r.text
    admin_id = next(u["id"] for u in admin_api.get("/organization/admin/users/").json() if u["username"] == admin)
    tenant = Tenant(name=name, id=org_id, admin=admin, admin_id=admin_id, user=user, user_id=user_id, group=group,
                    group_id=r.json()["id"], password=password)
    tenant.apis = {"org_admin": admin_api, "user": service.login(user, password)}
    return tenant


def drop_tenant(root: Api, tenant: Tenant) -> None:
    r = root.delete(f"/heroes/admin/organizations/{tenant.id}", params={"force": "true"})
    assert r.status_code in (204, 404), r.text


@pytest.fixture(scope="module")
def root_api(service):
    return service.login("root", DEMO_PASSWORDS["root"])


@pytest.fixture(scope="module")
def tenants(service, root_api):
    """Two organizations A and B, created through the API and deleted (with their accounts) afterwards."""
    a = make_tenant(service, root_api, "a")
    b = make_tenant(service, root_api, "b")
    yield {"a": a, "b": b}
    for tenant in (a, b):
        drop_tenant(root_api, tenant)


# --- the real hub ---------------------------------------------------------------------------------------
def hub_login(stack_settings, username: str, password: str) -> requests.Session:
    """Log in to the hub through Keycloak's real login form, like a browser; returns the cookie session."""
    base = hub_public(stack_settings)
    session = requests.Session()
    page = session.get(f"{base}/hub/oauth_login?next=/hub/home", timeout=30)
    match = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text) \
        or re.search(r'<form[^>]*action="([^"]+)"[^>]*id="kc-form-login"', page.text)
    assert match, f"no Keycloak login form (HTTP {page.status_code})"
    # Keycloak's login cookies are Secure; Python's jar keeps them from plain-HTTP loopback, so pass them on
    cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    answer = session.post(html.unescape(match.group(1)), allow_redirects=False, timeout=30,
                          headers={"Cookie": cookies},
                          data={"username": username, "password": password, "credentialId": ""})
    assert answer.status_code == 302, f"login of {username} failed: HTTP {answer.status_code}"
    home = session.get(answer.headers["location"], timeout=120)
    assert home.status_code == 200 and "/hub/" in home.url, home.url
    return session


def hub_user_token(stack_settings, username: str, password: str,
                   scopes=("access:services!service=heroes",)) -> str:
    """A JupyterHub API token of ``username`` (what JUPYTERHUB_API_TOKEN is in their server), via the hub UI."""
    session = hub_login(stack_settings, username, password)
    xsrf = next(c.value for c in session.cookies if c.name == "_xsrf")
    r = session.post(f"{hub_public(stack_settings)}/hub/api/users/{username}/tokens", timeout=30,
                     headers={"X-XSRFToken": xsrf},
                     json={"scopes": list(scopes), "expires_in": 900, "note": "heroes service test"})
    assert r.status_code == 201, r.text
    return r.json()["token"]
