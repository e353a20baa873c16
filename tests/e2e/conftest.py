"""Browser tests: Debian's Chromium driven by Playwright against the running stack (hub + Keycloak).

Never ``playwright install``: the tests launch /usr/bin/chromium. Every test gets a fresh browser context
(its own cookies and storage), so one test's Keycloak or hub session never leaks into another. At the end
of the session the single-user servers this session started are stopped through the hub's admin API (never
one that was running before it: another session may be using it).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Page, expect

from heroes_dev.components.jupyterhub import admin_token, hub_url

#: demo users of the realm (hub_config/keycloak/heroes-realm.json)
PASSWORDS = {"alice": "alice-pass", "bob": "bob-pass", "carol": "carol-pass", "root": "root-pass"}
#: a first spawn creates the Unix account and starts JupyterLab on a 2-core machine
SPAWN_TIMEOUT_MS = 120_000


@dataclass
class Hub:
    """The running hub: its public URL, Keycloak's realm URL and an admin client for its REST API."""

    url: str
    realm_url: str
    api: httpx.Client

    def user(self, name: str) -> dict:
        answer = self.api.get(f"/users/{name}")
        answer.raise_for_status()
        return answer.json()

    def ensure_server(self, name: str, timeout: float = 120.0) -> None:
        """Create the hub user if needed and start their default server; wait until it is ready."""
        created = self.api.post(f"/users/{name}")
        assert created.status_code in (201, 409), created.text
        # explicit empty options: the gateway. Without them the hub reuses the server's last options, and a
        # test elsewhere that started this default server on a cluster would put every app on a Slurm node
        started = self.api.post(f"/users/{name}/server", json={"user_options": {}})
        assert started.status_code in (201, 202, 400), started.text  # 400: already running
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.user(name).get("servers", {}).get("")
            if server and server.get("ready"):
                return
            time.sleep(1)
        raise AssertionError(f"{name}'s server was not ready after {timeout:.0f}s")

    def ensure_gateway_server(self, name: str) -> None:
        """The user's default server running on the gateway: one left running on a cluster (a Slurm job) is
        stopped first, then started with the gateway's (empty) options."""
        server = self.user(name).get("servers", {}).get("")
        if server and (server.get("state") or {}).get("cluster"):
            for _ in range(3):  # a cluster server's stop may answer 500 while its job is still pending
                if self.api.delete(f"/users/{name}/server").status_code != 500:
                    break
                time.sleep(2)
            deadline = time.monotonic() + 60
            while "" in self.user(name).get("servers", {}) and time.monotonic() < deadline:
                time.sleep(1)
        self.ensure_server(name)

    def stop_server(self, name: str) -> None:
        answer = self.api.delete(f"/users/{name}/server")
        assert answer.status_code in (202, 204, 400, 404), answer.text

    # --- browser helpers (methods, so test modules need no imports from this conftest) ----------------
    spawn_timeout_ms: int = SPAWN_TIMEOUT_MS

    def realm_url_re(self, suffix: str = "") -> re.Pattern:
        """A URL pattern for pages of Keycloak's realm heroes."""
        return re.compile("^" + re.escape(self.realm_url + "/") + suffix)

    def submit_keycloak_login(self, page: Page, username: str, password: str) -> None:
        """On Keycloak's login form of realm heroes, type the credentials and submit."""
        expect(page).to_have_url(self.realm_url_re())
        expect(page.locator("#password")).to_be_visible()
        page.fill("#username", username)
        page.fill("#password", password)
        page.click("#kc-login")

    def login(self, page: Page, username: str, next_path: str = "/") -> None:
        """Open the hub (``next_path``), get sent to Keycloak, and log in with the demo password."""
        page.goto(self.url + next_path)
        self.submit_keycloak_login(page, username, PASSWORDS[username])

    def expect_jupyterlab(self, page: Page, username: str) -> None:
        """The user's JupyterLab has loaded: its URL and its main dock panel in the DOM."""
        page.wait_for_url(f"**/user/{username}/lab**", timeout=self.spawn_timeout_ms)
        expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=self.spawn_timeout_ms)


@pytest.fixture(scope="session")
def hub(require, stack_settings):
    require("keycloak")
    require("jupyterhub")
    from heroes_dev.components.keycloak import issuer_url

    client = httpx.Client(base_url=f"http://127.0.0.1:{stack_settings.ports.hub_api}/hub/api",
                          headers={"Authorization": f"token {admin_token(stack_settings)}"}, timeout=30)
    running_before = {name for name in PASSWORDS if _server_running(client, name)}
    yield Hub(url=hub_url(stack_settings), realm_url=issuer_url(stack_settings), api=client)
    # stop the single-user servers this session started, so nothing keeps running after the suite. Never one
    # that ran before: another test session (another engineer's) may be using it, and stopping it under
    # them was why browser tests failed at random and were retried.
    for name in set(PASSWORDS) - running_before:
        try:
            if client.get(f"/users/{name}").status_code == 200:
                Hub(hub_url(stack_settings), "", client).stop_server(name)
        except httpx.HTTPError:
            pass
    client.close()


def _server_running(client: httpx.Client, name: str) -> bool:
    try:
        answer = client.get(f"/users/{name}")
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and "" in (answer.json().get("servers") or {})
