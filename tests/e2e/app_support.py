"""What the browser tests of the Voila apps share: an API bearer token for a demo user, and opening an app
in that user's own server.

Other sessions' tests start and stop the demo users' servers at the same time, so opening an app is retried
when the server goes away under it.
"""
from __future__ import annotations

import httpx
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

PREFIX = "/services/heroes/api/v1"
ATTEMPTS = 3


def bearer(hub, username: str, password: str) -> dict:
    """Authorization header of a Keycloak token obtained through the service's login route."""
    r = httpx.post(f"{hub.url}{PREFIX}/organization/auth/login", json={"username": username, "password": password},
                   timeout=30)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def open_app(page, hub, notebook: str, ready: str, username: str = "bob"):
    """Render ``notebook`` with Voila in the user's server (Keycloak login when asked) until the widget
    ``ready`` shows; retried when another session stops the server meanwhile."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            hub.ensure_server(username)
            url = f"{hub.url}/user/{username}/voila/render/{notebook}"
            page.goto(url, timeout=hub.spawn_timeout_ms)  # Voila's page loads once the notebook has run
            if page.url.startswith(hub.realm_url):
                hub.submit_keycloak_login(page, username, f"{username}-pass")
                page.wait_for_url(f"{url}**", timeout=hub.spawn_timeout_ms)
            widget = page.locator(ready)
            expect(widget).to_be_visible(timeout=90_000)  # the kernel ran the notebook
            return widget
        except (AssertionError, PlaywrightError):
            if attempt == ATTEMPTS:
                raise


def retried(page, scenario, *args, cleanup=None):
    """Run ``scenario(page, *args)`` again on a fresh page when it fails: other sessions' tests stop the demo
    users' servers at any moment. ``cleanup()`` undoes a failed attempt's partial work before the next one.
    The last attempt's failure is raised; its result is returned."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return scenario(page, *args)
        except (AssertionError, PlaywrightError) as exc:
            if attempt == ATTEMPTS:
                raise
            print(f"attempt {attempt} failed, retrying: {' '.join(str(exc).split())[:1500]}")
            page = page.context.new_page()
            if cleanup is not None:
                cleanup()


def click_grid_row(page, grid: str, row: int = 0) -> None:
    """Click a row of a grid (heroes_widgets.grid draws on a canvas, so the row's place comes from its sizes);
    the app then shows that row whole in ``<name>-detail``."""
    from heroes_widgets.grid import HEADER_PX, ROW_PX

    locator = page.locator(grid)
    expect(locator).to_be_visible(timeout=30_000)
    box = locator.bounding_box()
    page.mouse.click(box["x"] + 40, box["y"] + HEADER_PX + ROW_PX * row + ROW_PX / 2)
