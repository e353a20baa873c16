"""Browser tests of the Decision & cost app (notebooks/decision.ipynb rendered by Voila in bob's own server):
bob opens it for a template, switches the policy, and sees the choice and the Pareto plot change; and of the
right-sizing shown inline in the Submit app: bob accepts it and the service applies it to his submission.

Real stack end to end: Keycloak login, the hub, bob's kernel calling the hub's HEROES service with his token,
the decision API estimating on the real Slurm clusters. alice (acme's org admin) sets the scene through the
API in a fixture and removes it afterwards: a renamed copy of the monte-carlo-pi example, and two clusters of
her own enrolled on the login nodes of alpha and beta with different price models and power profiles — a
cheap, power-hungry one and a dear, frugal one — so that the cost and the energy policies must choose
differently (finish times are no lever: with no run of this template yet both get the same predicted run
time, and the queues' waits depend on what else runs). The app is limited to those two (its cluster
selector), so clusters other sessions enrol change nothing here.
"""
from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from heroes_dev.components.login import host_key_fingerprint, ssh_port

from app_support import PREFIX, bearer, click_grid_row

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[2] / "extensions/heroes_service/workflows/examples/monte-carlo-pi.yaml"
#: the kernel asks the service again and plotly redraws: seconds on a busy 2-core machine
UPDATE_MS = 60_000


def enroll(api: httpx.Client, stack_settings, name: str, login_of: str, price: dict, power: dict,
           speed: float) -> dict:
    """One of alice's clusters on the login node of ``login_of``, with its own price model and speed."""
    r = api.post("/organization/admin/cluster/", json={
        "name": name, "description": f"e2e decision test on {login_of}'s login node", "host": stack_settings.host,
        "port": ssh_port(stack_settings, login_of), "host_key_fingerprint": host_key_fingerprint(stack_settings,
                                                                                                 login_of),
        "work_dir": "heroes-work/{login}", "container_runtime": "charliecloud", "price_model": price,
        "energy_profile": power, "relative_speed": speed})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def scene(hub, stack_settings, require):
    """A template and two priced clusters for acme, all removed afterwards; the policies' titles."""
    for name in ("slurm-alpha", "login-alpha", "slurm-beta", "login-beta"):
        require(name)
    spec = httpx.get(f"{hub.url}{PREFIX}/openapi.json", timeout=30).json()
    assert {f"{PREFIX}/organization/decision/decide", f"{PREFIX}/organization/decision/policies"} \
        <= set(spec["paths"]), "the hub's service runs without the decision routes: restart jupyterhub"
    alice = bearer(hub, "alice", "alice-pass")
    api = httpx.Client(base_url=f"{hub.url}{PREFIX}", headers=alice, timeout=120)
    tag = secrets.token_hex(3)
    made: list[str] = []
    template = None
    try:
        cheap = enroll(api, stack_settings, f"e2e-cheap-{tag}", "alpha",
                       price={"currency": "EUR", "per_core_hour": 0.01, "per_node_hour": 0.0},
                       power={"idle_watts_per_node": 400, "watts_per_core": 50, "pue": 1.8}, speed=1.0)
        made.append(cheap["id"])
        frugal = enroll(api, stack_settings, f"e2e-frugal-{tag}", "beta",
                        price={"currency": "EUR", "per_core_hour": 5.0, "per_node_hour": 20.0},
                        power={"idle_watts_per_node": 40, "watts_per_core": 5, "pue": 1.1}, speed=1.0)
        made.append(frugal["id"])
        name = f"e2e-decision-{tag}"
        source = EXAMPLE.read_text().replace("name: monte-carlo-pi", f"name: {name}", 1) \
            .replace("title: Monte Carlo pi (pre -> parallel solve -> post)", f"title: Decide {name}", 1)
        r = api.post("/organization/admin/workflow/template", json={"source": source})
        assert r.status_code == 201, r.text
        template = r.json()
        policies = {p["name"]: p for p in api.get("/organization/decision/policies").json()["policies"]}
        yield {"template": template, "cheap": cheap["name"], "frugal": frugal["name"], "policies": policies}
    finally:
        if template:
            api.delete(f"/organization/admin/workflow/template/{template['id']}")
        for cluster_id in made:
            api.delete(f"/organization/admin/cluster/{cluster_id}")
        api.close()


