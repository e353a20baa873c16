"""Desktops end to end through the API and the websocket bridge: real Slurm (alpha), real sshd login node and
per-user certificates (bob's desktop runs as bob), a real TigerVNC server, the bridge's srun channel.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import time

import pytest
from starlette.websockets import WebSocketDisconnect

from visualization_support import (CLUSTER, Rfb, desk, distinct_colours, drawn_frame, remote_exists,  # noqa: F401
                                        remote_read, squeue_ids, start_desktop, ticket, wait_desktop, ws_path)

pytestmark = pytest.mark.integration


def _refused(client, path, **kwargs) -> bool:
    try:
        with client.websocket_connect(path, **kwargs) as ws:
            ws.receive_bytes()
    except WebSocketDisconnect:
        return True
    except Exception as exc:  # noqa: BLE001 - a denied handshake surfaces as the client's own error type
        return "403" in str(exc) or "denied" in str(exc).lower() or "1008" in str(exc)
    return False


def wait_ledger_row(app, session_id: str, timeout: float = 60):
    from heroes_service.clusterjobs.models import DESKTOP, ClusterJob

    deadline = time.monotonic() + timeout
    while True:
        with app.state.sessions() as session:
            entry = session.query(ClusterJob).filter_by(kind=DESKTOP, ref=session_id).one_or_none()
            if entry is not None:
                session.expunge(entry)
                return entry
        assert time.monotonic() < deadline, f"desktop {session_id} got no ledger row"
        time.sleep(1)


def test_bad_requests_say_why_and_write_nothing(desk):
    bob = desk["apis"]["bob"]
    before = bob.get("/organization/visualization/session").json()
    for body, rule in (({"cores": 64}, "cores"), ({"memory_mb": 10 ** 6}, "memory_mb"), ({"gpus": 1}, "gpus"),
                       ({"partition": "nope"}, "partition"), ({"minutes": 10 ** 6}, "minutes"),
                       ({"work_dir": "../../etc"}, "work_dir")):
        r = bob.post("/organization/visualization/session", json={"cluster": CLUSTER, **body})
        assert r.status_code == 422, (body, r.text)
        assert rule in r.text
    assert bob.post("/organization/visualization/session", json={"cluster": "nowhere"}).status_code == 404
    assert bob.get("/organization/visualization/session").json() == before


def test_desktop_lifecycle_input_and_isolation(desk, caplog):
    caplog.set_level(logging.DEBUG)
    bob, carol = desk["apis"]["bob"], desk["apis"]["carol"]
    client, stack = desk["anon"].client, desk["stack"]
    made = start_desktop(bob)
    assert made["state"] == "PENDING" and made["job_id"] and made["cluster"] == CLUSTER
    sid = made["id"]
    got = wait_desktop(bob, sid)
    assert got["state"] == "RUNNING" and got["node"].startswith(f"{CLUSTER}-n")
    assert 0 < got["usage"]["time_left_s"] <= 15 * 60 and got["usage"]["core_hours"] >= 0
    assert [d["id"] for d in bob.get("/organization/visualization/session", params={"live": True}).json()] \
        .count(sid) == 1

    # carol (another organization): 404 everywhere, and her websocket is refused
    for method in ("get", "delete"):
        assert getattr(carol, method)(f"/organization/visualization/session/{sid}").status_code == 404
    assert carol.post(f"/organization/visualization/session/{sid}/ticket").status_code == 404
    assert _refused(client, ws_path(sid), headers=carol.headers)
    assert _refused(client, ws_path(sid))  # nothing at all
    assert _refused(client, ws_path(sid), subprotocols=["binary", "heroes-ticket." + secrets.token_hex(24)])
    good = ticket(bob, sid)
    assert _refused(client, ws_path(sid), subprotocols=["binary", f"heroes-ticket.{good}"],
                    headers={"origin": "http://evil.example"})

    # bob through the bridge: a real frame, then typing into the terminal creates a file in his cluster home
    proof = f"vnc-proof-{secrets.token_hex(4)}"
    one_time = ticket(bob, sid)
    with client.websocket_connect(ws_path(sid), subprotocols=["binary", f"heroes-ticket.{one_time}"]) as ws:
        rfb = Rfb(ws)
        assert "HEROES desktop" in rfb.handshake()
        assert distinct_colours(drawn_frame(rfb)) > 2, "the desktop shows more than one colour (a terminal is on it)"
        rfb.click(200, 150)
        rfb.type(f"touch $HOME/{proof}\n")
        rfb.frame()
        deadline = time.monotonic() + 20
        while not remote_exists(stack, "bob", f"/home/bob/{proof}") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert remote_exists(stack, "bob", f"/home/bob/{proof}"), "the typed command ran on the node as bob"
    # a ticket works once
    assert _refused(client, ws_path(sid), subprotocols=["binary", f"heroes-ticket.{one_time}"])

    # delete: scancel, gone from squeue by the next poll
    assert made["job_id"] in squeue_ids(stack)
    r = bob.delete(f"/organization/visualization/session/{sid}")
    assert r.status_code == 200 and r.json()["state"] == "CANCELLED" and r.json()["end_reason"] == "deleted"
    time.sleep(1.5)
    assert made["job_id"] not in squeue_ids(stack)
    # the one ledger (clusterjobs) has the desktop's row once the accounting has its job
    entry = wait_ledger_row(desk["app"], sid)
    assert entry.state == "CANCELLED" and entry.job_id == made["job_id"] and "cpu=" in entry.alloc_tres, entry
    assert entry.elapsed_s is not None and entry.elapsed_s >= 1 and entry.username == "bob"
    # the secrets never reached a log line
    assert one_time not in caplog.text and good not in caplog.text
    assert bob.headers["Authorization"].split()[-1] not in caplog.text


def rapl_readable_by_users() -> bool:
    """Whether a job could read a RAPL counter on this host's nodes (root-only since Linux 5.10)."""
    return any(os.stat(path).st_mode & 0o004 for path in glob.glob("/sys/class/powercap/*/energy_uj"))


