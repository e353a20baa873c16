"""Browser test of the Data app (notebooks/data.ipynb rendered by Voila in bob's own server): bob uploads a
CSV, previews its first rows, and finds it in the input picker of the Submit app (notebooks/submit.ipynb),
which picks it for a template's file parameter.

Real stack: Keycloak login, the hub, bob's single-user server (kernel calling the HEROES API with his
JUPYTERHUB_API_TOKEN), the service and the S3 server. The file is checked and removed through the API; the
template (a renamed copy of the sklearn-train example, registered by alice, acme's org admin) is removed too.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect


from app_support import PREFIX, bearer, click_grid_row, open_app

pytestmark = pytest.mark.e2e
DATA = f"{PREFIX}/organization/data"
EXAMPLE = Path(__file__).resolve().parents[2] / "extensions/heroes_service/workflows/examples/sklearn-train.yaml"
#: what the kernel does after a click (API calls, widget updates) on a machine other tests keep busy
KERNEL_MS = 30_000


def test_bob_uploads_previews_and_picks_a_csv(page, hub, tmp_path):
    bob, alice = bearer(hub, "bob", "bob-pass"), bearer(hub, "alice", "alice-pass")
    buckets = httpx.get(f"{hub.url}{DATA}/list", headers=bob, timeout=30).json()["buckets"]
    personal = next(b["bucket"] for b in buckets if b["kind"] == "user" and b["default"])
    name = f"e2e-{secrets.token_hex(4)}.csv"
    content = "station,temperature\nbarcelona,21.5\nstuttgart,12.25\n"
    csv_file = tmp_path / name
    csv_file.write_text(content)
    template_name = f"e2e-picker-{secrets.token_hex(3)}"
    source = EXAMPLE.read_text().replace("name: sklearn-train", f"name: {template_name}", 1) \
        .replace("title: Train a scikit-learn regressor on a CSV", f"title: Picker check {template_name}", 1)
    r = httpx.post(f"{hub.url}{PREFIX}/organization/admin/workflow/template", headers=alice,
                   json={"source": source}, timeout=30)
    assert r.status_code == 201, r.text
    template = r.json()
    try:
        upload_preview_pick(page, hub, bob, personal, csv_file, content, template)
    finally:
        httpx.delete(f"{hub.url}{DATA}/bucket/{personal}", params={"key": name}, headers=bob, timeout=30)
        httpx.delete(f"{hub.url}{PREFIX}/organization/admin/workflow/template/{template['id']}", headers=alice,
                     timeout=30)


def upload_preview_pick(page, hub, bob, personal, csv_file, content, template) -> None:
    """Data app: upload, check the bytes, preview; then the Submit app's picker finds and picks the file."""
    name = csv_file.name
    label = f"{name} ({len(content)} B)"
    listing = open_app(page, hub, "data.ipynb", ".heroes-data-list select")
    with page.expect_file_chooser() as chooser:  # the upload button opens the browser's file dialog
        page.locator(".heroes-data-upload").click()
    chooser.value.set_files(str(csv_file))
    expect(page.locator(".heroes-data-status")).to_contain_text(f"uploaded {name}", timeout=60_000)
    expect(page.locator(".heroes-data-progress-label")).to_contain_text(name)
    # the object is really in bob's personal bucket, byte for byte
    got = httpx.get(f"{hub.url}{DATA}/download", params={"bucket": personal, "key": name}, headers=bob,
                    timeout=30)
    assert got.status_code == 200 and got.text == content
    # preview: first rows as a grid; a clicked row shows whole
    listing.select_option(label=label)
    page.locator(".heroes-data-preview-button").click()
    preview = page.locator(".heroes-data-csv")
    expect(preview).to_contain_text("columns: station, temperature", timeout=KERNEL_MS)
    expect(preview).to_contain_text("first 2 row(s)")
    click_grid_row(page, ".heroes-data-csv-grid-grid", 1)
    expect(page.locator(".heroes-data-csv-grid-detail")).to_contain_text("stuttgart", timeout=KERNEL_MS)
    expect(page.locator(".heroes-data-csv-grid-detail")).to_contain_text("12.25")
    # the Data app's own picker already lists it
    expect(page.locator(".heroes-picker-list select option", has_text=name)).to_have_count(1, timeout=KERNEL_MS)
    # the Submit app: the template's file parameter uses the same picker, which finds and picks the file
    open_app(page, hub, "submit.ipynb", ".heroes-submit-template select")
    page.locator(".heroes-submit-template select").select_option(
        label=f"{template['title']} (v{template['version']})")
    picker = page.locator(".heroes-submit-picker-data-list select")
    expect(picker.locator("option", has_text=name)).to_have_count(1, timeout=30_000)
    picker.select_option(label=label)
    expect(page.locator(".heroes-submit-picker-data-selected")).to_contain_text(f"s3://{personal}/{name}",
                                                                              timeout=KERNEL_MS)
