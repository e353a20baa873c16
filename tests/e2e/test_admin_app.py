"""Browser test of the Admin app's Groups tab: alice (acme org admin) reaches the app from the hub's start page,
creates a group (it is chosen in the drop-down at once), adds bob to it (bob's very next API call and the hub's
group list show it), then deletes the group from the app (gone from the drop-down, Keycloak and the hub)."""
from __future__ import annotations

import secrets

import httpx
import pytest
from playwright.sync_api import expect

from admin_support import open_admin, screenshot
from app_support import PREFIX, bearer

pytestmark = pytest.mark.e2e


def test_alice_creates_a_group_adds_bob_and_deletes_it_in_the_admin_app(page, hub):
    alice, bob = bearer(hub, "alice", "alice-pass"), bearer(hub, "bob", "bob-pass")
    assert hub.api.post("/users/bob").status_code in (201, 409)  # the hub knows bob, so the mirror applies
    name = f"e2e{secrets.token_hex(3)}"
    try:
        open_admin(page, hub, "alice")
        page.get_by_role("tab", name="Groups").click()
        page.locator(".heroes-admin-new-group input").fill(name)
        page.locator(".heroes-admin-create-group").click()
        status = page.locator(".heroes-admin-status")
        expect(status).to_contain_text(f"group {name} created", timeout=30_000)
        # chosen at once, no reload and no second pick
        expect(page.locator(".heroes-admin-group select option:checked")).to_have_text(name)
        expect(page.locator(".heroes-admin-members")).to_contain_text("nobody")
        page.locator(".heroes-admin-user select").select_option(label="bob")
        page.locator(".heroes-admin-add").click()
        expect(status).to_contain_text(f"bob added to {name}")
        expect(page.locator(".heroes-admin-members")).to_contain_text("bob")
        screenshot(page, "admin-groups-1-created-bob-added")
        me = httpx.get(f"{hub.url}{PREFIX}/organization/auth/me", headers=bob, timeout=30).json()
        assert f"acme.{name}" in me["groups"]
        assert hub.api.get(f"/groups/acme.{name}").json()["users"] == ["bob"]
        page.locator(".heroes-admin-delete-group").click()
        expect(page.locator(".heroes-admin-delete-group-confirm")).to_contain_text(f"Delete the group {name}?")
        page.locator(".heroes-admin-delete-group-yes").click()
        expect(status).to_contain_text(f"group {name} deleted", timeout=30_000)
        expect(page.locator(".heroes-admin-group select option", has_text=name)).to_have_count(0)
        screenshot(page, "admin-groups-2-deleted")
        assert hub.api.get(f"/groups/acme.{name}").status_code == 404
        listed = httpx.get(f"{hub.url}{PREFIX}/organization/admin/groups/", headers=alice, timeout=30).json()
        assert name not in {g["name"] for g in listed}
    finally:
        listed = httpx.get(f"{hub.url}{PREFIX}/organization/admin/groups/", headers=alice, timeout=30).json()
        for group in listed:
            if group["name"] == name:
                httpx.delete(f"{hub.url}{PREFIX}/organization/admin/groups/{group['id']}", headers=alice, timeout=30)
