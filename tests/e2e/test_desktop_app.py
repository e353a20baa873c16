"""Browser tests of the Desktop app (notebooks/desktop.ipynb in Voila) against the live hub and its service.

bob starts a desktop on alpha from the app; the page embeds noVNC connected through the gateway's websocket
bridge (ticket in the subprotocol, SSH to alpha's login node, srun into the job, the 0600 Unix socket of a
real TigerVNC server); the canvas shows the desktop; what he types in its terminal runs on the node as bob
(a file appears in his cluster home, checked over SSH); "End" cancels the job (gone from squeue within one
poll); while it runs its row shows the energy the collector on the node measured. alice watches a desktop
bob shared with her, view only: she sees it, her typing never arrives.
"""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import paramiko
import pytest
from playwright.sync_api import expect

from heroes_dev.components.login import host_key_fingerprint, ssh_port, user_key_path
from heroes_dev.components.slurm import slurm_conf_path

from app_support import COUNT_COLOURS, DESKTOP_CLUSTER as CLUSTER, DESKTOP_SHOTS as SHOTS, PREFIX, bearer, open_app

pytestmark = pytest.mark.e2e


@pytest.fixture
def alpha(hub, stack_settings, require):
    """The hub's service serves desktops and has alpha enrolled for acme."""
    for name in (f"slurm-{CLUSTER}", f"login-{CLUSTER}", "desktop"):
        require(name)
    spec = httpx.get(f"{hub.url}{PREFIX}/openapi.json", timeout=30).json()
    assert f"{PREFIX}/organization/visualization/session" in spec["paths"], \
        "the hub's service runs without the visualization routes: restart jupyterhub"
    alice = httpx.Client(base_url=f"{hub.url}{PREFIX}", headers=bearer(hub, "alice", "alice-pass"), timeout=120)
    if CLUSTER not in {c["name"] for c in alice.get("/organization/admin/cluster/").json()}:
        r = alice.post("/organization/admin/cluster/", json={
            "name": CLUSTER, "host": stack_settings.host, "port": ssh_port(stack_settings, CLUSTER),
            "host_key_fingerprint": host_key_fingerprint(stack_settings, CLUSTER), "work_dir": "heroes-work/{login}",
            "container_runtime": "charliecloud"})
        assert r.status_code in (201, 409), r.text
    bob = httpx.Client(base_url=f"{hub.url}{PREFIX}", headers=bearer(hub, "bob", "bob-pass"), timeout=120)
    yield {"bob": bob, "alice": alice}
    for d in bob.get("/organization/visualization/session", params={"live": True}).json():
        bob.delete(f"/organization/visualization/session/{d['id']}")


