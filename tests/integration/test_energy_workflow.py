"""The workflow engine ingests each finished step's energy on its own (issue 6), on the embedded stack.

The service runs in-process with the energy hook the embedded stack sets (``STAGED_COLLECTOR_COMMAND``): the
engine stages heroes_energy as a zipapp into the instance dir, the step runs under the collector inside the
Charliecloud image on alpha (real Slurm, real sshd, bob's own account), and when the instance finishes the
engine fetches the step's EAR CSV and samples over SFTP and ingests them for bob. A step whose energy folder
holds a malformed file completes all the same: the refusal is an event, and nothing of it is stored.
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import time

import pytest

from heroes_service.workflows.config import STAGED_COLLECTOR_COMMAND, get_workflow_settings
from workflow_support import publish, run_to_end, wf  # noqa: F401

pytestmark = pytest.mark.integration

BURN = ("import time\n"
        "end = time.time() + 4\n"
        "n = 0\n"
        "while time.time() < end:\n"
        "    n += 1\n"
        "open('outputs/burned.txt', 'w').write(str(n))\n")

ENERGY_TEMPLATE = {
    "name": "energy-burn",
    "container": {"runtime": "cluster", "image": "python3"},
    "files": {"burn.py": BURN},
    "steps": [
        {"name": "burn", "command": ["python3", "burn.py"], "energy": True},
        {"name": "plain", "depends_on": ["burn"], "command": ["true"], "energy": False},
        # srun starts one collector per task: only the node's first task measures (one record per node)
        {"name": "fan", "depends_on": ["burn"], "energy": True, "resources": {"nodes": 1, "tasks": 2},
         "command": ["python3", "-c", "import time; time.sleep(2)"]},
    ],
    "outputs": ["outputs/*"],
}

#: one step writes a file the reader refuses (comma-separated) next to the collector's own files, another more
#: bytes than the engine fetches back (ENERGY_MAX_FILE_BYTES below)
BROKEN_TEMPLATE = {
    "name": "energy-broken",
    "container": {"runtime": "cluster", "image": "python3"},
    "steps": [
        {"name": "spoil", "energy": True, "command": [
            "python3", "-c", "open('.heroes/energy-spoil/zz-broken.csv', 'w').write('JOBID,STEPID\\n1,2\\n')"]},
        {"name": "bloat", "energy": True, "command": [
            "python3", "-c", "open('.heroes/energy-bloat/zz-big.csv', 'w').write('x' * 2_000_000)"]},
    ],
}


@pytest.fixture(scope="module", autouse=True)
def energy_hook():
    """Before the module's service starts (autouse fixtures come first): the embedded stack's energy hook."""
    os.environ["HEROES_SERVICE_WORKFLOWS_ENERGY_COMMAND"] = json.dumps(list(STAGED_COLLECTOR_COMMAND))
    os.environ["HEROES_SERVICE_WORKFLOWS_ENERGY_MAX_FILE_BYTES"] = str(1024 * 1024)
    get_workflow_settings.cache_clear()
    yield
    os.environ.pop("HEROES_SERVICE_WORKFLOWS_ENERGY_COMMAND", None)
    os.environ.pop("HEROES_SERVICE_WORKFLOWS_ENERGY_MAX_FILE_BYTES", None)
    get_workflow_settings.cache_clear()


def rapl_readable_by_users() -> bool:
    """Whether an unprivileged step could read a RAPL counter here (root-only since Linux 5.10)."""
    return any(os.stat(path).st_mode & 0o004 for path in glob.glob("/sys/class/powercap/*/energy_uj"))


def events_of(body: dict, step: str) -> list[str]:
    return [e["detail"] for e in body["events"] if e["step"] == step and e["detail"].startswith("energy")]


def test_a_finished_steps_energy_is_ingested_for_its_owner(wf):
    alice, bob, carol = wf["apis"]["alice"], wf["apis"]["bob"], wf["apis"]["carol"]
    publish(alice, ENERGY_TEMPLATE)
    body = run_to_end(bob, "energy-burn", "alpha")
    iid = body["id"]
    assert body["state"] == "COMPLETED", body
    steps = {s["name"]: s for s in body["steps"]}
    # the collector ran inside the container, from the staged zipapp, and left the step's outcome alone
    work = f"{pwd.getpwnam('bob').pw_dir}/heroes-work/bob/workflows/{iid}"
    assert os.path.isfile(f"{work}/.heroes/heroes_energy.pyz")
    assert sorted(os.listdir(f"{work}/.heroes/energy-burn")) == [
        f"heroes.{steps['burn']['job_id']}.0.{steps['burn']['nodes']}.csv",
        f"heroes.{steps['burn']['job_id']}.0.{steps['burn']['nodes']}.samples.csv"]
    assert not os.path.exists(f"{work}/.heroes/energy-plain")  # energy: false -> not wrapped
    assert any("energy ingested from 2 file(s): 1 node record(s)" in e for e in events_of(body, "burn")), body["events"]
    assert events_of(body, "plain") == []
    fan = steps["fan"]
    assert sorted(os.listdir(f"{work}/.heroes/energy-fan")) == [
        f"heroes.{fan['job_id']}.0.{fan['nodes']}.csv", f"heroes.{fan['job_id']}.0.{fan['nodes']}.samples.csv"]
    assert any("energy ingested from 2 file(s): 1 node record(s)" in e for e in events_of(body, "fan"))

    r = bob.get("/organization/decision/energy/steps", params={"instance_id": iid, "job_id": steps["burn"]["job_id"]})
    assert r.status_code == 200, r.text
    [row] = r.json()["steps"]
    assert (row["cluster"], row["job_id"], row["step_id"]) == ("alpha", int(steps["burn"]["job_id"]), 0)
    assert (row["username"], row["organization"], row["template"]) == ("bob", "acme", "energy-burn")
    assert row["nodes"] == 1 and row["time_s"] >= 3.5 and row["energy_j"] > 0 and row["dc_power_w"] > 0
    assert row["energy_j"] == pytest.approx(row["dc_power_w"] * row["time_s"], rel=1e-6)
    if not rapl_readable_by_users():
        assert row["estimated"] is True  # no readable RAPL: the estimate is marked, never shown as measured
    samples = bob.get("/organization/decision/energy/samples", params={
        "cluster": "alpha", "job_id": row["job_id"], "step_id": 0}).json()["samples"]
    assert len(samples) >= 3 and samples[0]["node"] == steps["burn"]["nodes"]
    assert max(s["elapsed_s"] for s in samples) >= 3.5
    # another organization sees nothing of it
    assert carol.get("/organization/decision/energy/steps", params={"instance_id": iid}).json()["steps"] == []

    # the engine's ingestion is idempotent: running it again (a restart mid-finish) stores nothing new
    engine = wf["app"].state.workflows
    engine._ingest_step_energy(iid, _bob_connector(wf, iid), "alpha", _work_dir(wf, iid), "burn")
    body = bob.get(f"/organization/workflow/instance/{iid}").json()
    assert "0 node record(s), 0 sample(s) stored, 1 already known" in events_of(body, "burn")[-1]
    r = bob.get("/organization/decision/energy/steps", params={"instance_id": iid})
    assert sorted(s["job_id"] for s in r.json()["steps"]) == sorted(int(steps[n]["job_id"]) for n in ("burn", "fan"))
    assert {s["nodes"] for s in r.json()["steps"]} == {1}


def test_a_refused_or_oversized_energy_file_does_not_fail_the_workflow(wf):
    alice, bob = wf["apis"]["alice"], wf["apis"]["bob"]
    publish(alice, BROKEN_TEMPLATE)
    body = run_to_end(bob, "energy-broken", "alpha")
    iid = body["id"]
    assert body["state"] == "COMPLETED" and body["exit_code"] == 0, body
    [event] = events_of(body, "spoil")
    assert event.startswith("energy not ingested: zz-broken.csv, line 1") and "';'-separated" in event, event
    assert "nothing was stored" in event
    [event] = events_of(body, "bloat")
    assert event.startswith("energy not ingested: cannot fetch the step's files: 3 file(s) of ") and \
        "more than the 100 files or 1048576 bytes" in event, event
    # all-or-nothing: the collector's valid file of the same step was not stored either
    r = bob.get("/organization/decision/energy/steps", params={"instance_id": iid})
    assert r.status_code == 200 and r.json()["steps"] == []


FAILING_TEMPLATE = {
    "name": "energy-fails",
    "container": {"runtime": "cluster", "image": "python3"},
    "files": {"burn.py": BURN.replace("open('outputs/burned.txt', 'w').write(str(n))\n", "raise SystemExit(7)\n")},
    "steps": [
        {"name": "burn", "command": ["python3", "burn.py"], "energy": True},
        {"name": "never", "depends_on": ["burn"], "energy": True, "command": ["true"]},
    ],
}


def test_a_failed_steps_energy_is_ingested_too(wf):
    """Energy spent by a run that failed is spent all the same: the failed step's record is ingested; the
    dependent that never ran has none."""
    alice, bob = wf["apis"]["alice"], wf["apis"]["bob"]
    publish(alice, FAILING_TEMPLATE)
    body = run_to_end(bob, "energy-fails", "alpha")
    iid = body["id"]
    assert body["state"] == "FAILED" and body["exit_code"] == 7, body
    steps = {s["name"]: s for s in body["steps"]}
    deadline = time.monotonic() + 60  # ingested in the background once the instance is FAILED
    while time.monotonic() < deadline and not events_of(body, "burn"):
        time.sleep(1)
        body = bob.get(f"/organization/workflow/instance/{iid}").json()
    assert any("energy ingested from 2 file(s): 1 node record(s)" in e for e in events_of(body, "burn")), body["events"]
    assert events_of(body, "never") == []
    [row] = bob.get("/organization/decision/energy/steps", params={"instance_id": iid}).json()["steps"]
    assert row["job_id"] == int(steps["burn"]["job_id"]) and row["time_s"] >= 3.5 and row["energy_j"] > 0


def _work_dir(wf, iid: str) -> str:
    from heroes_service.workflows import models as m

    with wf["app"].state.sessions() as session:
        return session.get(m.WorkflowInstance, iid).work_dir


def _bob_connector(wf, iid: str):
    from heroes_service.clusters.models import cluster_by_id
    from heroes_service.workflows import models as m
    from heroes_service.workflows.engine import owner_connector

    with wf["app"].state.sessions() as session:
        inst = session.get(m.WorkflowInstance, iid)
        cluster = cluster_by_id(session, None, inst.cluster_id)
        session.expunge(cluster)
        return owner_connector(cluster, inst.cluster_login)
