"""In the browser: the Desktop launcher of a cluster-spawned JupyterLab server (jupyter-remote-desktop-proxy).

bob goes from his start page to the hub's server list, adds a named server on the cluster (a Slurm job of the
service), opens JupyterLab there and clicks the launcher's "Desktop": the server starts TigerVNC inside its
own job and the noVNC page shows the desktop (openbox and a terminal; the canvas is not blank); what he types
in that terminal runs in the job (it writes the job's id into his cluster home, read over SSH). Only bob gets
through: the desktop's page and its websocket answer nobody without his login and refuse carol's (HTTP and
websocket); his own cookies open the websocket to a real VNC greeting, so the refusals are the
authentication's, not a broken path. Over SSH as bob, on the node through ``srun`` into the server's job:
the VNC server runs in that job, listens on no TCP port, and its Unix socket is mode 0600 in a 0700 folder;
carol, on the same node, opens neither bob's X display nor his VNC socket.
"""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
import shlex
import sys
import time
from pathlib import Path

import httpx
import paramiko
import pytest
from playwright.sync_api import expect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from heroes_dev.components.login import host_key_fingerprint, ssh_port, user_key_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from spawner_support import ensure_enrolled, server_token, wait_until  # noqa: E402

from app_support import COUNT_COLOURS, DESKTOP_CLUSTER as CLUSTER, DESKTOP_SHOTS as SHOTS  # noqa: E402

pytestmark = pytest.mark.e2e
SERVER = "desk-lab"
#: how a websocket without the server owner's login is refused: a redirect to the hub's login, or forbidden
REFUSED = (302, 401, 403)


@pytest.fixture
def cluster_lab(hub, require, stack_settings):
    """The cluster enrolled for acme and bob's named server ``desk-lab`` stopped before and after."""
    for name in (f"slurm-{CLUSTER}", f"login-{CLUSTER}", "desktop"):
        require(name)
    ensure_enrolled(stack_settings, CLUSTER)
    remove_server(hub)
    yield stack_settings
    remove_server(hub)


def remove_server(hub) -> None:
    """Stop bob's ``desk-lab`` and remove its record, so "Add New Server" can add it again."""
    for _ in range(3):  # a cluster server's stop may answer 500 while its job is still pending
        if hub.api.request("DELETE", f"/users/bob/servers/{SERVER}", json={"remove": True}).status_code != 500:
            break
        time.sleep(2)
    wait_until("bob's desktop server to go", lambda: SERVER not in hub.user("bob").get("servers", {}), 60)


def start_cluster_server_from_the_start_page(page, hub) -> None:
    """As bob would: start page -> "Servers" in its bar -> "Add New Server" -> the form -> JupyterLab."""
    hub.login(page, "bob")
    page.wait_for_url("**/voila/render/welcome.ipynb**", timeout=hub.spawn_timeout_ms * 2)
    page.locator(".heroes-nav-hub").click()
    page.wait_for_url("**/hub/home**")
    page.wait_for_load_state("networkidle")  # the page's script binds the button after load
    page.fill(".new-server-name", SERVER)
    page.locator(".new-server-btn").click()  # JupyterHub 6: adds the server's row, then "start" opens the form
    page.locator(f"tr[data-server-name='{SERVER}'] .start-server").click(timeout=30_000)
    page.wait_for_url(f"**/hub/spawn/bob/{SERVER}**")
    page.select_option("#heroes-target", f"cluster:{CLUSTER}")
    page.select_option("#heroes-partition", "compute")
    page.fill("#heroes-cores", "1")
    page.fill("#heroes-minutes", "15")
    page.fill("#heroes-memory", "1024")
    page.locator("form input[type=submit], form button[type=submit]").first.click()
    page.wait_for_url(f"**/user/bob/{SERVER}/voila/render/welcome.ipynb**", timeout=hub.spawn_timeout_ms * 2)
    page.locator(".heroes-nav-lab").click()
    page.wait_for_url(f"**/user/bob/{SERVER}/lab**", timeout=hub.spawn_timeout_ms)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=hub.spawn_timeout_ms)


def dismiss_dialogs(page) -> None:
    """Close what a restored workspace may pop up (a notebook of another test's server that is not here)."""
    dialog = page.locator(".jp-Dialog")
    for _ in range(5):
        try:
            expect(dialog.first).to_be_visible(timeout=5_000)
        except AssertionError:
            return
        dialog.first.locator(".jp-Dialog-button").last.click()


