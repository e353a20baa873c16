"""The one reconciler per cluster against real Slurm on alpha (service in-process, SQLite, its own CA):

* with 50 workflow steps, 20 cluster JupyterLab servers, 20 remote kernels and a desktop live on alpha, one
  cycle sends exactly ONE Slurm command - one ``squeue`` - counted at the connector (the jobs are real, tiny
  and held, so two cores run none of them; desktops ride the same query through their ``DesktopTracker``);
* a failed ``squeue`` (Slurm answering with an error) and an unreachable login node keep every job as it
  was (never dropped: batchspawner#315), and the next good cycle goes on;
* a job cancelled behind the service's back is CANCELLED at the next cycle; a job that ran writes its ledger
  row (allocated TRES, elapsed) when it ends; so does a desktop (``kind = desktop``);
* never twice: an intent whose sbatch answer was lost (a server's or a desktop's) is adopted by its unique job
  name from the same ``squeue``; one Slurm never heard of becomes LOST, and nothing is submitted again.
"""
from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from heroes_service.clusterjobs import models as cj
from heroes_service.clusterjobs.submit import owner_connector
from heroes_service.clusters import identity
from heroes_service.clusters.connector import ClusterConnector
from heroes_service.clusters.errors import CommandFailed
from heroes_service.clusters.models import Cluster
from heroes_service.clusters.slurm import SlurmClient
from cluster_testing import free_port, isolated_secrets
from heroes_service.settings import get_settings
from heroes_service.visualization import models as desk
from heroes_service.workflows import models as wf
from heroes_service.workflows.config import get_workflow_settings
from service_support import DEMO_PASSWORDS, Api, service_settings
from workflow_support import enroll

pytestmark = pytest.mark.integration
SLURM = {"sbatch", "squeue", "sacct", "scancel", "sinfo", "scontrol"}
STEPS, SERVERS, KERNELS, DESKTOPS = 50, 20, 20, 1


@pytest.fixture(scope="module")
def svc(stack_settings, require, tmp_path_factory):
    from fastapi.testclient import TestClient

    from heroes_service.app import create_app

    for name in ("keycloak", "slurm-alpha", "login-alpha"):
        require(name)
    saved = {k: os.environ.get(k) for k in ("HEROES_STATE_DIR", "HEROES_SERVICE_WORKFLOWS_RECONCILER")}
    os.environ["HEROES_STATE_DIR"] = str(stack_settings.state)
    os.environ["HEROES_SERVICE_WORKFLOWS_RECONCILER"] = "false"  # this test runs the cycles itself
    get_settings.cache_clear()
    get_workflow_settings.cache_clear()
    db = f"sqlite:///{tmp_path_factory.mktemp('cj-db') / 'heroes.db'}"
    with isolated_secrets():
        identity.set_cluster_login_resolver(None)
        app = create_app(service_settings(stack_settings, db))
        with TestClient(app, raise_server_exceptions=False) as client:
            alice = Api(client).login("alice", DEMO_PASSWORDS["alice"])
            cluster_id = enroll(alice, stack_settings, "alpha")
            with app.state.sessions() as session:
                cluster = session.get(Cluster, cluster_id)
                session.expunge(cluster)
            conn = owner_connector(cluster, "bob")
            jobs: list[str] = []
            yield {"app": app, "cluster": cluster, "conn": conn, "jobs": jobs}
            if jobs:
                SlurmClient(conn).cancel(jobs)
            alice.delete(f"/organization/admin/cluster/{cluster_id}")
        app.state.engine.dispose()
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    get_workflow_settings.cache_clear()


def sbatch(svc, name: str, *, hold: bool = True, wrap: str = "sleep 1") -> str:
    """A real, tiny job of bob's on alpha (held: it waits in the queue until released or cancelled)."""
    options = [f"--job-name={name}", "--time=1", "--mem=64", "--output=/dev/null"] + (["--hold"] if hold else [])
    job_id = SlurmClient(svc["conn"]).submit(f"#!/bin/sh\n{wrap}\n", options)
    svc["jobs"].append(job_id)
    return job_id


def add_job_row(svc, kind: str, job_id: str | None, state: str = cj.PENDING, name: str | None = None) -> str:
    cluster = svc["cluster"]
    with svc["app"].state.sessions() as session:
        row = cj.ClusterJob(kind=kind, cluster_id=cluster.id, cluster=cluster.name, organization="acme",
                            username="bob", cluster_login="bob", job_id=job_id, state=state, resources={}, params={})
        row.id = cj.new_id()
        row.job_name = name or cj.job_name(kind, row.id)
        session.add(row)
        session.commit()
        return row.id


def add_desktop(svc, job_id: str | None, state: str = desk.PENDING, session_id: str | None = None) -> str:
    """A desktop session row of bob's (its job is a held stand-in: the tracker only reads what Slurm says)."""
    cluster = svc["cluster"]
    with svc["app"].state.sessions() as session:
        found = desk.DesktopSession(id=session_id or desk.new_id(), organization="acme", username="bob",
                                    cluster_id=cluster.id, cluster_name=cluster.name, cluster_login="bob",
                                    job_id=job_id, state=state, work_dir="/home/bob", session_dir="/home/bob/.d")
        session.add(found)
        session.commit()
        return found.id


