"""Browser test of the portal as a newcomer uses it, clicking only (no app address is ever typed): bob opens
the hub's front page, logs in at Keycloak, lands on his start page, sees a card for every app he may use and
none for Admin, reaches every app from the start page (and back through the navigation bar), opens JupyterLab
from the bar and the Submit app from its launcher's "HEROES Submit" card, types 12.7 in a whole-number field
of the heat-diffusion form (a message, nothing submitted), submits it properly (cluster: auto) and sees COMPLETED
in the Submit app and then in the Monitor app without reloading, opens an output from the Monitor app (the
Data app previews it), sees the run's energy in the Energy app, and the run, completed, on his start page.

Real stack end to end (Keycloak, hub, bob's single-user server and kernels, the service, Slurm alpha over
SSH, S3, Debian's Chromium). What the test needs in the gateway (alpha enrolled for acme, heat-diffusion
published with energy on) is the demo data of ``make demo``; where it is missing the fixture sets it up
through the API as alice and removes it afterwards.

Screenshots of each page land in ``$HEROES_SCREENSHOTS`` (default: /tmp/heroes-portal-screenshots).
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from heroes_dev.components.login import host_key_fingerprint, ssh_port
from app_support import PREFIX, bearer, click_grid_row

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[2] / "extensions/heroes_service/workflows/examples/heat-diffusion.yaml"
SHOTS = Path(os.environ.get("HEROES_SCREENSHOTS", "/tmp/heroes-portal-screenshots"))
KERNEL_MS = 120_000  # an app's page shows once its kernel has run the notebook (2 busy cores)
RUN_MS = 300_000


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def shows(page, selector: str, name: str, timeout: float = KERNEL_MS) -> None:
    """``selector`` becomes visible; if not, a screenshot ``failed-<name>`` shows what the page showed."""
    try:
        expect(page.locator(selector).first).to_be_visible(timeout=timeout)
    except AssertionError:
        shot(page, f"failed-{name}")
        raise


@pytest.fixture
def heat(hub, stack_settings, require):
    """alpha enrolled for acme and heat-diffusion published (the demo data's, else made here and removed)."""
    for name in ("slurm-alpha", "login-alpha", "image", "s3"):
        require(name)
    api = httpx.Client(base_url=f"{hub.url}{PREFIX}", headers=bearer(hub, "alice", "alice-pass"), timeout=120)
    made: list[str] = []
    if "alpha" not in {c["name"] for c in api.get("/organization/admin/cluster/").json()}:
        r = api.post("/organization/admin/cluster/", json={
            "name": "alpha", "host": stack_settings.host, "port": ssh_port(stack_settings, "alpha"),
            "host_key_fingerprint": host_key_fingerprint(stack_settings, "alpha"),
            "work_dir": "heroes-work/{login}", "container_runtime": "charliecloud"})
        assert r.status_code in (201, 409), r.text  # 409: enrolled meanwhile by another session
        if r.status_code == 201:
            made.append(f"/organization/admin/cluster/{r.json()['id']}")
    templates = [t for t in api.get("/organization/workflow/template").json() if t["name"] == "heat-diffusion"]
    if templates:
        template = templates[0]
    else:
        r = api.post("/organization/admin/workflow/template", json={"source": EXAMPLE.read_text()})
        assert r.status_code == 201, r.text
        template = r.json()
        made.insert(0, f"/organization/admin/workflow/template/{template['id']}")
    try:
        yield template
    finally:
        for path in made:
            api.delete(path)
        api.close()


def open_start_page(page, hub):
    """From the hub's front page: Keycloak login, then the user's start page (the hub's default URL)."""
    hub.ensure_gateway_server("bob")  # what a login starts, unless another test left it on a cluster
    hub.login(page, "bob")
    page.wait_for_url("**/user/bob/voila/render/welcome.ipynb**", timeout=hub.spawn_timeout_ms * 2)  # a busy machine
    shows(page, ".heroes-welcome-cards", "start-page")
    return page


def submit_from_the_launcher(page):
    """The bar's JupyterLab link, then the launcher's "HEROES Submit" card: the Submit app in a tab of its own."""
    page.locator(".heroes-nav-lab").click()
    page.wait_for_url("**/user/bob/lab**", timeout=KERNEL_MS)
    card = page.locator(".jp-LauncherCard", has_text="HEROES Submit")
    if not card.is_visible():  # a workspace from an earlier visit may have closed the launcher
        page.locator("#jp-main-dock-panel").click()
        page.keyboard.press("Control+Shift+L")
    expect(card).to_be_visible(timeout=60_000)
    shot(page, "03-jupyterlab-launcher")
    with page.context.expect_page() as opened:
        card.click()
    submit = opened.value
    expect(submit.locator(".heroes-submit-template select")).to_be_visible(timeout=KERNEL_MS)
    return submit


def go(page, where: str, ready: str) -> None:
    """Click ``where`` (a card or a bar link) and wait for the app's kernel to show ``ready``."""
    page.locator(where).first.click()
    shows(page, ready, where.strip(".").replace(" ", "_"))


def test_bob_finds_every_app_and_runs_heat_diffusion_to_its_energy(page, hub, heat):
    bob = httpx.Client(base_url=f"{hub.url}{PREFIX}", headers=bearer(hub, "bob", "bob-pass"), timeout=60)
    start = open_start_page(page, hub)
    # --- the start page: a card per app bob may use, none for Admin; what is ready ----------------------
    expect(start.locator(".heroes-greeting")).to_contain_text("Welcome, bob!")
    for key in ("submit", "monitor", "data", "energy", "decision"):
        expect(start.locator(f".heroes-card-{key}")).to_be_visible()
        expect(start.locator(f".heroes-nav-{key}")).to_be_visible()
    expect(start.locator(".heroes-card-admin")).to_have_count(0)
    expect(start.locator(".heroes-nav-admin")).to_have_count(0)
    expect(start.locator(".heroes-welcome-templates")).to_contain_text(heat["title"])
    expect(start.locator(".heroes-welcome-cluster[data-name='alpha']")).to_contain_text("ready", timeout=90_000)
    shot(start, "01-start-page")
    # --- every app from the start page (and back through the bar) -----------------------------------------
    for key, ready in (("data", ".heroes-data-list"), ("energy", ".heroes-energy-refresh"),
                       ("decision", ".heroes-decision-template"), ("monitor", ".heroes-monitor-refresh")):
        go(start, f".heroes-card-{key}", ready)
        expect(start.locator(".heroes-nav-current")).to_contain_text(key.capitalize())
        shot(start, f"02-{key}")
        go(start, ".heroes-nav-welcome", ".heroes-welcome-cards")
    go(start, ".heroes-card-submit", ".heroes-submit-template select")
    expect(start.locator(".heroes-nav-current")).to_contain_text("Submit")
    # --- JupyterLab's launcher links the apps too: Submit from its card ----------------------------------------
    start = submit_from_the_launcher(start)
    # --- Submit: 12.7 in a whole-number field is refused with a message; nothing is submitted -------------
    start.locator(".heroes-submit-template select").select_option(label=f"{heat['title']} (v{heat['version']})")
    label = f"portal {secrets.token_hex(3)}"
    start.locator(".heroes-submit-label input").fill(label)
    points = start.locator(".heroes-submit-param-points input")
    expect(points).to_have_value("200")
    points.fill("12.7")
    points.press("Enter")
    expect(start.locator(".heroes-submit-param-message", has_text="not a whole number")).to_be_visible(
        timeout=15_000)
    expect(points).to_have_value("12.7")  # nothing typed is changed
    start.locator(".heroes-submit-button").click()
    expect(start.locator(".heroes-submit-status")).to_contain_text("nothing was submitted", timeout=15_000)
    shot(start, "04-submit-refused")
    # other sessions run workflows as bob too: nothing under this label, rather than nothing new at all
    assert not [i for i in bob.get("/organization/workflow/instance").json() if i["name"] == label]
    # --- Submit properly: the state follows to COMPLETED without a reload ----------------------------------
    points.fill("64")
    points.press("Enter")
    expect(start.locator(".heroes-submit-param-message", has_text="whole")).to_have_count(0, timeout=15_000)
    # the cluster stays "auto (let the gateway choose)", as a newcomer leaves it
    expect(start.locator(".heroes-submit-cluster select")).to_have_value(re.compile("^auto"))
    start.locator(".heroes-submit-button").click()
    status = start.locator(".heroes-submit-status")
    expect(status).to_contain_text("submitted to", timeout=60_000)
    instance_id = re.search(r"instance ([0-9a-f]{32}) submitted", status.inner_text()).group(1)
    expect(start.locator(".heroes-submit-state")).to_contain_text("COMPLETED", timeout=RUN_MS)
    shot(start, "05-submit-completed")
    # --- Monitor (the Submit app's link): COMPLETED, the last step's log, an output opens ---------------------
    go(start, ".heroes-submit-monitor-link", ".heroes-monitor-state")
    expect(start.locator(".heroes-monitor-state")).to_contain_text(instance_id[:8])
    expect(start.locator(".heroes-monitor-state")).to_contain_text("COMPLETED", timeout=60_000)
    expect(start.locator(".heroes-monitor-log textarea")).to_have_value(re.compile("max_error="), timeout=30_000)
    output = start.locator(".heroes-monitor-output", has_text="outputs/summary.txt")
    expect(output).to_be_visible(timeout=30_000)
    shot(start, "06-monitor")
    with start.context.expect_page() as opened:
        output.locator(".heroes-monitor-output-open").click()
    data = opened.value  # the Data app, in the run's outputs folder, previewing the file
    expect(data.locator(".heroes-data-text")).to_contain_text("max_error=", timeout=KERNEL_MS)
    expect(data.locator(".heroes-data-path")).to_contain_text(f"workflows/{instance_id}/outputs/")
    shot(data, "07-output-opened")
    data.close()
    # --- Energy: the run's step, its energy in kWh ----------------------------------------------------------
    go(start, ".heroes-nav-energy", ".heroes-energy-instance input")
    start.locator(".heroes-energy-instance input").fill(instance_id)
    start.locator(".heroes-energy-refresh").click()
    expect(start.locator(".heroes-energy-status")).to_contain_text("1 step(s)", timeout=60_000)
    click_grid_row(start, ".heroes-energy-steps-grid", 0)
    detail = start.locator(".heroes-energy-steps-detail")
    expect(detail).to_contain_text(instance_id, timeout=15_000)
    expect(detail).to_contain_text("kWh")
    expect(detail).to_contain_text("heat-diffusion")
    shot(start, "08-energy")
    # --- back home: the run, completed, among the recent ones; this month's energy counted -----------------
    go(start, ".heroes-nav-welcome", ".heroes-welcome-cards")
    expect(start.locator(f".heroes-welcome-run[data-id='{instance_id}']")).to_contain_text("COMPLETED")
    expect(start.locator(".heroes-welcome-energy")).to_contain_text("kWh")
    shot(start, "09-home-after")
    body = bob.get(f"/organization/workflow/instance/{instance_id}").json()
    assert body["state"] == "COMPLETED" and body["name"] == label and body["parameters"]["points"] == 64, body
    bob.close()
