"""Browser test of the workflow apps: bob submits the pipeline example (pre -> parallel solve -> post) from the
Submit app (notebooks/submit.ipynb rendered by Voila in his own server) to alpha, then opens the Monitor app
(notebooks/monitor.ipynb) and watches the instance reach COMPLETED, with its three steps and its outputs.

Real stack end to end: Keycloak login, the hub, bob's single-user server (kernel calling the hub's HEROES
service with his token), the service, real sshd + Slurm of alpha (per-user certificate: the jobs are bob's),
the charliecloud image and S3. The template is a renamed copy of the monte-carlo-pi example published by
alice (acme's org admin) in a fixture and removed afterwards; alpha is enrolled in the hub's service if it is
not already (and then removed again).
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from heroes_dev.components.login import host_key_fingerprint, ssh_port

from app_support import PREFIX, bearer, click_grid_row, open_app

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[2] / "extensions/heroes_service/workflows/examples/monte-carlo-pi.yaml"


@pytest.fixture
def pipeline(hub, stack_settings, require):
    """The hub's service has the workflow routes, alpha enrolled for acme, and a pipeline template published."""
    for name in ("slurm-alpha", "login-alpha", "image", "s3"):
        require(name)
    spec = httpx.get(f"{hub.url}{PREFIX}/openapi.json", timeout=30).json()
    assert {f"{PREFIX}/organization/workflow/submit", f"{PREFIX}/organization/workflow/instance/{{instance_id}}"} \
        <= set(spec["paths"]), "the hub's service runs without the workflows routes: restart jupyterhub"
    alice = bearer(hub, "alice", "alice-pass")
    api = httpx.Client(base_url=f"{hub.url}{PREFIX}", headers=alice, timeout=120)
    enrolled = None
    clusters = {c["name"]: c for c in api.get("/organization/admin/cluster/").json()}
    if "alpha" not in clusters:
        r = api.post("/organization/admin/cluster/", json={
            "name": "alpha", "host": stack_settings.host, "port": ssh_port(stack_settings, "alpha"),
            "host_key_fingerprint": host_key_fingerprint(stack_settings, "alpha"), "work_dir": "heroes-work/{login}",
            "container_runtime": "charliecloud"})
        assert r.status_code in (201, 409), r.text  # 409: enrolled concurrently by another session
        if r.status_code == 201:
            enrolled = r.json()["id"]
        clusters = {c["name"]: c for c in api.get("/organization/admin/cluster/").json()}
    name = f"e2e-pipeline-{secrets.token_hex(3)}"
    source = EXAMPLE.read_text().replace("name: monte-carlo-pi", f"name: {name}", 1) \
        .replace("title: Monte Carlo pi (pre -> parallel solve -> post)", f"title: Pipeline {name}", 1)
    r = api.post("/organization/admin/workflow/template", json={"source": source})
    assert r.status_code == 201, r.text
    template = r.json()
    assert [s["name"] for s in template["spec"]["steps"]] == ["pre", "solve", "post"]
    try:
        yield {"template": template, "alpha": clusters["alpha"]}
    finally:
        api.delete(f"/organization/admin/workflow/template/{template['id']}")
        if enrolled:
            api.delete(f"/organization/admin/cluster/{enrolled}")
        api.close()


def test_bob_submits_the_pipeline_and_watches_it_complete(page, hub, pipeline):
    template, alpha = pipeline["template"], pipeline["alpha"]
    label = f"e2e {secrets.token_hex(4)}"
    # --- Submit app: the form comes from the template's parameter schema ---------------------------------
    open_app(page, hub, "submit.ipynb", ".heroes-submit-template select")
    page.locator(".heroes-submit-template select").select_option(label=f"{template['title']} (v{template['version']})")
    for param in ("samples", "tasks", "seed"):
        expect(page.locator(f".heroes-submit-param-{param}")).to_be_visible()
    tasks = page.locator(".heroes-submit-param-tasks input")
    tasks.fill("9")  # above the template's bound: the form says so before anything is sent
    tasks.press("Enter")
    expect(page.locator(".heroes-submit-param-message", has_text="must be <= 4")).to_be_visible(timeout=15_000)
    tasks.fill("2")  # alpha nodes have 2 CPUs and solve asks for 1 node
    tasks.press("Enter")
    expect(page.locator(".heroes-submit-param-message", has_text="must be")).to_have_count(0, timeout=15_000)
    page.locator(".heroes-submit-cluster select").select_option(
        label=f"alpha ({alpha['container_runtime']}, speed {alpha['relative_speed']:g})")
    page.locator(".heroes-submit-label input").fill(label)
    page.locator(".heroes-submit-button").click()
    status = page.locator(".heroes-submit-status")
    expect(status).to_contain_text("submitted to alpha", timeout=60_000)
    instance_id = re.search(r"instance ([0-9a-f-]{32,36}) submitted", status.inner_text()).group(1)
    # the Submit app follows staging and submission until Slurm has every step (job ids shown)
    expect(page.locator(".heroes-submit-state")).to_contain_text(re.compile(r"(QUEUED|RUNNING|STAGING_OUT|COMPLETED)"),
                                                                 timeout=120_000)
    expect(page.locator(".heroes-submit-state")).to_contain_text("post=", timeout=30_000)

    # --- the API agrees: bob's instance, the parameters as typed --------------------------------------------
    bob = bearer(hub, "bob", "bob-pass")
    body = httpx.get(f"{hub.url}{PREFIX}/organization/workflow/instance/{instance_id}", headers=bob, timeout=30).json()
    assert body["name"] == label and body["cluster"] == "alpha" and body["parameters"]["tasks"] == 2, body

    # --- Monitor app (the Submit app's link): live state until COMPLETED, steps and outputs -------------------
    page.locator(".heroes-submit-monitor-link").click()
    head = page.locator(".heroes-monitor-state")
    expect(head).to_contain_text(instance_id[:8], timeout=120_000)
    expect(head).to_contain_text("COMPLETED", timeout=300_000)  # polled in the kernel, no reload
    expect(page.locator(".heroes-monitor-log-step select")).to_have_value("post")  # the last step's log, unasked
    expect(page.locator(".heroes-monitor-log textarea")).to_have_value(re.compile("pi ~ 3.1"), timeout=30_000)
    click_grid_row(page, ".heroes-monitor-steps-grid", 1)  # the solve step, whole under the grid
    expect(page.locator(".heroes-monitor-steps-detail")).to_contain_text("solve", timeout=15_000)
    expect(page.locator(".heroes-monitor-steps-detail")).to_contain_text("COMPLETED")
    expect(page.locator(".heroes-monitor-outputs .heroes-monitor-output").first).to_be_visible(timeout=30_000)
    expect(page.locator(".heroes-monitor-cancel")).to_be_hidden()  # nothing left to cancel

    final = httpx.get(f"{hub.url}{PREFIX}/organization/workflow/instance/{instance_id}", headers=bob,
                      timeout=30).json()
    assert final["state"] == "COMPLETED" and [s["state"] for s in final["steps"]] == ["COMPLETED"] * 3, final
    assert final["outputs"], final
