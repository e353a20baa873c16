"""Browser test of the Data app (notebooks/data.ipynb rendered by Voila in bob's own server): bob uploads a
CSV, previews its first rows, and finds it in the workflow input picker, which picks it.

Real stack: Keycloak login, the hub, bob's single-user server (kernel calling the HEROES API with his
JUPYTERHUB_API_TOKEN), the service and the S3 server. The file is checked and removed through the API.
"""
from __future__ import annotations

import secrets
import time

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e
PREFIX = "/services/heroes/api/v1"
DATA = f"{PREFIX}/organization/data"


def bearer(hub, username: str, password: str) -> dict:
    r = httpx.post(f"{hub.url}{PREFIX}/organization/auth/login", json={"username": username, "password": password},
                   timeout=30)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def wait_stopped(hub, name: str, timeout: float = 60.0) -> None:
    """Until the hub reports no server (a stop is asynchronous; a login meanwhile lands on 'stopping')."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = hub.user(name).get("servers", {}).get("")
        if not server:
            return
        time.sleep(0.5)
    raise AssertionError(f"{name}'s server did not stop in {timeout:.0f}s")


def test_bob_uploads_previews_and_picks_a_csv(page, hub, tmp_path):
    bob = bearer(hub, "bob", "bob-pass")
    buckets = httpx.get(f"{hub.url}{DATA}/list", headers=bob, timeout=30).json()["buckets"]
    personal = next(b["bucket"] for b in buckets if b["kind"] == "user" and b["default"])
    name = f"e2e-{secrets.token_hex(4)}.csv"
    content = "station,temperature\nbarcelona,21.5\nstuttgart,12.25\n"
    csv_file = tmp_path / name
    csv_file.write_text(content)
    try:
        hub.stop_server("bob")  # a fresh server gets today's dashboards (copied at spawn) and widgets
        wait_stopped(hub, "bob")
        hub.login(page, "bob")
        hub.expect_jupyterlab(page, "bob")
        response = page.goto(f"{hub.url}/user/bob/voila/render/data.ipynb")
        assert response is not None and response.status == 200
        listing = page.locator(".heroes-data-list select")
        expect(listing).to_be_visible(timeout=hub.spawn_timeout_ms)  # the kernel ran the notebook
        with page.expect_file_chooser() as chooser:  # the upload button opens the browser's file dialog
            page.locator(".heroes-data-upload").click()
        chooser.value.set_files(str(csv_file))
        expect(page.locator(".heroes-data-status")).to_contain_text(f"uploaded {name}", timeout=60_000)
        expect(page.locator(".heroes-data-progress-label")).to_contain_text(name)
        # the object is really in bob's personal bucket, byte for byte
        got = httpx.get(f"{hub.url}{DATA}/download", params={"bucket": personal, "key": name}, headers=bob,
                        timeout=30)
        assert got.status_code == 200 and got.text == content
        # preview: first rows as a table
        label = f"{name} ({len(content)} B)"
        listing.select_option(label=label)
        page.locator(".heroes-data-preview-button").click()
        preview = page.locator(".heroes-data-csv")
        expect(preview).to_contain_text("temperature")
        expect(preview.locator("td", has_text="stuttgart")).to_be_visible()
        expect(preview.locator("td", has_text="12.25")).to_be_visible()
        # the workflow input picker lists it and picks it
        picker = page.locator(".heroes-picker-list select")
        expect(picker.locator("option", has_text=name)).to_have_count(1)
        picker.select_option(label=label)
        expect(page.locator(".heroes-picker-selected")).to_contain_text(f"s3://{personal}/{name}")
    finally:
        httpx.delete(f"{hub.url}{DATA}/bucket/{personal}", params={"key": name}, headers=bob, timeout=30)
