"""The workflow end-to-end tests again, with the service on PostgreSQL instead of SQLite.

Same real stack (Keycloak tokens, S3, sshd + Slurm of alpha and beta, the charliecloud image); only the
service's database differs: a throw-away database on the embedded PostgreSQL, dropped afterwards. The test
functions are the ones of ``test_workflows_api`` (imported, so they are collected here a second time); the
``wf`` fixture of this module shadows the SQLite one of ``workflow_support``. The failing-chain test is
this module's own: Slurm here cancels a dependent of a failed job by itself (``_kill_dependent``) when it
gets there before the reconciler does, and then ``sacct`` shows Start == End with no node instead of
``None``; both orders must end with the dependent SKIPPED. Row locking, JSON columns,
timestamps with time zones and the event log behave differently enough between the two to be worth it.
"""
from __future__ import annotations

import os
import pwd

import pytest

from service_support import throwaway_postgres
from test_workflows_api import (FAIL_CHAIN, examples, sacct, test_cancel_stops_every_step,  # noqa: F401
                                test_injection_canaries_arrive_verbatim_and_never_fire, test_parameters_are_validated,
                                test_templates_are_versioned_and_scoped,
                                test_the_three_examples_complete_on_alpha_and_beta)
from workflow_support import publish, wait_final, workflow_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wf(stack_settings, require):
    """As ``workflow_support.wf`` (service in-process, 1 s reconciler, alpha and beta enrolled), on PostgreSQL."""
    with throwaway_postgres(require, "heroes_wf") as url:
        for ctx in workflow_service(stack_settings, require, url):
            assert ctx["app"].state.engine.dialect.name == "postgresql"
            yield ctx


@pytest.mark.parametrize("attempt", range(3))  # both orders of the race (Slurm's cancel or ours) get a chance
def test_a_failing_step_fails_the_instance_and_its_dependents_never_run(wf, attempt):
    alice, bob, stack = wf["apis"]["alice"], wf["apis"]["bob"], wf["stack"]
    publish(alice, FAIL_CHAIN)
    r = bob.post("/organization/workflow/submit", json={"template": "fail-chain", "cluster": "beta"})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    body = wait_final(bob, [iid], timeout=180)[iid]
    assert body["state"] == "FAILED" and body["exit_code"] == 3, body
    assert "step break failed with exit code 3" in body["reason"], body["reason"]
    steps = {s["name"]: s for s in body["steps"]}
    assert steps["prepare"]["state"] == "COMPLETED"
    assert steps["break"]["state"] == "FAILED" and steps["break"]["exit_code"] == 3
    assert "about to fail: disk on fire" in steps["break"]["log_tail"]
    assert steps["after"]["state"] == "SKIPPED" and steps["after"]["started_at"] is None, steps["after"]
    job, state, start, nodes, elapsed = sacct(stack, "beta", "-j", steps["after"]["job_id"],
                                              "-o", "JobID,State,Start,NodeList,Elapsed")[0]
    assert state.startswith("CANCELLED") and nodes == "None assigned" and elapsed == "00:00:00", (job, state, start)
    home = pwd.getpwnam("bob").pw_dir
    assert not os.path.exists(f"{home}/heroes-work/bob/workflows/{iid}/outputs/after-ran")