def open_desktop_from_the_launcher(page):
    """The launcher's "Desktop [↗]" card (not "HEROES Desktop", the gateway's app) opens a tab of its own."""
    dismiss_dialogs(page)
    launcher = page.locator(".jp-Launcher")
    try:
        expect(launcher).to_be_visible(timeout=20_000)
    except AssertionError:  # a restored workspace without one: File > New Launcher
        page.locator(".lm-MenuBar-itemLabel", has_text="File").click()
        page.locator(".lm-Menu-itemLabel", has_text="New Launcher").click()
        expect(launcher).to_be_visible(timeout=20_000)
    card = page.locator(".jp-LauncherCard").filter(
        has=page.locator(".jp-LauncherCard-label").get_by_text(re.compile(r"^Desktop( \[↗\])?$")))
    expect(card).to_have_count(1, timeout=60_000)
    with page.context.expect_page() as opened:
        card.click()
    desktop = opened.value
    desktop.wait_for_url(f"**/user/bob/{SERVER}/desktop/**", timeout=60_000)
    return desktop


def wait_for_a_desktop(desktop) -> int:
    """noVNC connected and drawing more than a blank screen; the number of colours seen."""
    expect(desktop.locator("#status")).to_have_text("Connected", timeout=90_000)
    canvas = desktop.locator("#screen canvas")
    expect(canvas).to_be_visible(timeout=30_000)
    deadline, colours = time.monotonic() + 60, 0
    while time.monotonic() < deadline:
        colours = canvas.evaluate(COUNT_COLOURS)
        if colours >= 4:  # black root, the terminal's white and black, openbox's frame
            return colours
        time.sleep(1)
    return colours


def cookie_header(context, url: str) -> str:
    return "; ".join(f"{c['name']}={c['value']}" for c in context.cookies(url))


def websocket_status(url: str, origin: str, cookies: str = "", headers: dict | None = None) -> tuple[int, bytes]:
    """Open the desktop's websocket: (101, first bytes from the VNC server) or (the refusal's status, b"")."""
    headers = {**(headers or {}), **({"Cookie": cookies} if cookies else {})}
    try:
        with connect(url, origin=origin, additional_headers=headers, open_timeout=30) as ws:
            return 101, ws.recv(timeout=30)
    except InvalidStatus as refused:
        return refused.response.status_code, b""


def on_the_node(stack, command: str, user: str = "bob") -> str:
    """``command`` run as ``user`` over SSH to the login node (host key pinned to the stack's), output text."""
    expected = host_key_fingerprint(stack, CLUSTER)
    transport = paramiko.Transport((stack.host, ssh_port(stack, CLUSTER)))
    try:
        transport.start_client(timeout=30)
        seen = "SHA256:" + base64.b64encode(
            hashlib.sha256(transport.get_remote_server_key().asbytes()).digest()).decode().rstrip("=")
        assert seen == expected, f"login node host key {seen}, pinned {expected}"
        transport.auth_publickey(user, paramiko.PKey.from_path(str(user_key_path(stack, user))))
        channel = transport.open_session(timeout=30)
        channel.exec_command(command)
        out = channel.makefile("r").read().decode()
        err = channel.makefile_stderr("r").read().decode()
        assert channel.recv_exit_status() == 0, f"{command}: {err}"
        return out
    finally:
        transport.close()


#: in the server's job on its node: the Xtigervnc of jupyter-server-proxy's socket folder, what it listens on
SOCKET_CHECK = r"""
pid=$(pgrep -u "$(id -u)" -f 'Xtigervnc .*-rfbunixpath [^ ]*/jupyter-server-proxy-' | head -n 1)
test -n "$pid" || { echo "no Xtigervnc with a jupyter-server-proxy socket" >&2; exit 3; }
command -v ss >/dev/null || { echo "no ss on the node" >&2; exit 4; }
sock=$(tr '\0' '\n' < /proc/$pid/cmdline | sed -n '/^-rfbunixpath$/{n;p;}')
echo "job=$(tr '\0' '\n' < /proc/$pid/environ | sed -n 's/^SLURM_JOB_ID=//p')"
echo "display=$(tr '\0' '\n' < /proc/$pid/cmdline | sed -n '2p')"
echo "path=$sock"
echo "socket=$(stat -c '%a %U %F' "$sock")"
echo "folder=$(stat -c '%a %U' "$(dirname "$sock")")"
echo "tcp=$(ss -H -ltnp | grep -c "pid=$pid," || true)"
"""
#: as another user of the node (carol): can she open bob's X display or connect to his VNC socket?
NEIGHBOUR_CHECK = r"""
xwininfo -root -display "$1" >/dev/null 2>&1 && echo "x=open" || echo "x=refused"
socat -u OPEN:/dev/null "UNIX-CONNECT:$2" 2>/dev/null && echo "vnc=open" || echo "vnc=refused"
"""


