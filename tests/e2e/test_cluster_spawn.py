"""In the browser: bob opens a new named server, chooses "cluster alpha, 1 core, 10 minutes" in the spawn
form, and lands on his start page (Voila) served by his Slurm job on an alpha node, then in JupyterLab
there (Slurm's own squeue says so); stopping the server removes the job.

The default server stays on the gateway without a form (test_login.py); the form belongs to named servers.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from spawner_support import SERVER_JOB, ensure_enrolled, jobs_named, wait_until  # noqa: E402

pytestmark = pytest.mark.e2e
SERVER = "alpha-lab"


@pytest.fixture
def alpha(hub, require, stack_settings):
    for name in ("slurm-alpha", "login-alpha"):
        require(name)
    ensure_enrolled(stack_settings, "alpha")
    hub.api.delete(f"/users/bob/servers/{SERVER}")
    wait_until("bob's old alpha server to stop",
               lambda: SERVER not in hub.user("bob").get("servers", {}), 60)
    yield stack_settings
    hub.api.delete(f"/users/bob/servers/{SERVER}")


def test_bob_starts_jupyterlab_on_alpha_from_the_form(page, hub, alpha):
    hub.login(page, "bob", next_path=f"/hub/spawn/bob/{SERVER}")
    page.wait_for_url(f"**/hub/spawn/bob/{SERVER}**")
    page.select_option("#heroes-target", "cluster:alpha")
    page.select_option("#heroes-partition", "compute")
    page.fill("#heroes-cores", "1")
    page.fill("#heroes-minutes", "10")
    page.fill("#heroes-memory", "512")
    expect(page.locator("#heroes-estimates")).to_contain_text("alpha")
    page.locator("form input[type=submit], form button[type=submit]").first.click()

    # the start page (Voila), its kernel on the node, then JupyterLab from its navigation bar
    page.wait_for_url(f"**/user/bob/{SERVER}/voila/render/welcome.ipynb**", timeout=hub.spawn_timeout_ms * 2)
    button = page.locator(".heroes-welcome-refresh")
    expect(button).to_be_visible(timeout=hub.spawn_timeout_ms)
    expect(page.locator(".heroes-greeting")).to_contain_text("Welcome, bob!")
    button.click()
    expect(page.locator(".heroes-welcome-status")).to_contain_text("checked again at", timeout=60_000)
    page.locator(".heroes-nav-lab").click()
    page.wait_for_url(f"**/user/bob/{SERVER}/lab**", timeout=hub.spawn_timeout_ms)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=hub.spawn_timeout_ms)

    state = hub.user("bob")["servers"][SERVER]["state"]
    jobs = [j for j in jobs_named(alpha, "alpha", SERVER_JOB) if j["id"] == state["job_id"]]
    assert len(jobs) == 1, jobs  # a cluster job of the service, named heroes.jupyterlab.<id>
    assert jobs[0]["user"] == "bob" and jobs[0]["state"] == "RUNNING" and jobs[0]["node"].startswith("alpha-n")
    assert state["cluster"] == "alpha" and jobs[0]["name"] == f"heroes.jupyterlab.{state['cluster_job']}"

    # stop from the hub's home page: the job leaves the queue
    page.goto(f"{hub.url}/hub/home")
    page.locator(f"tr[data-server-name='{SERVER}'] .stop-server").click()
    wait_until("the server to stop", lambda: SERVER not in hub.user("bob").get("servers", {}), 60)
    assert wait_until("the job to leave the queue", lambda: not [
        j for j in jobs_named(alpha, "alpha", SERVER_JOB) if j["id"] == state["job_id"]], 30)