def squeue_ids(stack) -> set[str]:
    env = dict(os.environ, SLURM_CONF=str(slurm_conf_path(stack, CLUSTER)))
    out = subprocess.run(["squeue", "--noheader", "-o", "%i"], env=env, capture_output=True, text=True, check=True)
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def bob_has(stack, path: str) -> bool:
    """Over SSH as bob (his own key), as he would look himself."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - the test's own loopback sshd
    client.connect(stack.host, port=ssh_port(stack, CLUSTER), username="bob",
                   key_filename=str(user_key_path(stack, "bob")), look_for_keys=False, allow_agent=False)
    with client:
        _i, out, _e = client.exec_command(f"test -e {path} && echo yes || echo no")
        return out.read().decode().strip() == "yes"


def connected_canvas(page, timeout: float = 150_000):
    frame_element = page.locator("iframe.heroes-desktop-frame")
    expect(frame_element).to_be_visible(timeout=timeout)
    frame = page.frame_locator("iframe.heroes-desktop-frame")
    expect(frame.locator("body")).to_have_attribute("data-state", "connected", timeout=60_000)
    canvas = frame.locator("#screen canvas")
    expect(canvas).to_be_visible()
    deadline = time.monotonic() + 30
    while canvas.evaluate(COUNT_COLOURS) <= 2:  # the first frame arrives right after connect
        assert time.monotonic() < deadline, "the desktop never drew more than a blank canvas"
        time.sleep(0.5)
    return frame_element, canvas


def type_into(page, canvas, text: str) -> None:
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + 200, box["y"] + 150)  # the terminal sits at the desktop's top left
    time.sleep(0.5)
    page.keyboard.type(text, delay=30)
    page.keyboard.press("Enter")


def test_bob_starts_types_and_ends_a_desktop(page, hub, alpha, stack_settings):
    SHOTS.mkdir(parents=True, exist_ok=True)
    open_app(page, hub, "desktop.ipynb", ".heroes-desktop-start", "bob")
    page.locator(".heroes-desktop-cluster select").select_option(CLUSTER)
    page.locator(".heroes-desktop-memory input").fill("256")
    page.locator(".heroes-desktop-minutes input").fill("15")
    page.locator(".heroes-desktop-start").click()
    expect(page.locator(".heroes-desktop-status")).to_contain_text("submitted as job", timeout=60_000)
    job_id = re.search(r"job (\d+)", page.locator(".heroes-desktop-status").inner_text()).group(1)
    frame_element, canvas = connected_canvas(page)
    canvas.screenshot(path=str(SHOTS / "bob-desktop.png"))
    page.screenshot(path=str(SHOTS / "desktop-app.png"), full_page=True)
    src = frame_element.get_attribute("src")
    ticket = re.search(r"ticket=([0-9a-f]+)", src).group(1)

    proof = f"browser-proof-{secrets.token_hex(4)}"
    type_into(page, canvas, f"touch $HOME/{proof}")
    deadline = time.monotonic() + 30
    while not bob_has(stack_settings, f"/home/bob/{proof}"):
        assert time.monotonic() < deadline, "what bob typed in the browser never ran on the node"
        time.sleep(1)
    canvas.screenshot(path=str(SHOTS / "bob-desktop-typed.png"))
    # the row's energy is the energy collector's on the node (it samples every 5 s, the service reads it every 10 s)
    energy = page.locator(".heroes-desktop-row .heroes-desktop-energy").first
    expect(energy).to_contain_text("(collector", timeout=60_000)
    assert re.search(r"\d+\.\d+ k?Wh \(collector(, measured|; CPU power estimated: no RAPL on the node)\)",
                     energy.inner_text()), energy.inner_text()
    energy.screenshot(path=str(SHOTS / "desktop-app-energy.png"))

    assert job_id in squeue_ids(stack_settings)
    page.locator(".heroes-desktop-end").first.click()
    expect(page.locator(".heroes-desktop-status")).to_contain_text("ended", timeout=30_000)
    time.sleep(2)  # one poll of the app and the service
    assert job_id not in squeue_ids(stack_settings)
    # the one-time ticket never reached a log of the stack (proxy, hub, service)
    logs = Path(stack_settings.logs)
    for log in logs.glob("*.log"):
        assert ticket not in log.read_text(errors="replace"), f"ticket found in {log}"


def test_alice_watches_bobs_shared_desktop_view_only(page, hub, alpha, stack_settings):
    SHOTS.mkdir(parents=True, exist_ok=True)
    bob = alpha["bob"]
    made = bob.post("/organization/visualization/session",
                    json={"cluster": CLUSTER, "memory_mb": 256, "minutes": 15}).json()
    deadline = time.monotonic() + 120
    while not bob.get(f"/organization/visualization/session/{made['id']}").json()["ready"]:
        assert time.monotonic() < deadline
        time.sleep(1)
    share = bob.post(f"/organization/visualization/session/{made['id']}/share",
                     json={"viewer": "alice", "minutes": 10}).json()
    open_app(page, hub, f"desktop.ipynb?share={share['id']}", ".heroes-desktop-start", "alice")
    _frame, canvas = connected_canvas(page)
    frame = page.frame_locator("iframe.heroes-desktop-frame")
    expect(frame.locator("#mode")).to_have_text("view only")
    proof = f"alice-browser-{secrets.token_hex(4)}"
    type_into(page, canvas, f"touch $HOME/{proof}")
    time.sleep(3)
    canvas.screenshot(path=str(SHOTS / "alice-view-only.png"))
    assert not bob_has(stack_settings, f"/home/bob/{proof}"), "a view-only watcher typed into bob's desktop"
    bob.delete(f"/organization/visualization/session/{made['id']}")


def test_visualize_a_finished_heat_diffusion_run(page, hub, alpha, stack_settings):
    """bob's finished heat-diffusion run: the Monitor app links "Visualize"; the Desktop app opens a desktop in
    the run's own folder on its cluster, with its outputs listed in a terminal."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    bob = alpha["bob"]
    r = bob.post("/organization/workflow/submit", json={"template": "heat-diffusion", "cluster": CLUSTER})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    deadline = time.monotonic() + 300
    while (run := bob.get(f"/organization/workflow/instance/{iid}").json())["state"] not in (
            "COMPLETED", "FAILED", "CANCELLED"):
        assert time.monotonic() < deadline, run
        time.sleep(2)
    assert run["state"] == "COMPLETED", run
    open_app(page, hub, f"monitor.ipynb?instance={iid}", ".heroes-monitor-refresh", "bob")
    link = page.locator(".heroes-monitor-visualize")
    expect(link).to_be_visible(timeout=60_000)
    href = link.get_attribute("href")
    assert href.endswith(f"desktop.ipynb?instance={iid}")
    page.goto(f"{hub.url}{href}", timeout=hub.spawn_timeout_ms)  # what the link opens (in a tab of its own)
    _frame, canvas = connected_canvas(page)
    time.sleep(2)  # the outputs terminal draws its listing
    canvas.screenshot(path=str(SHOTS / "visualize-heat-diffusion.png"))
    desks = [d for d in bob.get("/organization/visualization/session", params={"live": True}).json()
             if d["instance_id"] == iid]
    assert len(desks) == 1 and desks[0]["work_dir"].endswith(f"/workflows/{iid}")
    assert bob_has(stack_settings, f"{desks[0]['work_dir']}/outputs/summary.txt")
    seed = bob.get("/organization/workflow/visualization", params={"instance_id": iid}).json()
    assert [d["id"] for d in seed["desktops"]] == [desks[0]["id"]]
