"""What the Admin app's browser tests share: reaching the app as a person does (the hub's start page, the
Keycloak login, then the Admin card or the navigation bar's Admin link; never a typed app URL), and
screenshots to look at afterwards.

Other sessions' tests stop and start the demo users' servers at any moment, so reaching the app is retried.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

ATTEMPTS = 3
PASSWORDS = {"alice": "alice-pass", "bob": "bob-pass", "carol": "carol-pass", "root": "root-pass"}
#: where the screenshots go (HEROES_SCREENSHOTS, else the temporary directory)
SHOTS = Path(os.environ.get("HEROES_SCREENSHOTS") or Path(tempfile.gettempdir()) / "heroes-screenshots")
ADMIN_LINK = "a.heroes-card-admin, a.heroes-nav-admin"


def screenshot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_admin(page, hub, username: str = "alice") -> None:
    """From ``http://<hub>/``: log in at Keycloak, land on the start page, click the Admin card; the app's
    tabs show once its notebook ran."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            hub.ensure_server(username)
            page.goto(hub.url + "/", timeout=hub.spawn_timeout_ms)
            if page.url.startswith(hub.realm_url):
                hub.submit_keycloak_login(page, username, PASSWORDS[username])
            link = page.locator(ADMIN_LINK).first
            expect(link).to_be_visible(timeout=hub.spawn_timeout_ms)
            screenshot(page, f"start-page-{username}")
            link.click()
            page.wait_for_url("**/voila/render/admin.ipynb**", timeout=hub.spawn_timeout_ms)
            expect(page.get_by_role("tab", name="Groups")).to_be_visible(timeout=90_000)
            return
        except (AssertionError, PlaywrightError) as exc:
            if attempt == ATTEMPTS:
                raise
            print(f"reaching the Admin app failed (attempt {attempt}), retrying: {' '.join(str(exc).split())[:500]}")
