"""A desktop's energy from its collector, in the tracker (SQLite in a temporary folder, no cluster).

The collector really runs (in-process, RAPL from a synthetic powercap tree so the joules are known) and writes
into a session folder on this machine; the tracker reads it through a connector that runs its commands here
(``head`` for the totals so far; the files are fetched from the folder as SFTP would). The energy capability's
real ingestion stores the record; the ledger row gets its energy where Slurm measured none.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from heroes_service.clusterjobs.models import DESKTOP, ClusterJob
from heroes_service.clusterjobs.reconciler import FINAL, LIVE, CycleStats, Observation
from heroes_service.clusters.connector import CommandResult
from heroes_service.clusters.slurm import Job
from heroes_service.decision.costs import Shape
from heroes_service.energy.ingest import ingest_for_owner
from heroes_service.energy.models import EnergyRecord
from heroes_service.store import Base, make_engine, session_factory
from heroes_service.visualization import energy, tracker as tracker_module
from heroes_service.visualization import models as m
from heroes_service.visualization.tracker import DesktopTracker, Viewers
from heroes_energy.collect import Collector, StepInfo, heroes_ids_from

ACCOUNTED = dict(user="bob", partition="compute", elapsed="00:00:30", alloc_tres="billing=1,cpu=1,mem=256M,node=1",
                 exit_code=0)


class Cluster:
    id, name = "c1", "alpha"
    energy_profile = {"idle_watts_per_node": 100.0, "watts_per_core": 10.0}
    price_model = {"per_core_hour": 1.0, "per_kwh": 0.5}


class LocalConnector:
    """Runs the tracker's commands on this machine (the session folder is a local folder here)."""

    cluster = "alpha"

    def run(self, argv, timeout=60, stdin=None):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return CommandResult(done.returncode, done.stdout, done.stderr)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def tracker(tmp_path, monkeypatch):
    engine = make_engine(f"sqlite:///{tmp_path / 'heroes.db'}")
    Base.metadata.create_all(engine)
    monkeypatch.setattr(tracker_module, "owner_connector", lambda *a, **k: LocalConnector())
    monkeypatch.setattr(tracker_module, "fetch_energy_files", lambda conn, folder, max_bytes: {
        p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.csv"))} if Path(folder).is_dir() else {})
    yield DesktopTracker(session_factory(engine), Viewers(), None, energy_sink=ingest_for_owner, energy_read_s=0)
    engine.dispose()


def collector(session_dir: Path, clock: FakeClock, job_id: str = "42") -> tuple[Collector, Path]:
    zone = session_dir / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("0\n")
    info = StepInfo(job_id=job_id, step_id="0", node="alpha-n1", user="bob", group="bob", account="",
                    job_name="heroes.desktop.x", nprocs=1, heroes_ids=heroes_ids_from([], {}))
    c = Collector(str(session_dir / "energy"), info, powercap_root=str(session_dir / "powercap"), use_nvml=False,
                  clock=clock, progress_path=str(session_dir / "energy" / "progress.json"))
    c.start()
    return c, zone / "energy_uj"


def burn(c: Collector, counter: Path, clock: FakeClock, watts: int, seconds: int) -> None:
    for _ in range(seconds):
        clock.now += 1
        counter.write_text(f"{int(counter.read_text()) + watts * 1_000_000}\n")
        c.sample()


def add_running(tracker, tmp_path) -> str:
    with tracker.sessions() as session:
        row = m.DesktopSession(organization="acme", username="bob", cluster_id="c1", cluster_name="alpha",
                               cluster_login="bob", job_id="42", state=m.RUNNING, work_dir=str(tmp_path),
                               session_dir=str(tmp_path / "s"), socket_path="/tmp/x/vnc.sock", node="alpha-n1",
                               started_at=m.utcnow(), ready_at=m.utcnow(), last_viewer_at=m.utcnow())
        session.add(row)
        session.commit()
        return row.id


def get(tracker, sid: str) -> m.DesktopSession:
    with tracker.sessions() as session:
        return session.get(m.DesktopSession, sid)


def running(tracker, sid: str) -> None:
    job = Job(job_id="42", state="RUNNING", user="bob", nodes="alpha-n1", elapsed="0:30")
    tracker.apply(Cluster(), {sid: Observation(LIVE, job)}, {}, CycleStats("alpha"))


def test_progress_file_is_read_as_untrusted_input():
    good = json.dumps({"energy_j": 12.5, "time_s": 3, "estimated": ["PCK_POWER_W"], "final": False})
    assert energy.parse_progress(good) == energy.Progress(12.5, 3.0, ("PCK_POWER_W",), False)
    for bad in ("", "not json", "[]", json.dumps({"energy_j": -1, "time_s": 1, "estimated": []}),
                '{"energy_j": NaN, "time_s": 1, "estimated": []}', json.dumps({"energy_j": True, "time_s": 1,
                                                                                "estimated": []}),
                json.dumps({"energy_j": 1, "time_s": 1, "estimated": ["x; rm"]}),
                json.dumps({"energy_j": 1, "time_s": 1, "estimated": [], "pad": "x" * 5000})):
        assert energy.parse_progress(bad) is None, bad


def test_without_collector_output_the_energy_is_the_profiles_estimate_and_says_so():
    row = m.DesktopSession(state=m.RUNNING, cores=2, gpus=0, energy_source="", node="alpha-n1")
    got = energy.usage_energy(row, Cluster(), Shape(cpus_per_task=2), 3600)
    assert got["energy_source"] == "power profile" and got["energy_estimated"] is True
    assert got["energy_kwh"] == pytest.approx(0.12) and "no output from the energy collector yet" in got["energy_note"]
    row.energy_j, row.energy_time_s, row.energy_source, row.energy_estimated = 7.2e6, 3600.0, "collector", ""
    got = energy.usage_energy(row, Cluster(), Shape(cpus_per_task=2), 3600)
    assert (got["energy_source"], got["energy_estimated"], got["energy_kwh"], got["energy_j"]) == \
        ("collector", False, 2.0, 7.2e6)
    assert got["energy_note"] == "measured by the energy collector on alpha-n1" and got["energy_measured_s"] == 3600
    row.energy_estimated = "DC_NODE_POWER_W,PCK_POWER_W"
    got = energy.usage_energy(row, Cluster(), Shape(cpus_per_task=2), 3600)
    assert got["energy_estimated"] is True and "no readable RAPL" in got["energy_note"]


def test_energy_so_far_while_it_runs_then_the_record_and_the_ledger_at_its_end(tracker, tmp_path):
    sid = add_running(tracker, tmp_path)
    running(tracker, sid)
    assert get(tracker, sid).energy_source == ""  # the collector has not sampled yet: nothing to read
    clock = FakeClock()
    c, counter = collector(tmp_path / "s", clock)
    burn(c, counter, clock, watts=50, seconds=4)
    running(tracker, sid)
    row = get(tracker, sid)
    assert (row.energy_source, row.energy_j, row.energy_time_s, row.energy_estimated) == ("collector", 200.0, 4.0, "")

    # scancel: the collector samples once more and writes its record; until then the ledger row waits
    with tracker.sessions() as session:
        row = session.get(m.DesktopSession, sid)
        row.state, row.ended_at, row.end_reason = "CANCELLED", m.utcnow(), m.DELETED
        session.commit()
    accounted = Job(job_id="42", state="CANCELLED", **ACCOUNTED)
    tracker.apply(Cluster(), {sid: Observation(FINAL, accounted)}, {}, CycleStats("alpha"))
    with tracker.sessions() as session:
        assert session.query(ClusterJob).filter_by(kind=DESKTOP, ref=sid).all() == []
    burn(c, counter, clock, watts=30, seconds=2)
    c.finish()
    tracker.apply(Cluster(), {sid: Observation(FINAL, accounted)}, {}, CycleStats("alpha"))
    with tracker.sessions() as session:
        [entry] = session.query(ClusterJob).filter_by(kind=DESKTOP, ref=sid).all()
        [record] = session.query(EnergyRecord).all()
    assert record.energy_j == pytest.approx(260.0, rel=1e-3)
    assert (record.username, record.organization) == ("bob", "acme")
    assert (record.cluster, record.job_id, record.instance_id) == ("alpha", 42, "")
    assert entry.energy_j == pytest.approx(260.0, rel=1e-3) and entry.alloc_tres == ACCOUNTED["alloc_tres"]
    row = get(tracker, sid)
    assert (row.energy_source, row.energy_j) == ("record", pytest.approx(260.0, rel=1e-3))


def test_slurms_own_energy_counter_stays_in_the_ledger(tracker, tmp_path):
    sid = add_running(tracker, tmp_path)
    clock = FakeClock()
    c, counter = collector(tmp_path / "s", clock)
    burn(c, counter, clock, watts=50, seconds=2)
    c.finish()
    with tracker.sessions() as session:
        row = session.get(m.DesktopSession, sid)
        row.state, row.ended_at = "CANCELLED", m.utcnow()
        session.commit()
    metered = Job(job_id="42", state="CANCELLED", energy_j=999.0, **ACCOUNTED)
    tracker.apply(Cluster(), {sid: Observation(FINAL, metered)}, {}, CycleStats("alpha"))
    with tracker.sessions() as session:
        [entry] = session.query(ClusterJob).filter_by(kind=DESKTOP, ref=sid).all()
    assert entry.energy_j == 999.0 and get(tracker, sid).energy_j == pytest.approx(100.0, rel=1e-3)


def test_a_desktop_without_the_collector_gets_its_ledger_row_at_once(tracker, tmp_path):
    sid = add_running(tracker, tmp_path)
    with tracker.sessions() as session:
        row = session.get(m.DesktopSession, sid)
        row.state, row.ended_at = "CANCELLED", m.utcnow()
        session.commit()
    tracker.apply(Cluster(), {sid: Observation(FINAL, Job(job_id="42", state="CANCELLED", **ACCOUNTED))}, {},
                  CycleStats("alpha"))
    with tracker.sessions() as session:
        [entry] = session.query(ClusterJob).filter_by(kind=DESKTOP, ref=sid).all()
    assert entry.energy_j is None and get(tracker, sid).energy_source == ""