def desktop(svc, session_id: str) -> desk.DesktopSession:
    with svc["app"].state.sessions() as session:
        found = session.get(desk.DesktopSession, session_id)
        session.expunge(found)
        return found


def desktop_ledger(svc, session_id: str) -> cj.ClusterJob | None:
    with svc["app"].state.sessions() as session:
        found = session.query(cj.ClusterJob).filter_by(kind=cj.DESKTOP, ref=session_id).one_or_none()
        if found is not None:
            session.expunge(found)
        return found


def add_instance(svc, steps: list[str]) -> str:
    cluster = svc["cluster"]
    with svc["app"].state.sessions() as session:
        inst = wf.WorkflowInstance(organization="acme", username="bob", template_id="t" * 32, template_name="held",
                                   template_version=1, cluster_id=cluster.id, cluster_name=cluster.name,
                                   cluster_login="bob", parameters={}, state=wf.QUEUED, work_dir="heroes-work/x")
        session.add(inst)
        session.flush()
        for position, job_id in enumerate(steps):
            session.add(wf.WorkflowStep(instance_id=inst.id, name=f"s{position}", position=position, depends_on=[],
                                        state="PENDING", job_name=f"heroes.{inst.id}.s{position}", job_id=job_id))
        session.commit()
        return inst.id


def row(svc, row_id: str) -> cj.ClusterJob:
    with svc["app"].state.sessions() as session:
        found = session.get(cj.ClusterJob, row_id)
        session.expunge(found)
        return found


class Counted:
    """Slurm commands sent through any connector while active (what the cluster sees)."""

    def __init__(self, monkeypatch):
        self.sent: list[str] = []
        original = ClusterConnector.run

        def counting(conn, argv, **kwargs):
            if argv and argv[0] in SLURM:
                self.sent.append(argv[0])
            return original(conn, argv, **kwargs)

        monkeypatch.setattr(ClusterConnector, "run", counting)


@pytest.fixture(scope="module")
def live(svc):
    """50 workflow steps (10 instances x 5), 20 servers, 20 kernels and a desktop: 91 held jobs of bob's on alpha."""
    steps = [sbatch(svc, f"heroes.held.step{i}") for i in range(STEPS)]
    instances = [add_instance(svc, steps[i:i + 5]) for i in range(0, STEPS, 5)]
    servers = [add_job_row(svc, "jupyterlab", sbatch(svc, f"heroes.held.lab{i}")) for i in range(SERVERS)]
    kernels = [add_job_row(svc, "kernel", sbatch(svc, f"heroes.held.kernel{i}")) for i in range(KERNELS)]
    desktops = []
    for _ in range(DESKTOPS):
        session_id = desk.new_id()
        desktops.append(add_desktop(svc, sbatch(svc, desk.job_name(session_id)), session_id=session_id))
    return {"instances": instances, "servers": servers, "kernels": kernels, "desktops": desktops}


def test_one_squeue_per_cycle_for_every_kind(svc, live, monkeypatch):
    counted = Counted(monkeypatch)
    reconciler = svc["app"].state.reconciler
    for cycle in range(3):
        counted.sent.clear()
        stats = reconciler.cycle(svc["cluster"].id)
        print(f"cycle {cycle}: tracked {stats.by_tracker}, Slurm commands {dict(Counter(counted.sent))}, "
              f"errors {stats.errors}")
        assert stats.by_tracker == {"workflow-steps": STEPS, "cluster-jobs": SERVERS + KERNELS, "desktops": DESKTOPS}
        assert stats.tracked == STEPS + SERVERS + KERNELS + DESKTOPS and not stats.errors
        assert counted.sent == ["squeue"], counted.sent
    assert {row(svc, r).state for r in live["servers"] + live["kernels"]} == {"PENDING"}
    assert {desktop(svc, d).state for d in live["desktops"]} == {"PENDING"}


def test_a_failed_squeue_keeps_every_job(svc, live, monkeypatch):
    def failing(self, **kwargs):
        raise CommandFailed("squeue", 1, "slurm_load_jobs error: Unable to contact slurm controller")

    monkeypatch.setattr(SlurmClient, "queue", failing)
    stats = svc["app"].state.reconciler.cycle(svc["cluster"].id)
    assert any("squeue" in e for e in stats.errors) and stats.transitions == 0
    monkeypatch.undo()
    assert {row(svc, r).state for r in live["servers"] + live["kernels"]} == {"PENDING"}
    assert all(row(svc, r).missing_cycles == 0 for r in live["servers"])  # a failure is no absence
    assert not svc["app"].state.reconciler.cycle(svc["cluster"].id).errors


