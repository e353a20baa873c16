"""One reconciler per cluster for every kind of job: ONE ``squeue`` per cycle, at most one ``sacct``.

Each capability that has jobs on clusters registers a ``Tracker`` (the workflow engine for its steps,
``ClusterJobs`` for servers and kernels, ``visualization.tracker.DesktopTracker`` for desktops). A cycle for one cluster asks every tracker which jobs
it has live there (``prepare``), runs one ``squeue`` for all of them as the gateway's service account
(a Slurm operator, so ``PrivateData=jobs`` hides nothing from it), one ``sacct`` for the jobs that left
the queue or ended, and hands each tracker what Slurm said about its own jobs (``apply``) and the whole
queue by job name (to adopt jobs whose ``sbatch`` answer was lost). Then each tracker may do its own
bookkeeping (``finish``): instance states, staging out.

Threads: a supervisor starts one thread per cluster that any tracker has live work on; a thread with
nothing to do for three cycles ends (the supervisor starts it again when needed). ``wake(cluster_id)``
runs the next cycle at once (rate-limited to ``min_gap_s``), for callers waiting for a job to start.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from ..clusters.errors import ClusterError
from ..clusters.identity import service_connector
from ..clusters.models import Cluster, cluster_by_id
from ..clusters.slurm import ACTIVE_STATES, FINAL_STATES, Job, SlurmClient

log = logging.getLogger("heroes_service.clusterjobs")

LIVE, FINAL, ENDED, MISSING = "live", "final", "ended", "missing"


@dataclass
class CycleStats:
    """What one reconcile cycle did (tests and the benchmarks read it)."""

    cluster: str
    slurm_commands: int = 0
    tracked: int = 0
    transitions: int = 0
    errors: list[str] = field(default_factory=list)
    by_tracker: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """What Slurm said about one tracked job this cycle.

    ``live``: queued or running (``job`` from squeue or sacct); ``final``: ended with its accounting
    record (exit code known); ``ended``: squeue shows a final state but sacct has no record yet;
    ``missing``: in neither (a tracker counts cycles before it calls the job lost)."""

    kind: str
    job: Job | None = None


class Tracker(Protocol):
    """A capability's jobs, as the reconciler sees them."""

    name: str

    def live_cluster_ids(self) -> set[str]:
        """Clusters with live work of this tracker (the supervisor keeps a thread for each)."""

    def prepare(self, cluster: Cluster, stats: CycleStats) -> dict[Any, str | None] | None:
        """Jobs to look up this cycle: tracker key -> Slurm job id (None: no id yet, adopt it by its name
        from the queue); None: nothing live on this cluster. An empty dict costs no Slurm command."""

    def apply(self, cluster: Cluster, observed: dict[Any, Observation], queue_by_name: dict[str, Job],
              stats: CycleStats) -> None:
        """Record what Slurm said (one observation per key ``prepare`` gave)."""

    def finish(self, cluster: Cluster, stats: CycleStats) -> None:
        """Bookkeeping after the cycle (states derived from the jobs', follow-up work)."""

    def cluster_gone(self, cluster_id: str) -> None:
        """The cluster's record was deleted while work was live."""


def observe(tracked: dict[Any, str], queue: dict[str, Job], accounted: dict[str, Job]) -> dict[Any, Observation]:
    """One observation per tracked job from one ``squeue`` and one ``sacct``."""
    out: dict[Any, Observation] = {}
    for key, job_id in tracked.items():
        if not job_id:
            continue  # no id yet: the tracker adopts it by name from the queue
        queued = queue.get(job_id)
        row = accounted.get(job_id)
        if queued is not None and queued.state in ACTIVE_STATES:
            out[key] = Observation(LIVE, queued)
        elif queued is not None and queued.state == "COMPLETED":
            # exit code 0 by definition; the accounting record, when there is one, carries the ledger's TRES
            final_row = row is not None and row.state == "COMPLETED" and row.partition
            out[key] = Observation(FINAL, row if final_row else queued)
        # a just-ended job can have a provisional accounting record (no partition yet): wait a cycle
        elif row is not None and row.state in FINAL_STATES and row.partition and row.name != "allocation":
            out[key] = Observation(FINAL, row)
        elif queued is not None and queued.state in FINAL_STATES:
            out[key] = Observation(ENDED, queued)
        elif queued is not None:
            out[key] = Observation(LIVE, queued)
        elif row is not None and row.state not in FINAL_STATES:
            out[key] = Observation(LIVE, row)
        else:
            out[key] = Observation(MISSING, None)
    return out


def needs_accounting(job_id: str, queue: dict[str, Job]) -> bool:
    """Jobs whose end (exit code, the ledger's allocated TRES) only the accounting knows: not in the queue, or
    in it with a final state. Live jobs never cost a ``sacct``."""
    job = queue.get(job_id)
    return job is None or job.state not in ACTIVE_STATES


