"""Login through Keycloak into JupyterHub, the user's start page (the Voila Welcome app), JupyterLab, logout.

Runs against the embedded stack (``heroes dev up jupyterhub``): real Keycloak, real hub and proxy, real
single-user servers under the gateway accounts ``jh-<user>``.
"""
from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def land_on_the_start_page_and_open_jupyterlab(page, hub, username: str) -> None:
    """After the login the user's start page (welcome.ipynb rendered by Voila) greets them and its kernel
    answers a click; its navigation bar leads to JupyterLab."""
    page.wait_for_url(f"**/user/{username}/voila/render/welcome.ipynb**", timeout=hub.spawn_timeout_ms)
    button = page.locator(".heroes-welcome-refresh")
    expect(button).to_be_visible(timeout=hub.spawn_timeout_ms)  # the kernel executed the notebook
    expect(page.locator(".heroes-greeting")).to_contain_text(f"Welcome, {username}!")
    status = page.locator(".heroes-welcome-status")
    expect(status).not_to_contain_text("checked again")
    button.click()
    expect(status).to_contain_text("checked again at", timeout=60_000)
    assert "WelcomeApp(" not in page.content()  # the notebook's source is not shown by Voila
    page.locator(".heroes-nav-lab").click()
    hub.expect_jupyterlab(page, username)


def test_bob_logs_in_lands_on_his_start_page_and_reaches_jupyterlab(page, hub):
    hub.login(page, "bob")
    land_on_the_start_page_and_open_jupyterlab(page, hub, "bob")


def test_carol_has_her_own_server_and_cannot_open_bobs(page, hub):
    hub.ensure_server("bob")  # bob's server runs, so a refusal is about access, not absence
    hub.login(page, "carol")
    land_on_the_start_page_and_open_jupyterlab(page, hub, "carol")

    response = page.goto(f"{hub.url}/user/bob/lab")
    assert response is not None and response.status == 403, f"carol got {response and response.status} at {page.url}"
    expect(page.locator("#jp-main-dock-panel")).to_have_count(0)
    api = page.request.get(f"{hub.url}/user/bob/api/contents")
    assert api.status in (401, 403), f"carol read bob's files: {api.status}"


def test_wrong_password_leaves_no_hub_session(page, context, hub):
    page.goto(hub.url + "/")
    hub.submit_keycloak_login(page, "bob", "not-bobs-password")
    expect(page.get_by_text(re.compile("Invalid username or password", re.I))).to_be_visible()
    expect(page).to_have_url(hub.realm_url_re())
    assert not [c for c in context.cookies() if c["name"] == "jupyterhub-hub-login"]

    page.goto(hub.url + "/hub/home")  # the hub sends an anonymous visitor back to the login form
    expect(page).to_have_url(hub.realm_url_re())
    expect(page.locator("#password")).to_be_visible()


def test_logout_ends_the_keycloak_session(page, hub):
    hub.login(page, "bob", next_path="/hub/home")
    page.wait_for_url(f"{hub.url}/hub/home**")
    # while the Keycloak session lives, a new hub login goes through without a password form
    page.goto(hub.url + "/hub/login?next=%2Fhub%2Fhome")
    page.wait_for_url(f"{hub.url}/hub/home**")

    page.goto(hub.url + "/hub/logout")
    # straight back to Keycloak's password form: no "do you want to log out?" stop on the way
    expect(page.locator("#password")).to_be_visible()
    expect(page).to_have_url(hub.realm_url_re(".*/auth"))

    page.goto(hub.url + "/")
    expect(page).to_have_url(hub.realm_url_re())
    expect(page.locator("#password")).to_be_visible()
    expect(page.locator("#kc-login")).to_be_visible()


@pytest.mark.parametrize(
    ("username", "groups", "admin"),
    [("bob", ["acme"], False), ("alice", ["acme"], False), ("carol", ["globex"], False), ("root", [], True)],
)
def test_keycloak_groups_and_roles_reach_the_hub(page, hub, username, groups, admin):
    hub.login(page, username, next_path="/hub/home")
    page.wait_for_url(f"{hub.url}/hub/home**")
    model = hub.user(username)
    assert model["groups"] == groups
    assert model["admin"] is admin


def test_heroes_service_answers_through_the_proxy(hub):
    answer = httpx.get(f"{hub.url}/services/heroes/api/v1/health", timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok" and body["service"] == "heroes"
