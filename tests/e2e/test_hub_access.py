"""Who may enter the hub: holders of the realm role ``user``, whatever their organization group."""
from __future__ import annotations

import secrets

import pytest
from keycloak import KeycloakAdmin
from playwright.sync_api import expect

from heroes_dev.components import keycloak as kc


@pytest.fixture
def realm_admin(stack_settings, require):
    require("keycloak")
    return KeycloakAdmin(server_url=kc.base_url(stack_settings) + "/", username="admin",
                         password=kc.admin_password(stack_settings), realm_name=kc.REALM,
                         user_realm_name="master")


@pytest.fixture
def newcomer(realm_admin):
    """A Keycloak user in no organization group and without the role 'user' (removed afterwards)."""
    name = f"newcomer{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    user_id = realm_admin.create_user({
        "username": name, "enabled": True, "email": f"{name}@example.org", "emailVerified": True,
        "firstName": "New", "lastName": "Comer",
        "credentials": [{"type": "password", "value": password, "temporary": False}],
    })
    yield name, password, user_id
    realm_admin.delete_user(user_id)


def test_a_user_without_the_role_is_refused_and_let_in_once_granted(hub, context, realm_admin, newcomer):
    name, password, user_id = newcomer
    page = context.new_page()
    page.goto(hub.url + "/hub/home")
    hub.submit_keycloak_login(page, name, password)
    expect(page.locator("body")).to_contain_text("403", timeout=30_000)  # the hub refuses, Keycloak accepted
    assert hub.api.get(f"/users/{name}").status_code == 404, "a refused login must not create a hub user"

    realm_admin.assign_realm_roles(user_id, [realm_admin.get_realm_role("user")])
    fresh = context.browser.new_context()
    try:
        page = fresh.new_page()
        page.goto(hub.url + "/hub/home")
        hub.submit_keycloak_login(page, name, password)
        page.wait_for_url(lambda url: "/hub/" in url or "/user/" in url, timeout=60_000)
        assert hub.api.get(f"/users/{name}").status_code == 200
    finally:
        fresh.close()
        hub.api.delete(f"/users/{name}")