def wait_usage(api, session_id: str, check, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = api.get(f"/organization/visualization/session/{session_id}").json()
        if check(got["usage"]):
            return got
        assert time.monotonic() < deadline, f"the desktop's usage never got there: {got['usage']}"
        time.sleep(1)


def test_a_desktops_energy_comes_from_its_collector_while_it_runs_and_after(desk):
    """The desktop runs under the energy collector (staged into its session folder): its energy so far is the
    collector's while it runs (the power profile's estimate only before the first sample, and it says so);
    after delete the collector's EAR CSV is the session's energy record and its ledger row's energy."""
    bob, carol, stack = desk["apis"]["bob"], desk["apis"]["carol"], desk["stack"]
    made = start_desktop(bob)
    sid, job_id = made["id"], made["job_id"]
    assert made["usage"]["energy_source"] == "power profile" and made["usage"]["energy_estimated"] is True
    assert "no output from the energy collector yet" in made["usage"]["energy_note"]
    got = wait_desktop(bob, sid)
    session_dir = f"{got['work_dir']}/.heroes-desktops/{sid}"
    assert remote_exists(stack, "bob", f"{session_dir}/heroes_energy.pyz")

    first = wait_usage(bob, sid, lambda u: u["energy_source"] == "collector")["usage"]
    assert first["energy_j"] > 0 and first["energy_measured_s"] > 0
    if rapl_readable_by_users():
        assert first["energy_estimated"] is False
        assert first["energy_note"].startswith("measured by the energy collector")
    else:  # the collector's own estimate (CPU power from utilisation) is marked as such, never shown as measured
        assert first["energy_estimated"] is True and "no readable RAPL" in first["energy_note"], first
    # while it runs the numbers grow with the collector's samples, and the node holds the file they come from
    later = wait_usage(bob, sid, lambda u: (u["energy_measured_s"] or 0) > first["energy_measured_s"])["usage"]
    assert later["energy_j"] > first["energy_j"] and later["energy_source"] == "collector"
    on_node = json.loads(remote_read(stack, "bob", f"{session_dir}/energy/progress.json"))
    assert on_node["job_id"] == job_id and on_node["final"] is False
    assert on_node["energy_j"] >= later["energy_j"]

    r = bob.delete(f"/organization/visualization/session/{sid}")
    assert r.status_code == 200 and r.json()["state"] == "CANCELLED"
    entry = wait_ledger_row(desk["app"], sid, timeout=150)
    # the collector wrote its EAR CSV when Slurm's SIGTERM reached it; that file is the session's record
    csv = remote_read(stack, "bob", f"{session_dir}/energy/heroes.{job_id}.0.{got['node']}.csv").splitlines()
    values = dict(zip(csv[0].split(";"), csv[1].split(";")))
    from_file = float(values["DC_NODE_POWER_W"]) * float(values["TIME_SEC"])
    assert entry.energy_j == pytest.approx(from_file, rel=1e-6) and entry.energy_j > later["energy_j"]
    [record] = bob.get("/organization/decision/energy/steps", params={"cluster": CLUSTER, "job_id": job_id}) \
        .json()["steps"]
    assert record["energy_j"] == pytest.approx(entry.energy_j, rel=1e-6) and record["username"] == "bob"
    assert record["estimated"] is (not rapl_readable_by_users())
    samples = bob.get("/organization/decision/energy/samples", params={
        "cluster": CLUSTER, "job_id": job_id, "step_id": 0}).json()["samples"]
    assert len(samples) >= 2
    ended = bob.get(f"/organization/visualization/session/{sid}").json()["usage"]
    assert ended["energy_source"] == "energy record"
    assert ended["energy_j"] == pytest.approx(entry.energy_j, abs=1e-3)
    assert carol.get("/organization/decision/energy/steps", params={"job_id": job_id}).json()["steps"] == []


def test_view_only_link(desk):
    bob, alice, carol = (desk["apis"][n] for n in ("bob", "alice", "carol"))
    client, stack = desk["anon"].client, desk["stack"]
    sid = start_desktop(bob)["id"]
    wait_desktop(bob, sid)
    assert bob.post(f"/organization/visualization/session/{sid}/share",
                    json={"viewer": "bob", "minutes": 5}).status_code == 422
    share = bob.post(f"/organization/visualization/session/{sid}/share", json={"viewer": "alice", "minutes": 0.4})
    assert share.status_code == 201, share.text
    share_id = share.json()["id"]
    assert [s["id"] for s in alice.get("/organization/visualization/shared").json()] == [share_id]
    assert carol.post(f"/organization/visualization/share/{share_id}/ticket").status_code == 404
    assert alice.post(f"/organization/visualization/session/{sid}/ticket").status_code == 404
    view = alice.post(f"/organization/visualization/share/{share_id}/ticket").json()
    assert view["view_only"] and "view=1" in view["view_url"]
    proof = f"alice-typed-{secrets.token_hex(4)}"
    with client.websocket_connect(ws_path(sid), subprotocols=["binary", f"heroes-ticket.{view['ticket']}"]) as ws:
        rfb = Rfb(ws)
        rfb.handshake()
        assert distinct_colours(drawn_frame(rfb)) > 2, "alice sees the desktop"
        rfb.click(200, 150)
        rfb.type(f"touch $HOME/{proof}\n")
        rfb.frame()  # the connection is still open: input was dropped, not fatal
        time.sleep(2)
    assert not remote_exists(stack, "bob", f"/home/bob/{proof}"), "a view-only viewer cannot type"
    time.sleep(25)  # the link lasted 0.4 minutes
    assert alice.post(f"/organization/visualization/share/{share_id}/ticket").status_code == 404
    assert alice.get("/organization/visualization/shared").json() == []
    bob.delete(f"/organization/visualization/session/{sid}")


def test_idle_desktop_is_culled(desk):
    bob, stack = desk["apis"]["bob"], desk["stack"]
    made = start_desktop(bob, idle_minutes=0.05)
    wait_desktop(bob, made["id"])
    ended = wait_desktop(bob, made["id"], states={"CANCELLED"}, timeout=30)
    assert ended["end_reason"] == "idle" and ended["usage"]["time_left_s"] is None
    time.sleep(1.5)
    assert made["job_id"] not in squeue_ids(stack)


def test_desktop_past_its_time_limit_is_shown_ended(desk):
    bob = desk["apis"]["bob"]
    made = start_desktop(bob, minutes=1)
    ended = wait_desktop(bob, made["id"], states={"TIMEOUT", "COMPLETED", "CANCELLED", "FAILED"}, timeout=200)
    assert ended["state"] == "TIMEOUT" and ended["end_reason"] == "time limit", ended
    assert ended["ready"] is False


def test_visualize_a_finished_heat_diffusion_run(desk):
    from workflow_support import EXAMPLES, publish, run_to_end

    alice, bob, carol = (desk["apis"][n] for n in ("alice", "bob", "carol"))
    client, stack = desk["anon"].client, desk["stack"]
    publish(alice, (EXAMPLES / "heat-diffusion.yaml").read_text())
    run = run_to_end(bob, "heat-diffusion", CLUSTER)
    assert run["state"] == "COMPLETED", run
    # only the run's owner may open a desktop on it
    assert carol.post("/organization/visualization/session", json={"instance_id": run["id"]}).status_code == 404
    made = start_desktop(bob, cluster="", instance_id=run["id"])
    assert made["instance_id"] == run["id"] and made["work_dir"].endswith(f"/workflows/{run['id']}")
    got = wait_desktop(bob, made["id"])
    with client.websocket_connect(ws_path(made["id"]),
                                  subprotocols=["binary", f"heroes-ticket.{ticket(bob, made['id'])}"]) as ws:
        rfb = Rfb(ws)
        rfb.handshake()
        assert distinct_colours(drawn_frame(rfb)) > 2
        proof = f"vis-pwd-{secrets.token_hex(4)}"
        rfb.click(200, 150)
        rfb.type(f"pwd > $HOME/{proof}\n")
        rfb.frame()
        deadline = time.monotonic() + 20
        while not remote_read(stack, "bob", f"/home/bob/{proof}") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert remote_read(stack, "bob", f"/home/bob/{proof}").strip() == got["work_dir"]
    # the desktop's terminals opened in the run's own folder, where its outputs are (no copy)
    assert remote_exists(stack, "bob", f"{got['work_dir']}/outputs/summary.txt")
    seed = bob.get("/organization/workflow/visualization", params={"instance_id": run["id"]}).json()
    assert seed["nodes"] and seed["cluster"] == CLUSTER
    assert [d["id"] for d in seed["desktops"]] == [made["id"]] and seed["desktops"][0]["ready"]
    bob.delete(f"/organization/visualization/session/{made['id']}")