def plot_data(page) -> dict:
    """What plotly drew in the page: each trace's points, by trace name, and the title the user reads."""
    graph = page.locator(".heroes-decision-plot .js-plotly-plot")
    traces = graph.evaluate("g => g.data.map(t => ({name: t.name, x: Array.from(t.x || []),"
                            " y: Array.from(t.y || []), text: Array.from(t.text || []),"
                            " marker_color: Array.isArray(t.marker.color) || ArrayBuffer.isView(t.marker.color)"
                            " ? Array.from(t.marker.color) : []}))")
    return {t["name"]: t for t in traces} | {"title": page.locator(".heroes-decision-plot .gtitle").text_content()}


def choose_policy(page, title: str, cluster: str, policy: str) -> dict:
    """Pick a policy in the app; wait until the choice, the table and the plot say ``cluster``."""
    page.locator(".heroes-decision-policy select").select_option(label=title)
    choice = page.locator(".heroes-decision-choice")
    expect(choice).to_contain_text(f"Policy {policy} chooses {cluster}", timeout=UPDATE_MS)
    click_grid_row(page, ".heroes-decision-table-grid", 0)  # the chosen cluster comes first, starred
    expect(page.locator(".heroes-decision-table-detail")).to_contain_text(f"{cluster} ★ chosen", timeout=UPDATE_MS)
    expect(page.locator(".heroes-decision-plot .gtitle")).to_have_text(f"{policy}: chosen {cluster}",
                                                                      timeout=UPDATE_MS)
    expect(page.locator(".heroes-decision-plot .ytitle")).to_have_text("cost (EUR)")
    return plot_data(page)


def see_decisions(page, hub, scene) -> None:
    template, cheap, frugal, policies = scene["template"], scene["cheap"], scene["frugal"], scene["policies"]
    hub.ensure_server("bob")
    url = f"{hub.url}/user/bob/voila/render/decision.ipynb"
    page.goto(url, timeout=hub.spawn_timeout_ms)  # Voila's page loads once the notebook has run
    if page.url.startswith(hub.realm_url):
        hub.submit_keycloak_login(page, "bob", "bob-pass")
        page.wait_for_url(f"{url}**", timeout=hub.spawn_timeout_ms)
    expect(page.locator(".heroes-decision-template select")).to_be_visible(timeout=90_000)  # the kernel ran it
    page.locator(".heroes-decision-template select").select_option(
        label=f"{template['title']} (v{template['version']})")
    expect(page.locator(".heroes-decision-param-tasks")).to_be_visible(timeout=UPDATE_MS)  # the template's form
    page.locator(".heroes-decision-clusters select").select_option(label=[cheap, frugal])
    expect(page.locator(".heroes-decision-table-count")).to_contain_text("2 row(s)", timeout=UPDATE_MS)
    detail = page.locator(".heroes-decision-table-detail")
    for row in (0, 1):  # each candidate's cost, whole under the grid once its row is clicked
        click_grid_row(page, ".heroes-decision-table-grid", row)
        expect(detail).to_contain_text("EUR", timeout=UPDATE_MS)

    by_cost = choose_policy(page, policies["cost"]["title"], cheap, "cost")
    assert by_cost["chosen"]["text"] == [cheap], by_cost
    assert {label.split(" ")[0] for label in by_cost["candidates"]["text"]} == {cheap, frugal}, by_cost
    expect(detail).to_contain_text(f"{cheap} ★ chosen")
    expect(detail).to_contain_text("est.")  # energy from the power profile
    expect(page.locator(".heroes-decision-rightsizing")).to_contain_text("recommended")

    by_energy = choose_policy(page, policies["energy"]["title"], frugal, "energy")
    assert by_energy["chosen"]["text"] == [frugal], by_energy
    # the star moved to the dearer point, which is the one drawn with less energy
    assert by_energy["chosen"]["y"][0] > by_cost["chosen"]["y"][0], (by_cost, by_energy)
    energy_of = dict(zip(by_energy["candidates"]["text"], by_energy["candidates"]["marker_color"]))
    assert energy_of[f"{frugal} (est.)"] < energy_of[f"{cheap} (est.)"], by_energy
    assert by_energy["title"] != by_cost["title"]