class Reconciler:
    """One per app (``app.state.cluster_jobs.reconciler``): every tracker's jobs, one squeue per cluster."""

    def __init__(self, sessions: sessionmaker[Session], *, interval_s: float = 3.0, min_gap_s: float = 0.5):
        self.sessions = sessions
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self.trackers: list[Tracker] = []
        self.last_cycles: dict[str, CycleStats] = {}
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._wakes: dict[str, threading.Event] = {}
        self._cycle_locks: dict[str, threading.Lock] = {}
        self._cycled = threading.Condition()
        self._supervisor: threading.Thread | None = None
        self._lock = threading.Lock()

    def register(self, tracker: Tracker) -> None:
        if tracker not in self.trackers:
            self.trackers.append(tracker)

    # --- one cycle -----------------------------------------------------------------------------------------
    def _cycle_lock(self, cluster_id: str) -> threading.Lock:
        with self._lock:
            return self._cycle_locks.setdefault(cluster_id, threading.Lock())

    def cycle(self, cluster_id: str) -> CycleStats | None:
        """One cycle for one cluster; None when no tracker has live work there. Cycles of one cluster never
        overlap (a woken cycle and the timed one are serialised)."""
        with self._cycle_lock(cluster_id):
            stats = self._cycle(cluster_id)
        with self._cycled:
            self._cycled.notify_all()
        return stats

    def _cycle(self, cluster_id: str) -> CycleStats | None:
        with self.sessions() as session:
            cluster = cluster_by_id(session, None, cluster_id)
            if cluster is not None:
                session.expunge(cluster)
        if cluster is None:
            for tracker in self.trackers:
                tracker.cluster_gone(cluster_id)
            return None
        stats = CycleStats(cluster.name)
        tracked = {t.name: t.prepare(cluster, stats) for t in self.trackers}
        if all(v is None for v in tracked.values()):
            return None
        wanted = {job_id for keys in tracked.values() if keys for job_id in keys.values() if job_id}
        stats.tracked = len(wanted)
        stats.by_tracker = {name: len(keys or {}) for name, keys in tracked.items()}
        if any(tracked.values()):
            queue, accounted, polled = self._poll(cluster, wanted, stats)
        else:
            queue, accounted, polled = {}, {}, True
        by_name = {j.name: j for j in queue.values()} if polled else {}
        for tracker in self.trackers:
            keys = tracked.get(tracker.name)
            if keys is not None and polled:
                tracker.apply(cluster, observe(keys, queue, accounted), by_name, stats)
        for tracker in self.trackers:
            if tracked.get(tracker.name) is not None:
                tracker.finish(cluster, stats)
        self.last_cycles[cluster.name] = stats
        return stats

    def _poll(self, cluster: Cluster, wanted: set[str], stats: CycleStats) -> tuple[dict, dict, bool]:
        """(queue by job id, accounting by job id, whether squeue answered)."""
        slurm = SlurmClient(service_connector(cluster), timeout=60)
        try:
            stats.slurm_commands += 1
            queue = {j.job_id: j for j in slurm.queue()}
        except ClusterError as exc:
            stats.errors.append(f"squeue: {exc}")
            log.warning("reconciler %s: squeue failed: %s", cluster.name, exc)
            return {}, {}, False
        need = sorted(j for j in wanted if needs_accounting(j, queue))
        accounted: dict[str, Job] = {}
        if need:
            try:
                stats.slurm_commands += 1
                accounted = {row.job_id: row for row in slurm.accounting(job_ids=need, all_users=True)}
            except ClusterError as exc:
                stats.errors.append(f"sacct: {exc}")
                log.warning("reconciler %s: sacct failed: %s", cluster.name, exc)
        return queue, accounted, True

    # --- threads -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the supervisor, which keeps one thread per cluster with live work of any tracker."""
        if self._supervisor is not None:
            return
        self._stop.clear()
        self._supervisor = threading.Thread(target=self._supervise, name="cj-supervisor", daemon=True)
        self._supervisor.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        for event in list(self._wakes.values()):
            event.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        for thread in list(self._threads.values()):
            thread.join(timeout)
        self._supervisor = None

    @property
    def running(self) -> bool:
        return self._supervisor is not None and not self._stop.is_set()

    def wake(self, cluster_id: str) -> None:
        """Run the next cycle of ``cluster_id`` now (starts its thread if needed)."""
        self._wake_event(cluster_id).set()
        if self.running:
            self._ensure_thread(cluster_id)

    def wait_cycle(self, timeout: float) -> None:
        """Block until any cycle ends (or ``timeout``): for callers waiting for a state change."""
        with self._cycled:
            self._cycled.wait(timeout)

    def _wake_event(self, cluster_id: str) -> threading.Event:
        with self._lock:
            return self._wakes.setdefault(cluster_id, threading.Event())

    def _ensure_thread(self, cluster_id: str) -> None:
        with self._lock:
            thread = self._threads.get(cluster_id)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=self._loop, args=(cluster_id,), daemon=True,
                                          name=f"cj-reconciler-{cluster_id[:8]}")
                self._threads[cluster_id] = thread
                thread.start()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                for cluster_id in set().union(*(t.live_cluster_ids() for t in self.trackers)):
                    self._ensure_thread(cluster_id)
            except Exception:  # noqa: BLE001 - the supervisor must survive a database hiccup
                log.exception("reconciler supervisor cycle failed")
            self._stop.wait(self.interval_s)

    def _loop(self, cluster_id: str) -> None:
        idle = 0
        wake = self._wake_event(cluster_id)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                stats = self.cycle(cluster_id)
                idle = idle + 1 if stats is None else 0
            except Exception:  # noqa: BLE001 - next cycle tries again
                log.exception("reconciler of cluster %s failed", cluster_id)
            if idle >= 3 and not wake.is_set():
                return  # nothing live here: the supervisor (or a wake) starts the thread again
            wake.wait(self.interval_s)
            wake.clear()
            gap = self.min_gap_s - (time.monotonic() - started)
            if gap > 0:
                self._stop.wait(gap)