def test_an_unreachable_login_node_keeps_every_job(svc, live, monkeypatch):
    """The cluster's login node stops answering (its record names a closed port): jobs kept, asked again."""
    monkeypatch.setenv("HEROES_SERVICE_CLUSTERS_CONNECT_ATTEMPTS", "1")
    from heroes_service.clusters.config import get_clusters_settings

    get_clusters_settings.cache_clear()
    cluster_id = svc["cluster"].id
    with svc["app"].state.sessions() as session:
        record = session.get(Cluster, cluster_id)
        port, record.port = record.port, free_port()
        session.commit()
    try:
        stats = svc["app"].state.reconciler.cycle(cluster_id)
        assert stats.errors and stats.transitions == 0, stats
        assert {row(svc, r).state for r in live["servers"] + live["kernels"]} == {"PENDING"}
    finally:
        with svc["app"].state.sessions() as session:
            session.get(Cluster, cluster_id).port = port
            session.commit()
        get_clusters_settings.cache_clear()
    assert not svc["app"].state.reconciler.cycle(cluster_id).errors


def wait_state(svc, row_id: str, states: set[str], timeout: float = 60) -> cj.ClusterJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        svc["app"].state.reconciler.cycle(svc["cluster"].id)
        found = row(svc, row_id)
        if found.state in states:
            return found
        time.sleep(1)
    raise AssertionError(f"job row {row_id} never reached {states}: {found.state} {found.detail}")


def test_cancelled_behind_our_back_and_the_ledger(svc, live):
    victim = row(svc, live["kernels"][0])
    SlurmClient(svc["conn"]).cancel([victim.job_id])
    ended = wait_state(svc, victim.id, {"CANCELLED"})
    assert ended.ended_at is not None and ended.ledger_at is not None
    ran = add_job_row(svc, "jupyterlab", sbatch(svc, "heroes.ledger.run", hold=False, wrap="sleep 2"))
    done = wait_state(svc, ran, {"COMPLETED"}, timeout=120)
    print(f"ledger row: state {done.state}, alloc_tres {done.alloc_tres!r}, elapsed {done.elapsed_s} s, "
          f"energy {done.energy_j}")
    assert done.exit_code == 0 and "cpu=" in done.alloc_tres and done.elapsed_s is not None and done.elapsed_s >= 1


def test_a_desktop_that_ends_writes_its_ledger_row(svc, live):
    """A desktop's job that ran and ended (the time limit, here a short script) gets its row in the one ledger."""
    session_id = desk.new_id()
    ran = add_desktop(svc, sbatch(svc, desk.job_name(session_id), hold=False, wrap="sleep 2"), session_id=session_id)
    deadline = time.monotonic() + 120
    while desktop_ledger(svc, ran) is None and time.monotonic() < deadline:
        svc["app"].state.reconciler.cycle(svc["cluster"].id)
        time.sleep(1)
    entry, ended = desktop_ledger(svc, ran), desktop(svc, ran)
    assert entry is not None, f"no ledger row; the desktop is {ended.state}"
    print(f"desktop ledger row: state {entry.state}, alloc_tres {entry.alloc_tres!r}, elapsed {entry.elapsed_s} s")
    assert ended.state == "COMPLETED" and entry.state == "COMPLETED" and entry.job_id == ended.job_id
    assert "cpu=" in entry.alloc_tres and entry.elapsed_s is not None and entry.elapsed_s >= 1
    assert entry.username == "bob" and entry.organization == "acme" and entry.ledger_at is not None
    # once its ledger row is written, the ended desktop is no longer looked up; the row is no live cluster job
    stats = svc["app"].state.reconciler.cycle(svc["cluster"].id)
    assert stats.by_tracker["desktops"] == DESKTOPS
    with svc["app"].state.sessions() as session:
        assert entry.id not in {r.id for r in cj.live_jobs(session)}


def test_never_twice_an_intent_is_adopted_by_name_or_lost(svc, live, monkeypatch):
    adopt_id = cj.new_id()
    name = cj.job_name("jupyterlab", adopt_id)
    job_id = sbatch(svc, name)  # its sbatch ran, but the answer never reached the service
    with svc["app"].state.sessions() as session:
        session.add(cj.ClusterJob(id=adopt_id, kind="jupyterlab", cluster_id=svc["cluster"].id, cluster="alpha",
                                  organization="acme", username="bob", cluster_login="bob", job_name=name,
                                  state=cj.SUBMITTING, resources={}, params={}))
        session.commit()
    never = add_job_row(svc, "kernel", None, state=cj.SUBMITTING)
    desktop_id = desk.new_id()
    desktop_job = sbatch(svc, desk.job_name(desktop_id))  # a desktop's sbatch ran, its answer was lost too
    add_desktop(svc, None, state=desk.SUBMITTING, session_id=desktop_id)
    monkeypatch.setattr(svc["app"].state.cluster_jobs.settings, "lost_after_cycles", 3)
    counted = Counted(monkeypatch)
    svc["app"].state.reconciler.cycle(svc["cluster"].id)
    adopted = row(svc, adopt_id)
    assert adopted.job_id == job_id and adopted.state == "PENDING" and "not resubmitted" in adopted.detail
    assert desktop(svc, desktop_id).job_id == desktop_job and desktop(svc, desktop_id).state == "PENDING"
    for _ in range(3):
        svc["app"].state.reconciler.cycle(svc["cluster"].id)
    assert row(svc, never).state == "LOST" and row(svc, never).job_id is None
    assert "sbatch" not in counted.sent