def test_bob_switches_policy_and_sees_the_choice_and_plot_change(page, hub, scene):
    see_decisions(page, hub, scene)


def wait_final(hub, headers: dict, instance_id: str, timeout: float = 240.0) -> dict:
    """The instance once it has ended (so the fixture may remove its cluster)."""
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{hub.url}{PREFIX}/organization/workflow/instance/{instance_id}", headers=headers,
                         timeout=30).json()
        if body["state"] in ("COMPLETED", "FAILED", "CANCELLED") or time.monotonic() > deadline:
            return body
        time.sleep(2)


def accept_rightsizing_in_submit(page, hub, scene) -> str:
    """Submit app: pick the template and the cheap cluster, see the recommendation, accept it, submit."""
    template, cheap = scene["template"], scene["cheap"]
    hub.ensure_server("bob")
    url = f"{hub.url}/user/bob/voila/render/submit.ipynb"
    page.goto(url, timeout=hub.spawn_timeout_ms)
    if page.url.startswith(hub.realm_url):
        hub.submit_keycloak_login(page, "bob", "bob-pass")
        page.wait_for_url(f"{url}**", timeout=hub.spawn_timeout_ms)
    expect(page.locator(".heroes-submit-template select")).to_be_visible(timeout=90_000)
    page.locator(".heroes-submit-template select").select_option(label=f"{template['title']} (v{template['version']})")
    advice = page.locator(".heroes-submit-rightsizing")
    expect(advice).to_contain_text("auto would choose", timeout=UPDATE_MS)  # cluster "auto" first
    page.locator(".heroes-submit-cluster select").select_option(label=f"{cheap} (charliecloud, speed 1)")
    expect(advice).to_contain_text(f"on {cheap}:", timeout=UPDATE_MS)
    expect(advice).to_contain_text("Right-sizing (no history yet")
    expect(advice).to_contain_text("time limit 25 min (template 25 min), memory 256 MiB")
    page.locator(".heroes-submit-rightsizing-accept input").check()
    page.locator(".heroes-submit-label input").fill(f"e2e rightsizing {secrets.token_hex(3)}")
    page.locator(".heroes-submit-button").click()
    status = page.locator(".heroes-submit-status")
    expect(status).to_contain_text(f"submitted to {cheap}", timeout=60_000)
    return re.search(r"instance ([0-9a-f-]{32,36}) submitted", status.inner_text()).group(1)


def test_bob_accepts_the_rightsizing_inline_in_the_submit_app(page, hub, scene):
    bob = bearer(hub, "bob", "bob-pass")
    instance_id = accept_rightsizing_in_submit(page, hub, scene)
    try:
        body = httpx.get(f"{hub.url}{PREFIX}/organization/workflow/instance/{instance_id}", headers=bob,
                         timeout=30).json()
        # the service applied what bob accepted: each step's --time/--mem, said in the instance's events
        accepted = [e["detail"] for e in body["events"] if "right-sizing accepted" in e["detail"]]
        assert accepted and "solve: --time 15->15 min, --mem 256->256M" in accepted[0], body["events"]
        assert body["cluster"] == scene["cheap"], body
    finally:
        httpx.delete(f"{hub.url}{PREFIX}/organization/workflow/instance/{instance_id}", headers=bob, timeout=60)
        final = wait_final(hub, bob, instance_id)
        assert final["state"] in ("COMPLETED", "FAILED", "CANCELLED"), final["state"]
