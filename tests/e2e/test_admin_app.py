"""Browser test of the Admin app: alice (acme org admin) adds bob to a group in notebooks/admin.ipynb
rendered by Voila in her own server; bob's next API call and the hub's group list show it at once."""
from __future__ import annotations

import secrets

import httpx
import pytest
from playwright.sync_api import expect

from app_support import PREFIX, bearer

pytestmark = pytest.mark.e2e


def test_alice_adds_bob_to_a_group_in_the_admin_app(page, hub):
    alice, bob = bearer(hub, "alice", "alice-pass"), bearer(hub, "bob", "bob-pass")
    assert hub.api.post("/users/bob").status_code in (201, 409)  # the hub knows bob, so the mirror applies
    name = f"e2e{secrets.token_hex(3)}"
    r = httpx.post(f"{hub.url}{PREFIX}/organization/admin/groups/", headers=alice, json={"name": name}, timeout=30)
    assert r.status_code == 201, r.text
    group = r.json()
    try:
        hub.stop_server("alice")  # a fresh server gets today's environment and token scopes
        hub.ensure_server("alice")
        hub.login(page, "alice", "/user/alice/voila/render/admin.ipynb")
        page.wait_for_url("**/user/alice/voila/render/admin.ipynb**", timeout=hub.spawn_timeout_ms)
        groups_tab = page.get_by_role("tab", name="Groups")
        expect(groups_tab).to_be_visible(timeout=hub.spawn_timeout_ms)  # the kernel ran the notebook
        groups_tab.click()
        group_select = page.locator(".heroes-admin-group select")
        expect(group_select).to_be_visible()
        group_select.select_option(label=name)
        expect(page.locator(".heroes-admin-members")).to_contain_text("nobody")
        page.locator(".heroes-admin-user select").select_option(label="bob")
        page.locator(".heroes-admin-add").click()
        expect(page.locator(".heroes-admin-status")).to_contain_text(f"bob added to {name}")
        expect(page.locator(".heroes-admin-members")).to_contain_text("bob")
        # bob's very next call, and the hub's group list
        me = httpx.get(f"{hub.url}{PREFIX}/organization/auth/me", headers=bob, timeout=30).json()
        assert group["hub_group"] in me["groups"]
        assert hub.api.get(f"/groups/{group['hub_group']}").json()["users"] == ["bob"]
    finally:
        r = httpx.delete(f"{hub.url}{PREFIX}/organization/admin/groups/{group['id']}", headers=alice, timeout=30)
        assert r.status_code == 204
    assert hub.api.get(f"/groups/{group['hub_group']}").status_code == 404
