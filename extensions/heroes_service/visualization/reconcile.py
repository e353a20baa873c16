"""The desktops' reconciler: one thread, one ``squeue`` per cluster per cycle, idle cull.

Each cycle, for every cluster with live desktops:

* one ``squeue`` as the gateway's service account (a Slurm operator: it sees every user's job) moves rows
  to PENDING / RUNNING (node, start time) or to their final state; a job that left the queue is looked up
  once in the accounting (``TIMEOUT`` there is shown as "time limit");
* a RUNNING desktop without its socket yet gets its ``ready`` file read (as the owner's account);
* a ready desktop with no viewer for its idle time is ended with ``scancel`` (end reason "idle").

``wake()`` runs a cycle soon (after a create), so a new desktop is found ready without waiting a poll.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import timedelta

from sqlalchemy.orm import sessionmaker

from ..clusters.errors import ClusterError
from ..clusters.identity import service_connector
from ..clusters.models import Cluster
from ..clusters.slurm import ACTIVE_STATES, Job, SlurmClient
from . import models as m
from .script import READY_FILE, parse_ready
from .sessions import end, owner_connector

log = logging.getLogger("heroes_service.visualization")
#: poll interval while a desktop was just submitted or runs without its socket yet
STARTING_POLL_S = 0.5
#: how long after submit a PENDING desktop still counts as starting (a queued one falls back to the normal poll)
STARTING_WINDOW_S = 60


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


class Reconciler:
    def __init__(self, sessions: sessionmaker, settings, viewers: Viewers):
        self.sessions = sessions
        self.settings = settings
        self.viewers = viewers
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="desktops-reconciler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.cycle()
            except Exception:  # noqa: BLE001 - one bad cycle must not end the thread; logged with its trace
                log.exception("desktop reconcile cycle failed")
            # a desktop that is coming up is looked at twice a second, so "ready" follows Slurm within ~0.5 s
            self._wake.wait(STARTING_POLL_S if self._starting else self.settings.visualization_poll_s)
            self._wake.clear()

    def cycle(self) -> int:
        """One pass over every live desktop; returns how many rows changed."""
        with self.sessions() as session:
            rows = m.live_sessions(session)
            by_cluster: dict[str, list[m.DesktopSession]] = defaultdict(list)
            for row in rows:
                by_cluster[row.cluster_id].append(row)
            now = m.utcnow()
            self._starting = any(
                (r.state == m.RUNNING and not r.socket_path) or
                (r.state in (m.SUBMITTING, m.PENDING) and (now - m.aware(r.created_at)).total_seconds() < STARTING_WINDOW_S)
                for r in rows)
            changed = 0
            for cluster_id, group in by_cluster.items():
                cluster = session.get(Cluster, cluster_id)
                if cluster is None:
                    for row in group:
                        row.state, row.end_reason, row.ended_at = "ENDED", "cluster removed", m.utcnow()
                    continue
                try:
                    changed += self._cluster(cluster, group)
                except ClusterError as exc:
                    log.warning("desktops on %s: %s (next cycle retries)", cluster.name, exc)
            session.commit()
        return changed

    def _cluster(self, cluster: Cluster, rows: list[m.DesktopSession]) -> int:
        submitted = [r for r in rows if r.job_id]
        if not submitted:
            return 0
        slurm = SlurmClient(service_connector(cluster), timeout=30)
        queue = {j.job_id: j for j in slurm.queue(job_ids=[r.job_id for r in submitted])}
        gone = [r.job_id for r in submitted if r.job_id not in queue]
        if gone:
            queue.update({j.job_id: j for j in slurm.accounting(job_ids=gone, all_users=True)})
        changed = 0
        for row in submitted:
            job = queue.get(row.job_id)
            if job is None:
                continue  # neither in the queue nor (yet) in the accounting: ask again next cycle
            changed += self._apply(cluster, row, job)
        return changed

    def _apply(self, cluster: Cluster, row: m.DesktopSession, job: Job) -> int:
        before = (row.state, row.node, row.socket_path)
        now = m.utcnow()
        if job.state not in ACTIVE_STATES:
            row.state = job.state
            row.ended_at = row.ended_at or now
            if job.state == "TIMEOUT":
                row.end_reason = row.end_reason or m.TIME_LIMIT
            return 1
        if job.state == "PENDING":
            row.state, row.reason = m.PENDING, job.reason[:255]
        elif job.state in ("RUNNING", "COMPLETING"):
            if row.state != m.RUNNING:
                row.state, row.reason = m.RUNNING, ""
                row.started_at = now - timedelta(seconds=_elapsed_s(job.elapsed))
            row.node = job.nodes[:255]
            if not row.socket_path:
                self._read_ready(cluster, row)
            else:
                self._cull_if_idle(cluster, row)
        return int(before != (row.state, row.node, row.socket_path))

    def _read_ready(self, cluster: Cluster, row: m.DesktopSession) -> None:
        result = owner_connector(cluster, row.cluster_login).run(["cat", "--", f"{row.session_dir}/{READY_FILE}"],
                                                                 timeout=30)
        ready = parse_ready(result.stdout) if result.ok else None
        if ready is not None:
            row.socket_path, row.node, row.ready_at = ready["socket"], ready["node"], m.utcnow()

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
