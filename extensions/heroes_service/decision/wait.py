"""Queue wait per candidate cluster, asked of Slurm itself: ``sbatch --test-only``.

``sbatch --test-only`` runs the scheduler's own planning for a job of the given shape without submitting it
and prints ``sbatch: Job 123 to start at 2026-11-25T23:04:48 using 1 processors on nodes ...``. That start is
Slurm's backfill plan: it knows the running jobs' limits, reservations and the priorities, which no model of
ours could. It is printed in the controller's local time without a zone, so the cluster's UTC offset is read
once an hour with ``date +%z`` on the same login node.

Each answer is cached per (cluster, shape) for ``wait_cache_s`` (30 s). After that an entry is still served for
up to ``wait_stale_s`` while one background refresh asks Slurm again, so a steady stream of ``decide`` calls
never waits for SSH; only a shape never seen (or long unused) costs one round trip, and candidates are asked in
parallel. The start time is stored, not the wait, so a cached answer's wait shrinks as time passes.

The test runs as the calling user (their per-user certificate, or the cluster's service account): Slurm
answers with that account's limits and partitions, and a shape the cluster cannot run ("Requested node
configuration is not available") makes the candidate ineligible with Slurm's words.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..clusterjobs.script import render_script
from ..clusters.connector import ClusterConnector
from ..clusters.errors import ClusterError
from .costs import Shape

log = logging.getLogger("heroes_service.decision")

_START = re.compile(r"to start at (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})")
_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")
#: the planning-only job's script (never runs; sbatch wants one): from the one renderer like every batch script
TEST_SCRIPT = render_script([], exec_argv=["true"], preamble=())
OFFSET_TTL_S = 3600.0
#: answers kept before old ones are pruned (one per cluster and job shape in use)
MAX_ENTRIES = 10_000


class WaitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEROES_SERVICE_DECISION_", extra="ignore")

    wait_cache_s: float = Field(30.0, ge=0, description="Seconds a queue-wait answer of Slurm is fresh.")
    wait_stale_s: float = Field(120.0, ge=0, description="Seconds an older answer is still served while a "
                                                         "background refresh asks Slurm again.")
    wait_timeout_s: float = Field(20.0, gt=0, description="Longest wait for one sbatch --test-only.")


@lru_cache
def get_wait_settings() -> WaitSettings:
    return WaitSettings()


@dataclass(frozen=True)
class WaitAnswer:
    """Slurm's plan for a job of one shape on one cluster (``start_at`` UTC), or why there is none."""

    start_at: datetime | None
    error: str
    fetched: float            # time.monotonic() of the answer
    nodes: str = ""

    def wait_s(self, now: datetime | None = None) -> float | None:
        if self.start_at is None:
            return None
        now = now or datetime.now(timezone.utc)
        return max(0.0, (self.start_at - now).total_seconds())


def test_only_argv(shape: Shape) -> list[str]:
    """sbatch's argv for a planning-only job of ``shape`` (every element is quoted by the connector)."""
    argv = ["sbatch", "--test-only", "--job-name=heroes.test-only", "--output=/dev/null",
            f"--nodes={shape.nodes}", f"--ntasks={shape.tasks}", f"--cpus-per-task={shape.cpus_per_task}",
            f"--mem={shape.memory_mb}M", f"--time={max(1, round(shape.time_s / 60))}"]
    if shape.partition:
        argv.append(f"--partition={shape.partition}")
    if shape.gpus:
        argv.append(f"--gpus={shape.gpus}")
    return argv


def parse_start(text: str) -> datetime | None:
    """The naive local start time in sbatch --test-only's message (None when it printed none)."""
    match = _START.search(text or "")
    return datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S") if match else None


def parse_offset(text: str) -> timedelta:
    """``date +%z`` output (``+0100``) as a timedelta; ValueError otherwise."""
    match = _OFFSET.match((text or "").strip())
    if not match:
        raise ValueError(f"not a UTC offset: {text.strip()[:40]!r}")
    sign = -1 if match.group(1) == "-" else 1
    return sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))


