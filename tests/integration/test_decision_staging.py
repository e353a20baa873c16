"""Data where the compute is: decide's staging time per candidate on the real stack (Keycloak, S3, alpha and
beta over SSH), with the stage-ins the workflow driver really recorded.

beta (FAST) is enrolled ten times as fast as alpha (SLOW) and the probe asks for 10 hours, so without data the
performance policy picks beta (3,600 s against 36,000 s of run: a margin that other sessions' jobs queued on
the shared stack do not eat). The local stack moves S3 -> cluster at the same speed everywhere, so beta's
*slow link* is its measured history: three earlier stage-ins of 100 MiB that each took 100,000 s
(0.001 MiB/s), written to the store as the driver writes its own. A 48 MiB input then costs beta 48,000 s of
staging: alpha wins. Once an instance on beta has staged that very input (real stage-in, recorded with its
content hash), the input is already there: decide charges beta nothing for it and beta wins again; a second
instance on beta copies it on the cluster instead of moving it from S3 again. (The real runs go to beta:
other sessions' tests fill alpha with hour-long jobs.)
"""
from __future__ import annotations

import os
import time

import pytest

from heroes_dev.components.login import host_key_fingerprint, ssh_port
from heroes_service.decision.wait import wait_cache
from heroes_service.workflows.staging import StagedInput, StagingTransfer, record_transfer
from service_support import DEMO_PASSWORDS
from workflow_support import FINAL, own_bucket, publish, submit, upload, wf  # noqa: F401,F811 (fixture)

pytestmark = pytest.mark.integration

MIB = 1024 ** 2
FAST, SLOW = "beta", "alpha"
SPEEDS = {FAST: 10.0, SLOW: 1.0}
TEMPLATE = {"name": "staging-probe", "container": {"runtime": "none"},
            "parameters": [{"name": "data", "type": "file"},
                           {"name": "minutes", "type": "int", "default": 600, "min": 1, "max": 600}],
            "steps": [{"name": "run", "command": ["sh", "-c", "wc -c inputs/data/* > /dev/null"],
                       "resources": {"cpus_per_task": 1, "memory_mb": 128, "time_minutes": "{minutes}"}}]}
# the real runs ask for 1 minute: they backfill past other sessions' jobs on the shared clusters
RUN = {"data": None, "minutes": 1}


@pytest.fixture(scope="module")
def staged(wf):
    alice, stack = wf["apis"]["alice"], wf["stack"]
    for cluster_id in wf["clusters"].values():
        assert alice.delete(f"/organization/admin/cluster/{cluster_id}").status_code == 204
    ids = {}
    for cluster, speed in SPEEDS.items():
        r = alice.post("/organization/admin/cluster/", json={
            "name": cluster, "host": stack.host, "port": ssh_port(stack, cluster),
            "host_key_fingerprint": host_key_fingerprint(stack, cluster), "work_dir": "heroes-work/{login}",
            "container_runtime": "none", "relative_speed": speed})
        assert r.status_code == 201, r.text
        ids[cluster] = r.json()["id"]
    wf["clusters"].clear()
    wf["clusters"].update(ids)
    publish(alice, TEMPLATE)
    bob = wf["apis"]["bob"]
    bucket = own_bucket(bob)
    upload(bob, bucket, "staging/big.bin", os.urandom(48 * MIB))
    wait_cache().clear()
    yield {**wf, "bucket": bucket}


def decide(api, bucket):
    r = api.post("/organization/decision/decide", json={
        "template": TEMPLATE["name"], "policy": "performance",
        "parameters": {"data": {"bucket": bucket, "key": "staging/big.bin"}}})
    assert r.status_code == 200, r.text
    return r.json(), {c["cluster"]: c for c in r.json()["candidates"]}


def run_as_bob(staged, params, timeout: float = 900) -> dict:
    """Submit on the fast cluster and wait for the end; logs in again on the way (other sessions' jobs on the shared
    cluster can keep ours pending past an access token's life)."""
    iid = submit(staged["apis"]["bob"], TEMPLATE["name"], FAST, parameters=params)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bob = staged["anon"].login("bob", DEMO_PASSWORDS["bob"])
        for _ in range(30):
            body = bob.get(f"/organization/workflow/instance/{iid}").json()
            if body["state"] in FINAL:
                return body
            time.sleep(2)
    raise AssertionError(f"instance {iid} did not end in {timeout} s: {body}")