def test_bob_opens_a_desktop_in_his_cluster_jupyterlab(page, hub, cluster_lab, browser):
    start_cluster_server_from_the_start_page(page, hub)
    state = hub.user("bob")["servers"][SERVER]["state"]
    assert state["cluster"] == CLUSTER and state["job_id"], state

    desktop = open_desktop_from_the_launcher(page)
    colours = wait_for_a_desktop(desktop)
    SHOTS.mkdir(parents=True, exist_ok=True)
    desktop.screenshot(path=str(SHOTS / "cluster-lab-desktop.png"))
    assert colours >= 4, f"the desktop's canvas shows {colours} colour(s): blank"

    # what bob types in the desktop's terminal runs as bob in the server's job (its id written to his home)
    proof = f"cluster-lab-desktop-{secrets.token_hex(4)}"
    box = desktop.locator("#screen canvas").bounding_box()
    desktop.mouse.click(box["x"] + 300, box["y"] + 200)  # the terminal sits at the desktop's top left
    desktop.keyboard.type(f"echo $SLURM_JOB_ID > $HOME/{proof}", delay=30)
    desktop.keyboard.press("Enter")
    assert wait_until("the typed command to run on the node", lambda: on_the_node(
        cluster_lab, f"cat $HOME/{proof} 2>/dev/null; rm -f $HOME/{proof}; true").strip() == str(state["job_id"]), 30)

    # the VNC server runs in the server's own job, on a 0600 socket, on no TCP port (over SSH, srun into the job)
    facts = dict(line.split("=", 1) for line in on_the_node(
        cluster_lab, f"srun --jobid={shlex.quote(str(state['job_id']))} --overlap --ntasks=1 "
                     f"sh -c {shlex.quote(SOCKET_CHECK)}").split("\n") if "=" in line)
    display, path = facts.pop("display"), facts.pop("path")
    assert facts == {"job": str(state["job_id"]), "socket": "600 bob socket", "folder": "700 bob", "tcp": "0"}, facts
    # another user on the node reaches neither the X display (its cookie is bob's) nor the VNC socket
    assert re.fullmatch(r":\d+", display), display
    # (the embedded login node is the nodes' machine; bob himself gets through, so the refusals are not a typo)
    probe = f"sh -c {shlex.quote(NEIGHBOUR_CHECK)} sh {shlex.quote(display)} {shlex.quote(path)}"
    assert on_the_node(cluster_lab, probe).split() == ["x=open", "vnc=open"]
    assert on_the_node(cluster_lab, probe, user="carol").split() == ["x=refused", "vnc=refused"]

    # only bob: his cookies open the websocket to the VNC server's greeting, carol's and none are refused
    base = f"{hub.url}/user/bob/{SERVER}"
    ws_url = base.replace("http", "ws", 1) + "/desktop-websockify/"
    mine = websocket_status(ws_url, hub.url, cookie_header(page.context, base + "/"))
    assert mine[0] == 101 and mine[1].startswith(b"RFB 003."), mine

    carol = browser.new_context()
    try:
        carol_page = carol.new_page()
        hub.login(carol_page, "carol")
        carol_page.wait_for_url("**/user/carol/**", timeout=hub.spawn_timeout_ms * 2)
        answer = carol.request.get(base + "/desktop/", max_redirects=10)
        assert answer.status == 403 and "desktop-websockify" not in answer.text(), (answer.status, answer.url)
        assert websocket_status(ws_url, hub.url, cookie_header(carol, base + "/"))[0] in REFUSED
    finally:
        carol.close()
    # carol's own valid hub token (it opens her servers) opens nothing of bob's either
    token = {"Authorization": f"token {server_token(cluster_lab, 'carol')}"}
    assert httpx.get(base + "/desktop/", headers=token, timeout=30).status_code == 403
    assert websocket_status(ws_url, hub.url, headers=token)[0] == 403

    anonymous = httpx.get(base + "/desktop/", follow_redirects=False, timeout=30)
    assert anonymous.status_code == 302 and "/hub/" in anonymous.headers["location"], anonymous
    assert "desktop-websockify" not in anonymous.text
    assert websocket_status(ws_url, hub.url)[0] in REFUSED
