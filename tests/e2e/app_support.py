"""What the browser tests of the Voila apps share: an API bearer token for a demo user, opening an app in
that user's own server, and clicking a row of a grid."""
from __future__ import annotations

import os
from pathlib import Path

import httpx
from playwright.sync_api import expect

PREFIX = "/services/heroes/api/v1"

# desktops (the Desktop app and the cluster JupyterLab Desktop card)
DESKTOP_SHOTS = Path(os.environ.get("HEROES_SCREENSHOTS", "/tmp/heroes-desktop-shots"))
#: alpha by default; HEROES_DESKTOP_TEST_CLUSTER=beta when other sessions' jobs fill alpha's two small nodes
DESKTOP_CLUSTER = os.environ.get("HEROES_DESKTOP_TEST_CLUSTER", "alpha")
#: distinct colours among sampled canvas pixels (a blank or black canvas has one)
COUNT_COLOURS = """(canvas) => {
  const ctx = canvas.getContext('2d'); const {width, height} = canvas;
  const data = ctx.getImageData(0, 0, width, height).data; const seen = new Set();
  for (let i = 0; i < data.length; i += 4 * 101) seen.add(data[i] << 16 | data[i + 1] << 8 | data[i + 2]);
  return seen.size; }"""


def bearer(hub, username: str, password: str) -> dict:
    """Authorization header of a Keycloak token obtained through the service's login route."""
    r = httpx.post(f"{hub.url}{PREFIX}/organization/auth/login", json={"username": username, "password": password},
                   timeout=30)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def open_app(page, hub, notebook: str, ready: str, username: str = "bob"):
    """Render ``notebook`` with Voila in the user's server (Keycloak login when asked) until the widget
    ``ready`` shows. Not retried: the suite no longer stops servers another session uses (conftest.py)."""
    hub.ensure_server(username)
    url = f"{hub.url}/user/{username}/voila/render/{notebook}"
    page.goto(url, timeout=hub.spawn_timeout_ms)  # Voila's page loads once the notebook has run
    if page.url.startswith(hub.realm_url):
        hub.submit_keycloak_login(page, username, f"{username}-pass")
        page.wait_for_url(f"{url}**", timeout=hub.spawn_timeout_ms)
    widget = page.locator(ready)
    expect(widget).to_be_visible(timeout=90_000)  # the kernel ran the notebook
    return widget


def click_grid_row(page, grid: str, row: int = 0) -> None:
    """Click a row of a grid (heroes_widgets.grid draws on a canvas, so the row's place comes from its sizes);
    the app then shows that row whole in ``<name>-detail``."""
    from heroes_widgets.grid import HEADER_PX, ROW_PX

    locator = page.locator(grid)
    expect(locator).to_be_visible(timeout=30_000)
    locator.scroll_into_view_if_needed()  # a click at coordinates below the fold hits nothing
    box = locator.bounding_box()
    page.mouse.click(box["x"] + 40, box["y"] + HEADER_PX + ROW_PX * row + ROW_PX / 2)
