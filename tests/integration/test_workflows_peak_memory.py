"""Each step's peak memory comes from Slurm's accounting when its instance ends (issue 7's history: "used
memory" of the service's own steps), on the embedded stack: real Slurm with jobacct_gather/linux on alpha,
bob's own account over real SSH, the step inside the Charliecloud image.

A step that holds about 300 MiB for longer than one accounting sample shows that peak in the instance's
API response and in the history right-sizing learns from; a step too short to be sampled has no peak (not a
peak of 0); a failed instance's steps get their peaks too (the memory was used all the same).
"""
from __future__ import annotations

import time

import pytest

from heroes_service.decision import service_history
from workflow_support import publish, run_to_end, wf  # noqa: F401

pytestmark = pytest.mark.integration

#: bytes really written (a bytearray of zeros would stay unmapped), held past the 10 s JobAcctGatherFrequency
HOLD = "import time; block = b'x' * (300 << 20); time.sleep(12); print(len(block))"

TEMPLATE = {
    "name": "memory-hog",
    "container": {"runtime": "cluster", "image": "python3"},
    "steps": [
        {"name": "hog", "command": ["python3", "-c", HOLD], "resources": {"memory_mb": 1024}},
        {"name": "blink", "depends_on": ["hog"], "command": ["true"]},
    ],
}

FAILING = {
    "name": "memory-hog-fails",
    "container": {"runtime": "cluster", "image": "python3"},
    "steps": [{"name": "hog", "resources": {"memory_mb": 1024},
               "command": ["python3", "-c", HOLD.replace("print(len(block))", "raise SystemExit(3)")]}],
}


def _steps(body: dict) -> dict[str, dict]:
    return {s["name"]: s for s in body["steps"]}


def test_a_steps_peak_memory_is_recorded_and_feeds_the_history(wf):
    alice, bob, carol = wf["apis"]["alice"], wf["apis"]["bob"], wf["apis"]["carol"]
    publish(alice, TEMPLATE)
    body = run_to_end(bob, "memory-hog", "alpha")
    iid = body["id"]
    assert body["state"] == "COMPLETED", body
    steps = _steps(body)
    assert 290 <= steps["hog"]["max_rss_mb"] <= 700, steps["hog"]       # 300 MiB held plus the interpreter
    assert steps["blink"]["max_rss_mb"] is None or steps["blink"]["max_rss_mb"] < 50, steps["blink"]

    with wf["app"].state.sessions() as session:
        frame = service_history.load(session, "acme")
        org_b = service_history.load(session, "globex")
    rows = [i for i, t in enumerate(frame.template) if t == "memory-hog/hog"]
    assert rows and frame["used_mem"][rows[-1]] == pytest.approx(steps["hog"]["max_rss_mb"])
    assert "memory-hog/hog" not in org_b.template                      # another organization learns nothing of it
    assert carol.get(f"/organization/workflow/instance/{iid}").status_code == 404


def test_a_failed_instances_steps_get_their_peak_too(wf):
    alice, bob = wf["apis"]["alice"], wf["apis"]["bob"]
    publish(alice, FAILING)
    body = run_to_end(bob, "memory-hog-fails", "alpha")
    iid = body["id"]
    assert body["state"] == "FAILED" and _steps(body)["hog"]["exit_code"] == 3, body
    deadline = time.monotonic() + 60    # read in the engine's pool after the instance failed
    while _steps(body)["hog"]["max_rss_mb"] is None and time.monotonic() < deadline:
        time.sleep(1)
        body = bob.get(f"/organization/workflow/instance/{iid}").json()
    assert 290 <= _steps(body)["hog"]["max_rss_mb"] <= 700, _steps(body)["hog"]
