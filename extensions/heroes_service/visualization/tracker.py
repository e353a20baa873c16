"""Desktops on the one path: the shared per-cluster reconciler's ``DesktopTracker`` (no squeue of its own).

Desktops ride the ONE ``squeue`` per cluster per cycle of ``clusterjobs/reconciler.py`` with workflow steps,
servers and kernels (registered in ``wiring.build_workers``). What Slurm said about a desktop's job:

* queued / running -> PENDING / RUNNING (node, start time); a running desktop without its socket yet gets its
  ``ready`` file read (as the owner's account: a ``cat``, not a Slurm command); a ready desktop gets the energy
  collector's totals so far read every ``energy_read_s`` (``energy.py``), and with no viewer for its idle time
  is ended with ``scancel`` (end reason "idle");
* ended -> its final state (``TIMEOUT`` is shown as "time limit") and, once the accounting has the job and the
  collector has written its record (or ``ENERGY_WAIT_S`` passed), the collector's files ingested as the
  session's energy record and its ledger row (``clusterjobs.ledger.record_desktop``, with the collector's
  energy where Slurm measured none); a desktop ended by its owner or the idle cull is tracked until that row
  is written;
* a SUBMITTING intent without a job id (sbatch's answer was lost) is adopted when its unique name
  (``heroes.desktop.<id>``) shows up in the same ``squeue``; one Slurm never heard of ends LOST.

While a desktop is starting the tracker wakes its cluster's reconciler again, so the next cycle comes
``min_gap_s`` (0.5 s) later and "ready" follows Slurm within about half a second.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, exists, select

from ..clusterjobs import ledger
from ..clusterjobs.config import get_cluster_jobs_settings
from ..clusterjobs.models import ClusterJob
from ..clusterjobs.reconciler import FINAL, LIVE, MISSING, CycleStats, Observation
from ..clusterjobs.submit import owner_connector, owner_principal
from ..workflows.cluster_files import fetch_energy_files
from ..clusters.errors import ClusterError
from ..clusters.models import Cluster
from ..clusters.slurm import ACTIVE_STATES, Job
from . import energy
from . import models as m
from .script import READY_FILE, parse_ready
from .sessions import end

log = logging.getLogger("heroes_service.visualization")
#: how long after submit a PENDING desktop still counts as starting (a queued one falls back to the normal cycle)
STARTING_WINDOW_S = 60
#: an intent without a job id younger than this may still be in its create request (never called lost)
INTENT_GRACE_S = 300
#: an ended desktop whose accounting never comes gets its ledger row from what is known after this long
LEDGER_WAIT_S = 120
#: ended desktops older than this are no longer looked at for a ledger row
LEDGER_HORIZON = timedelta(days=1)
#: how long after its end a desktop's ledger row waits for the collector's record (it writes it when Slurm's
#: SIGTERM reaches it, well within Slurm's KillWait; a node that died never writes it)
ENERGY_WAIT_S = 60


class Viewers:
    """How many websockets watch each desktop right now (this process's bridges)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def add(self, session_id: str) -> None:
        with self._lock:
            self._counts[session_id] += 1

    def remove(self, session_id: str) -> None:
        with self._lock:
            self._counts[session_id] = max(0, self._counts[session_id] - 1)

    def count(self, session_id: str) -> int:
        with self._lock:
            return self._counts.get(session_id, 0)


def _elapsed_s(text: str) -> int:
    """squeue's ``%M`` (``[days-]hours:minutes:seconds`` or ``minutes:seconds``) in seconds."""
    days, _, rest = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = [int(p) for p in rest.split(":") if p.isdigit()]
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return int(days or 0) * 86400 + seconds


def _age_s(value, now) -> float:
    value = m.aware(value)
    return (now - value).total_seconds() if value is not None else 0.0


def _unledgered():
    """Ended desktops with a Slurm job and no ledger row yet."""
    has_row = exists().where(and_(ClusterJob.kind == ledger.DESKTOP, ClusterJob.ref == m.DesktopSession.id))
    return and_(m.DesktopSession.state.not_in(m.LIVE), m.DesktopSession.job_id.is_not(None),
                m.DesktopSession.ended_at > m.utcnow() - LEDGER_HORIZON, ~has_row)


class DesktopTracker:
    """The reconciler's view of ``visualization_sessions`` rows."""

    name = "desktops"

    def __init__(self, sessions, viewers: Viewers, reconciler=None, *, energy_sink: energy.EnergySink | None = None,
                 energy_read_s: float = 10.0, energy_max_bytes: int = 64 * 1024 * 1024):
        """``energy_sink``: the energy capability's ingestion (``wiring``); None: desktops' records are not
        ingested (their energy so far is still read)."""
        self.sessions = sessions
        self.viewers = viewers
        self.reconciler = reconciler
        self.energy_sink = energy_sink
        self.energy_read_s = energy_read_s
        self.energy_max_bytes = energy_max_bytes
        self._missing: dict[str, int] = defaultdict(int)
        self._energy_read: dict[str, float] = {}

    # --- the Tracker protocol ------------------------------------------------------------------------------
    def live_cluster_ids(self) -> set[str]:
        with self.sessions() as session:
            query = select(m.DesktopSession.cluster_id).where(m.DesktopSession.state.in_(m.LIVE) | _unledgered())
            return set(session.scalars(query.distinct()))

    def _rows(self, session, cluster_id: str) -> list[m.DesktopSession]:
        query = select(m.DesktopSession).where(m.DesktopSession.cluster_id == cluster_id,
                                               m.DesktopSession.state.in_(m.LIVE) | _unledgered())
        return list(session.scalars(query))

    def prepare(self, cluster: Cluster, stats: CycleStats) -> dict[Any, str | None] | None:
        with self.sessions() as session:
            rows = self._rows(session, cluster.id)
            return {row.id: row.job_id for row in rows} if rows else None

    def apply(self, cluster: Cluster, observed: dict[Any, Observation], queue_by_name: dict[str, Job],
              stats: CycleStats) -> None:
        now = m.utcnow()
        with self.sessions() as session:
            for row in self._rows(session, cluster.id):
                before = (row.state, row.node, row.socket_path, row.job_id)
                if row.state not in m.LIVE:
                    self._ledger_if_known(session, cluster, row, observed.get(row.id), now)
                elif not row.job_id:
                    self._adopt(session, row, queue_by_name.get(m.job_name(row.id)), now)
                else:
                    self._observe(session, cluster, row, observed.get(row.id), now)
                if (row.state, row.node, row.socket_path, row.job_id) != before:
                    stats.transitions += 1
            session.commit()

    def finish(self, cluster: Cluster, stats: CycleStats) -> None:
        """Look again in ``min_gap_s`` while a desktop of this cluster is coming up."""
        if self.reconciler is None:
            return
        now = m.utcnow()
        with self.sessions() as session:
            rows = session.scalars(select(m.DesktopSession).where(m.DesktopSession.cluster_id == cluster.id,
                                                                  m.DesktopSession.state.in_(m.LIVE)))
            starting = any((r.state == m.RUNNING and not r.socket_path) or
                           (r.state in (m.SUBMITTING, m.PENDING) and _age_s(r.created_at, now) < STARTING_WINDOW_S)
                           for r in rows)
        if starting:
            self.reconciler.wake(cluster.id)

    def cluster_gone(self, cluster_id: str) -> None:
        with self.sessions() as session:
            for row in session.scalars(select(m.DesktopSession).where(m.DesktopSession.cluster_id == cluster_id,
                                                                      m.DesktopSession.state.in_(m.LIVE))):
                row.state, row.end_reason, row.ended_at = "ENDED", "cluster removed", m.utcnow()
            session.commit()

    # --- one desktop ---------------------------------------------------------------------------------------
    def _observe(self, session, cluster: Cluster, row: m.DesktopSession, seen: Observation | None, now) -> None:
        if seen is None:
            return
        if seen.kind == MISSING:
            self._missing[row.id] += 1
            if self._missing[row.id] >= get_cluster_jobs_settings().lost_after_cycles:
                row.state, row.ended_at = "LOST", now
                row.end_reason = f"job {row.job_id} is in neither squeue nor sacct"
                self._record(session, cluster, row, None)
            return
        self._missing.pop(row.id, None)
        self._apply(cluster, row, seen.job, now)
        if row.state not in m.LIVE:
            self._ledger_if_known(session, cluster, row, seen, now)

    def _adopt(self, session, row: m.DesktopSession, job: Job | None, now) -> None:
        """The one submit path's "never twice": an intent whose sbatch answer was lost, found by its name."""
        if job is not None:
            row.job_id, row.state = job.job_id, m.PENDING
            log.info("desktop %s: job %s found by its name; not resubmitted", row.id, job.job_id)
        elif _age_s(row.created_at, now) > INTENT_GRACE_S:
            row.state, row.ended_at = "LOST", now
            row.end_reason = "sbatch's answer was lost; Slurm knows no such job"

    def _ledger_if_known(self, session, cluster: Cluster, row: m.DesktopSession, seen: Observation | None,
                         now) -> None:
        """An ended desktop: its ledger row from the accounting record (the allocated TRES: slurmdbd may be a
        cycle or two behind squeue's final state), or from what is known once that never comes."""
        if seen is None or seen.kind == LIVE:
            return
        if (seen.kind == FINAL and seen.job is not None and seen.job.alloc_tres) \
                or _age_s(row.ended_at, now) > LEDGER_WAIT_S:
            if self._energy_record(session, cluster, row, now):
                self._record(session, cluster, row, seen.job)

    def _record(self, session, cluster: Cluster, row: m.DesktopSession, job: Job | None) -> None:
        """The ledger row; its energy is Slurm's where the cluster meters it, else the collector's record."""
        self._energy_read.pop(row.id, None)
        if row.state == "LOST":
            self._energy_record(session, cluster, row, m.utcnow(), wait=False)
        if job is not None and job.energy_j is None and row.energy_j is not None:
            job = dataclasses.replace(job, energy_j=row.energy_j)  # the ledger's hooks (prices) see it too
        entry = ledger.record_desktop(session, row, job)
        if entry.energy_j is None and row.energy_j is not None:
            entry.energy_j = row.energy_j

    def _energy_record(self, session, cluster: Cluster, row: m.DesktopSession, now, wait: bool = True) -> bool:
        """Ingest the collector's files as the session's energy record. False: not yet (the collector is still
        writing its record, or the cluster did not answer), so the ledger row waits for the next cycle, at
        most ``ENERGY_WAIT_S`` after the end. Never raises: energy must not stop the reconciler."""
        if self.energy_sink is None or row.energy_source == "record" or row.started_at is None or not row.job_id:
            return True
        patient = wait and _age_s(row.ended_at, now) < ENERGY_WAIT_S
        try:
            conn = owner_connector(cluster, row.cluster_login, owner_principal(row))
            files = fetch_energy_files(conn, energy.energy_folder(row), self.energy_max_bytes)
        except ValueError as exc:  # more than is fetched back: waiting does not make it smaller
            log.warning("desktop %s: the collector's files were not ingested: %s", row.id, exc)
            return True
        except (ClusterError, OSError) as exc:
            log.warning("desktop %s: the collector's files could not be fetched: %s", row.id, exc)
            return not patient
        if files and not energy.has_final_record(files) and patient:
            return False  # samples but no record yet: the collector is writing it
        if not files:
            return True  # never ran under the collector (off, or no python3 on the node)
        try:
            with session.begin_nested():
                result = energy.ingest_record(session, row, files, self.energy_sink)
            log.info("desktop %s: energy record ingested from %d file(s): %s record(s), %s sample(s) stored",
                     row.id, len(files), result.get("stored"), result.get("samples_stored"))
        except Exception as exc:  # noqa: BLE001 - a refused file must not stop the ledger or the reconciler
            log.warning("desktop %s: the collector's files were not ingested: %s", row.id, exc)
        return True

    def _apply(self, cluster: Cluster, row: m.DesktopSession, job: Job, now) -> int:
        before = (row.state, row.node, row.socket_path)
        if job.state not in ACTIVE_STATES:
            row.state = job.state
            row.ended_at = row.ended_at or now
            if job.state == "TIMEOUT":
                row.end_reason = row.end_reason or m.TIME_LIMIT
            return 1
        if job.state == "PENDING":
            row.state, row.reason = m.PENDING, (job.reason or "")[:255]
        elif job.state in ("RUNNING", "COMPLETING"):
            if row.state != m.RUNNING:
                row.state, row.reason = m.RUNNING, ""
                row.started_at = now - timedelta(seconds=_elapsed_s(job.elapsed))
            row.node = job.nodes[:255]
            if not row.socket_path:
                self._read_ready(cluster, row)
            else:
                self._read_energy_if_due(cluster, row)
                self._cull_if_idle(cluster, row)
        return int(before != (row.state, row.node, row.socket_path))

    def _read_ready(self, cluster: Cluster, row: m.DesktopSession) -> None:
        conn = owner_connector(cluster, row.cluster_login, owner_principal(row))
        result = conn.run(["cat", "--", f"{row.session_dir}/{READY_FILE}"], timeout=30)
        ready = parse_ready(result.stdout) if result.ok else None
        if ready is not None:
            row.socket_path, row.node, row.ready_at = ready["socket"], ready["node"], m.utcnow()

    def _read_energy_if_due(self, cluster: Cluster, row: m.DesktopSession) -> None:
        """The collector's totals so far, every ``energy_read_s`` per desktop (a failed read waits as long)."""
        last = self._energy_read.get(row.id)
        if last is not None and time.monotonic() - last < self.energy_read_s:
            return
        self._energy_read[row.id] = time.monotonic()
        try:
            progress = energy.read_progress(owner_connector(cluster, row.cluster_login, owner_principal(row)), row)
        except ClusterError as exc:
            log.info("desktop %s: energy so far not read: %s", row.id, exc)
            return
        if progress is not None:
            energy.apply_progress(row, progress)

    def _cull_if_idle(self, cluster: Cluster, row: m.DesktopSession) -> None:
        now = m.utcnow()
        if self.viewers.count(row.id) > 0:
            row.last_viewer_at = now
            return
        idle_since = m.aware(row.last_viewer_at) or m.aware(row.ready_at) or now
        if (now - idle_since).total_seconds() >= row.idle_minutes * 60:
            log.info("desktop %s (job %s on %s): no viewer for %.1f min, ended", row.id, row.job_id, cluster.name,
                     row.idle_minutes)
            end(row, cluster, m.IDLE)
