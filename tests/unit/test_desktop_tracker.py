"""Unit tests of the desktops' tracker in the shared reconciler (SQLite in a temporary folder, observations
built by hand; the real squeue is in tests/integration/test_cluster_jobs_reconciler.py): a lost sbatch answer
is adopted by the job's name, never resubmitted; an ended desktop gets exactly one ledger row, from the
accounting record when it comes and from what is known when it never does; a starting desktop wakes its
cluster's reconciler again."""
from __future__ import annotations

from datetime import timedelta

import pytest

from heroes_service.clusterjobs.models import DESKTOP, ClusterJob
from heroes_service.clusterjobs.reconciler import FINAL, LIVE, MISSING, CycleStats, Observation
from heroes_service.clusters.slurm import Job
from heroes_service.store import Base, make_engine, session_factory
from heroes_service.visualization import models as m
from heroes_service.visualization.tracker import LEDGER_WAIT_S, DesktopTracker, Viewers


class Cluster:
    id, name = "c1", "alpha"


class WakeLog:
    def __init__(self) -> None:
        self.woken: list[str] = []

    def wake(self, cluster_id: str) -> None:
        self.woken.append(cluster_id)


@pytest.fixture
def tracker(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'heroes.db'}")
    Base.metadata.create_all(engine)
    yield DesktopTracker(session_factory(engine), Viewers(), WakeLog())
    engine.dispose()


def add(tracker, job_id: str | None, state: str, **fields) -> str:
    with tracker.sessions() as session:
        row = m.DesktopSession(organization="acme", username="bob", cluster_id="c1", cluster_name="alpha",
                               cluster_login="bob", job_id=job_id, state=state, work_dir="/w", session_dir="/w/.d",
                               **fields)
        session.add(row)
        session.commit()
        return row.id


def get(tracker, session_id: str) -> m.DesktopSession:
    with tracker.sessions() as session:
        return session.get(m.DesktopSession, session_id)


def ledger_rows(tracker, session_id: str) -> list[ClusterJob]:
    with tracker.sessions() as session:
        return session.query(ClusterJob).filter_by(kind=DESKTOP, ref=session_id).all()


def test_a_lost_sbatch_answer_is_adopted_by_name(tracker):
    intent = add(tracker, None, m.SUBMITTING)
    assert tracker.prepare(Cluster(), CycleStats("alpha")) == {intent: None}
    stats = CycleStats("alpha")
    queued = Job(job_id="41", state="PENDING", user="bob", name=m.job_name(intent))
    tracker.apply(Cluster(), {}, {queued.name: queued}, stats)
    assert (get(tracker, intent).job_id, get(tracker, intent).state, stats.transitions) == ("41", m.PENDING, 1)
    assert m.job_name(intent) == f"heroes.desktop.{intent}"


def test_an_ended_desktop_gets_one_ledger_row_from_the_accounting(tracker):
    sid = add(tracker, "42", m.RUNNING, socket_path="/tmp/x/vnc.sock", ready_at=m.utcnow())
    squeue_only = Job(job_id="42", state="COMPLETED", user="bob", elapsed="0:05")
    tracker.apply(Cluster(), {sid: Observation(FINAL, squeue_only)}, {}, CycleStats("alpha"))
    assert get(tracker, sid).state == "COMPLETED" and ledger_rows(tracker, sid) == []  # slurmdbd not there yet
    assert tracker.prepare(Cluster(), CycleStats("alpha")) == {sid: "42"}  # still looked up for its ledger
    accounted = Job(job_id="42", state="COMPLETED", user="bob", partition="compute", elapsed="00:01:05",
                    alloc_tres="billing=1,cpu=1,mem=256M,node=1", exit_code=0)
    tracker.apply(Cluster(), {sid: Observation(FINAL, accounted)}, {}, CycleStats("alpha"))
    [entry] = ledger_rows(tracker, sid)
    assert (entry.state, entry.job_id, entry.alloc_tres, entry.elapsed_s) == ("COMPLETED", "42",
                                                                               accounted.alloc_tres, 65)
    assert entry.username == "bob" and entry.organization == "acme" and entry.resources["cores"] == 1
    assert tracker.prepare(Cluster(), CycleStats("alpha")) is None  # ledgered: no longer tracked


def test_without_accounting_the_ledger_row_comes_from_what_is_known(tracker):
    sid = add(tracker, "43", "CANCELLED", ended_at=m.utcnow())
    tracker.apply(Cluster(), {sid: Observation(MISSING)}, {}, CycleStats("alpha"))
    assert ledger_rows(tracker, sid) == []
    with tracker.sessions() as session:
        session.get(m.DesktopSession, sid).ended_at = m.utcnow() - timedelta(seconds=LEDGER_WAIT_S + 1)
        session.commit()
    tracker.apply(Cluster(), {sid: Observation(MISSING)}, {}, CycleStats("alpha"))
    [entry] = ledger_rows(tracker, sid)
    assert entry.state == "CANCELLED" and entry.alloc_tres == "" and entry.ledger_at is not None


def test_a_starting_desktop_wakes_its_cluster_and_a_queued_one_does_not(tracker):
    started = add(tracker, "44", m.PENDING)
    tracker.finish(Cluster(), CycleStats("alpha"))
    assert tracker.reconciler.woken == ["c1"]
    with tracker.sessions() as session:
        session.get(m.DesktopSession, started).created_at = m.utcnow() - timedelta(minutes=5)
        session.commit()
    tracker.finish(Cluster(), CycleStats("alpha"))
    assert tracker.reconciler.woken == ["c1"]  # queued for long: the normal cycle is enough
    running = Job(job_id="44", state="RUNNING", user="bob", nodes="alpha-n1", elapsed="0:01")
    tracker._read_ready = lambda cluster, row: None  # the ready file is not there yet (no SSH in a unit test)
    tracker.apply(Cluster(), {started: Observation(LIVE, running)}, {}, CycleStats("alpha"))
    assert get(tracker, started).state == m.RUNNING and get(tracker, started).node == "alpha-n1"
    tracker.finish(Cluster(), CycleStats("alpha"))
    assert tracker.reconciler.woken == ["c1", "c1"]  # running without its socket: look again soon
