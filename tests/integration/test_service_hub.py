"""The service as the hub runs it: through the proxy at /services/heroes/, with users' JupyterHub tokens
(obtained like a browser would: Keycloak login form -> hub -> token page) and Keycloak bearer tokens.

After code changes restart the hub so that it runs them: heroes dev down jupyterhub && heroes dev up jupyterhub
"""
from __future__ import annotations

import secrets

import pytest
import requests

from heroes_dev.components.jupyterhub import admin_token
from service_support import DEMO_PASSWORDS, PREFIX, hub_login, hub_public, hub_user_token

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base(require, stack_settings):
    require("keycloak")
    require("jupyterhub")
    return hub_public(stack_settings) + PREFIX


@pytest.fixture(scope="module")
def alice_token(base, stack_settings):
    return hub_user_token(stack_settings, "alice", DEMO_PASSWORDS["alice"])


def hub_api_group(stack_settings, name):
    r = requests.get(f"{hub_public(stack_settings)}/hub/api/groups/{name}", timeout=10,
                     headers={"Authorization": f"token {admin_token(stack_settings)}"})
    return r.json() if r.status_code == 200 else None


def test_openapi_and_docs_are_served_publicly(base):
    document = requests.get(f"{base}/openapi.json", timeout=10)
    assert document.status_code == 200
    paths = document.json()["paths"]
    assert f"{PREFIX}/organization/auth/me" in paths and f"{PREFIX}/heroes/admin/organizations/" in paths
    docs = requests.get(f"{base}/docs", timeout=10)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_hub_token_resolves_to_the_keycloak_identity(base, alice_token):
    r = requests.get(f"{base}/organization/auth/me", headers={"Authorization": f"token {alice_token}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"username": "alice", "organization": "acme", "groups": ["acme"],
                        "roles": ["org-admin", "user"], "via": "hub"}


def test_hub_token_without_the_service_scope_is_refused(base, stack_settings):
    token = hub_user_token(stack_settings, "bob", DEMO_PASSWORDS["bob"], scopes=("read:users:name!user=bob",))
    r = requests.get(f"{base}/organization/auth/me", headers={"Authorization": f"token {token}"}, timeout=10)
    assert r.status_code == 401 and "access:services!service=heroes" in r.json()["detail"]


def test_keycloak_token_through_the_proxy(base):
    r = requests.post(f"{base}/organization/auth/login", json={"username": "carol", "password": "carol-pass"},
                      timeout=20)
    assert r.status_code == 200, r.text
    me = requests.get(f"{base}/organization/auth/me", timeout=10,
                      headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert me.json()["organization"] == "globex" and me.json()["via"] == "keycloak"
    r = requests.get(f"{base}/organization/admin/users/", timeout=10,
                     headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert r.status_code == 403


def test_group_change_reaches_the_hub_and_the_next_call_at_once(base, alice_token, stack_settings):
    hub_login(stack_settings, "bob", DEMO_PASSWORDS["bob"])  # make sure the hub knows bob
    bob_token = hub_user_token(stack_settings, "bob", DEMO_PASSWORDS["bob"])
    alice = {"Authorization": f"token {alice_token}"}
    name = f"hubmirror{secrets.token_hex(3)}"
    r = requests.post(f"{base}/organization/admin/groups/", headers=alice, timeout=20, json={"name": name})
    assert r.status_code == 201, r.text
    group = r.json()
    try:
        assert hub_api_group(stack_settings, group["hub_group"])["users"] == []
        r = requests.patch(f"{base}/organization/admin/groups/{group['id']}", headers=alice, timeout=20,
                           json={"add_members": ["bob"]})
        assert r.status_code == 200, r.text
        assert hub_api_group(stack_settings, group["hub_group"])["users"] == ["bob"]
        me = requests.get(f"{base}/organization/auth/me", headers={"Authorization": f"token {bob_token}"}, timeout=10)
        assert group["hub_group"] in me.json()["groups"]
    finally:
        r = requests.delete(f"{base}/organization/admin/groups/{group['id']}", headers=alice, timeout=20)
        assert r.status_code == 204
    assert hub_api_group(stack_settings, group["hub_group"]) is None


def test_service_errors_carry_no_stack_trace(base, alice_token):
    r = requests.get(f"{base}/organization/admin/users/not-an-id", timeout=10,
                     headers={"Authorization": f"token {alice_token}"})
    assert r.status_code == 404 and r.json() == {"detail": "user not found in your organization"}
    r = requests.post(f"{base}/organization/admin/groups/", data="{not json", timeout=10,
                      headers={"Authorization": f"token {alice_token}", "Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text