def transfers(app, cluster_id: str) -> list[StagingTransfer]:
    with app.state.sessions() as session:
        rows = session.query(StagingTransfer).filter_by(cluster_id=cluster_id).order_by(StagingTransfer.id).all()
        session.expunge_all()
        return rows


def test_slow_measured_link_loses_the_choice_and_data_already_there_wins_it_back(staged):
    bob, app, ids, bucket = staged["apis"]["bob"], staged["app"], staged["clusters"], staged["bucket"]
    first, rows = decide(bob, bucket)
    # no measure yet: both at the default throughput, the same staging time; the faster cluster wins
    assert rows[FAST]["staging_throughput_measured"] is False
    assert rows[FAST]["staging_in_bytes"] == 48 * MIB == rows[SLOW]["staging_in_bytes"]
    assert rows[FAST]["staging_s"] == rows[SLOW]["staging_s"] > 0
    assert first["choice"] == FAST, first["reason"]
    assert rows[FAST]["finish_s"] == pytest.approx(rows[FAST]["wait_s"] + rows[FAST]["run_s"]
                                                      + rows[FAST]["staging_s"], abs=0.2)

    with app.state.sessions() as session:   # the fast cluster's history: a slow link (0.001 MiB/s)
        for k in range(3):
            record_transfer(session, organization="acme", cluster_id=ids[FAST], instance_id=f"{k:032d}",
                            ref={"bucket": bucket, "key": f"old/{k}.bin"}, staged=StagedInput(100 * MIB, 100_000.0, f"e{k}"),
                            remote_path=f"heroes-work/bob/old{k}/inputs/data/{k}.bin")
        session.commit()
    slow, rows = decide(bob, bucket)
    assert rows[FAST]["staging_throughput_measured"] is True
    assert rows[FAST]["staging_throughput_mib_s"] == pytest.approx(0.001, abs=1e-5)
    assert rows[FAST]["staging_s"] == pytest.approx(48 / 0.001, rel=0.01)
    assert slow["choice"] == SLOW, slow["reason"]
    assert "staging" in slow["reason"]

    # a real instance on the fast cluster stages the input: recorded with its bytes, time and content hash
    params = dict(RUN, data={"bucket": bucket, "key": "staging/big.bin"})
    done = run_as_bob(staged, params)
    assert done["state"] == "COMPLETED", done
    real = [t for t in transfers(app, ids[FAST]) if t.key == "staging/big.bin"]
    assert len(real) == 1 and real[0].bytes == 48 * MIB and real[0].seconds > 0 and real[0].etag
    assert real[0].copied_from == ""

    bob = staged["anon"].login("bob", DEMO_PASSWORDS["bob"])
    back, rows = decide(bob, bucket)
    assert rows[FAST]["staging_in_bytes"] == 0 and rows[FAST]["inputs_already_there"] == ["staging/big.bin"]
    assert rows[SLOW]["staging_in_bytes"] == 48 * MIB
    assert back["choice"] == FAST, back["reason"]

    # and the driver does not move it again: the second instance copies it on the cluster
    again = run_as_bob(staged, params)
    assert again["state"] == "COMPLETED", again
    latest = [t for t in transfers(app, ids[FAST]) if t.key == "staging/big.bin"][-1]
    assert latest.copied_from == real[0].remote_path and latest.bytes == 48 * MIB


def test_inputs_of_others_are_not_sized_for_them(staged):
    """decide checks the inputs as submit does: carol (globex) cannot learn of bob's object."""
    carol = staged["apis"]["carol"]
    r = carol.post("/organization/decision/decide", json={
        "template": TEMPLATE["name"], "parameters": {"data": {"bucket": staged["bucket"], "key": "staging/big.bin"}}})
    assert r.status_code == 404, r.text