def slurm_error(text: str) -> str:
    """The line of sbatch's stderr worth showing (``allocation failure: ...``, ``sbatch: error: ...``)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() or "failure" in line.lower():
            return line[:300]
    return (lines[-1] if lines else "sbatch --test-only failed")[:300]


class WaitCache:
    """Process-wide cache of Slurm's start-time plans, keyed by (cluster id, shape)."""

    def __init__(self, settings: WaitSettings | None = None, workers: int = 4):
        self.settings = settings or get_wait_settings()
        self._answers: dict[tuple, WaitAnswer] = {}
        self._offsets: dict[str, tuple[float, timedelta]] = {}
        self._inflight: dict[tuple, Future] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decision-wait")
        self.slurm_calls = 0   # sbatch --test-only commands run (tests and the benchmark read it)

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()

    def waits(self, requests: list[tuple[str, ClusterConnector | None, Shape]]) -> list[WaitAnswer]:
        """Answers for several (cluster id, connector, shape) at once: misses are asked in parallel.

        A connector of None (no access) is not asked; its answer carries the reason given by the caller.
        """
        now = time.monotonic()
        futures: list[WaitAnswer | Future] = []
        for cluster_id, conn, shape in requests:
            key = (cluster_id, shape.key())
            with self._lock:
                answer = self._answers.get(key)
                age = now - answer.fetched if answer else None
                if answer is not None and age <= self.settings.wait_cache_s:
                    futures.append(answer)
                    continue
                if conn is None:
                    futures.append(WaitAnswer(None, "no connection", now))
                    continue
                future = self._inflight.get(key)
                if future is None:
                    future = self._pool.submit(self._refresh, key, cluster_id, conn, shape)
                    self._inflight[key] = future
            futures.append(answer if answer is not None and age <= self.settings.wait_stale_s else future)
        out = []
        for item in futures:
            if isinstance(item, WaitAnswer):
                out.append(item)
                continue
            try:
                out.append(item.result(timeout=self.settings.wait_timeout_s + 5))
            except FutureTimeout:
                out.append(WaitAnswer(None, "Slurm did not answer sbatch --test-only in time", time.monotonic()))
        return out

    def _refresh(self, key: tuple, cluster_id: str, conn: ClusterConnector, shape: Shape) -> WaitAnswer:
        try:
            answer = self._ask(cluster_id, conn, shape)
        except Exception as exc:  # noqa: BLE001 - a broken cluster makes one candidate ineligible, never the call
            log.warning("sbatch --test-only on %s failed: %s", conn.cluster, exc)
            answer = WaitAnswer(None, f"cannot ask Slurm: {str(exc)[:300]}", time.monotonic())
        with self._lock:
            self._answers[key] = answer
            self._inflight.pop(key, None)
            if len(self._answers) > MAX_ENTRIES:
                self._prune()
        return answer

    def _prune(self) -> None:
        """Forget answers too old to be served (called with the lock held, when the cache grew large)."""
        now = time.monotonic()
        for key in [k for k, a in self._answers.items() if now - a.fetched > self.settings.wait_stale_s]:
            del self._answers[key]

    def _ask(self, cluster_id: str, conn: ClusterConnector, shape: Shape) -> WaitAnswer:
        offset = self._offset(cluster_id, conn)
        timeout = self.settings.wait_timeout_s
        result = conn.run(test_only_argv(shape), stdin=TEST_SCRIPT, timeout=timeout)
        self.slurm_calls += 1
        text = (result.stderr or "") + (result.stdout or "")
        start = parse_start(text)
        if result.rc != 0 or start is None:
            return WaitAnswer(None, f"Slurm refuses this job shape: {slurm_error(text)}", time.monotonic())
        nodes = re.search(r"on nodes (\S+)", text)
        start_utc = (start - offset).replace(tzinfo=timezone.utc)
        return WaitAnswer(start_utc, "", time.monotonic(), nodes.group(1) if nodes else "")

    def _offset(self, cluster_id: str, conn: ClusterConnector) -> timedelta:
        now = time.monotonic()
        with self._lock:
            cached = self._offsets.get(cluster_id)
        if cached and now - cached[0] < OFFSET_TTL_S:
            return cached[1]
        result = conn.run(["date", "+%z"], timeout=self.settings.wait_timeout_s)
        if result.rc != 0:
            raise ClusterError(f"date +%z failed: {result.stderr.strip()[:200]}")
        offset = parse_offset(result.stdout)
        with self._lock:
            self._offsets[cluster_id] = (now, offset)
        return offset


_cache: WaitCache | None = None
_cache_lock = threading.Lock()


def wait_cache() -> WaitCache:
    """The process's one cache (decide and submit's ``auto`` share it)."""
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = WaitCache()
        return _cache
