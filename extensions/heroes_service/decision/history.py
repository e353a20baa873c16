"""Job history: the Standard Workload Format (SWF) reader and the job record the predictor learns from.

SWF (Parallel Workloads Archive) has one job per line, 18 whitespace-separated numeric fields, ``;`` comment
lines (some of them ``; Key: value`` header entries) and ``-1`` for "unknown". We keep the trace as numpy
columns (fast sweeps over 10^5 jobs) with every unknown turned into NaN, so no later step can mistake ``-1``
for a real value. The same :class:`JobRecord` describes the service's own finished steps, so history from
imported traces and from the gateway share one shape.
"""
from __future__ import annotations

import gzip
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

# 0-based column positions of the SWF fields we keep (SWF numbers them 1..18).
SWF_FIELDS = (
    "job_id", "submit", "wait", "run", "alloc_procs", "avg_cpu", "used_mem", "req_procs", "req_time",
    "req_mem", "status", "user", "group", "executable", "queue", "partition", "preceding", "think_time",
)
N_SWF_FIELDS = len(SWF_FIELDS)


class JobRecord(NamedTuple):
    """One finished (or running) job. ``None`` (NaN in a :class:`Trace`) means unknown.

    Times are seconds; ``submit`` is seconds since an arbitrary origin (SWF: the trace start).
    """

    job_id: int
    submit: float
    wait: float | None
    run: float | None
    req_procs: float | None
    req_time: float | None
    req_mem: float | None = None
    status: int | None = None
    user: int | None = None
    group: int | None = None
    executable: int | None = None
    queue: int | None = None
    partition: int | None = None
    alloc_procs: float | None = None
    used_mem: float | None = None


@dataclass
class Trace:
    """A job history as columns (float64 arrays, NaN = unknown), sorted by submit time.

    ``header`` holds the ``; Key: value`` lines of an SWF file; ``skipped`` counts data lines that were not
    18 numbers (kept out rather than guessed at).
    """

    columns: dict[str, np.ndarray]
    header: dict[str, str] = field(default_factory=dict)
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.columns["submit"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def finish(self) -> np.ndarray:
        """When each job left the machine: submit + wait + run.

        Some traces have no wait times (``-1`` everywhere); their finish is then taken as submit + run, the
        earliest it can have been. NaN when the run time is unknown: such a job never becomes history.
        """
        wait = np.where(np.isnan(self["wait"]), 0.0, self["wait"])
        return self["submit"] + wait + self["run"]

    def head(self, n: int) -> "Trace":
        """The first ``n`` jobs (by submit time)."""
        return Trace({k: v[:n].copy() for k, v in self.columns.items()}, dict(self.header), self.skipped)

    def time_zone_offset(self) -> float:
        """Seconds to add to ``UnixStartTime + submit`` to get local wall-clock time (0 if not stated)."""
        try:
            return float(self.header.get("TimeZone", "0").split()[0])
        except (ValueError, IndexError):
            return 0.0

    def unix_start(self) -> float:
        try:
            return float(self.header.get("UnixStartTime", "0").split()[0])
        except (ValueError, IndexError):
            return 0.0

    def records(self) -> Iterator[JobRecord]:
        """Row view, for code that wants one job at a time (slow; not for sweeps)."""
        def val(name: str, i: int):
            x = self.columns[name][i]
            return None if math.isnan(x) else float(x)

        for i in range(len(self)):
            status = val("status", i)
            yield JobRecord(
                job_id=int(self["job_id"][i]) if not math.isnan(self["job_id"][i]) else i + 1,
                submit=float(self["submit"][i]), wait=val("wait", i), run=val("run", i),
                req_procs=val("req_procs", i), req_time=val("req_time", i), req_mem=val("req_mem", i),
                status=None if status is None else int(status),
                user=_int_or_none(val("user", i)), group=_int_or_none(val("group", i)),
                executable=_int_or_none(val("executable", i)), queue=_int_or_none(val("queue", i)),
                partition=_int_or_none(val("partition", i)), alloc_procs=val("alloc_procs", i),
                used_mem=val("used_mem", i),
            )


def _int_or_none(x: float | None) -> int | None:
    return None if x is None else int(x)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def parse_swf_lines(lines: Iterable[str]) -> Trace:
    """Parse SWF text. Header ``; Key: value`` lines go to ``header``; unknown (negative) values become NaN.

    Negative numbers are "unknown" in SWF (``-1``), except the status field where only ``-1`` is unknown but
    0/1/5 are codes, and the preceding-job/think-time fields which we do not use. The submit time must be
    known: a job without one cannot be placed in time and is skipped.
    """
    header: dict[str, str] = {}
    rows: list[list[float]] = []
    skipped = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line.startswith(";"):
            body = line[1:].strip()
            key, sep, value = body.partition(":")
            if sep and key and " " not in key.strip():
                header.setdefault(key.strip(), value.strip())
            continue
        parts = line.split()
        if len(parts) < N_SWF_FIELDS:
            skipped += 1
            continue
        try:
            row = [float(p) for p in parts[:N_SWF_FIELDS]]
        except ValueError:
            skipped += 1
            continue
        if row[1] < 0 or not math.isfinite(row[1]):
            skipped += 1
            continue
        rows.append(row)
    data = np.array(rows, dtype=np.float64).reshape(-1, N_SWF_FIELDS)
    data[data < 0] = np.nan  # -1 (or any negative) = unknown
    order = np.argsort(data[:, 1], kind="stable")
    data = data[order]
    columns = {name: data[:, i].copy() for i, name in enumerate(SWF_FIELDS)}
    return Trace(columns, header, skipped)


def read_swf(path: str | Path) -> Trace:
    """Read an SWF file (plain or ``.gz``) into a :class:`Trace` sorted by submit time."""
    path = Path(path)
    with _open_text(path) as handle:
        return parse_swf_lines(handle)


def trace_from_records(records: Iterable[JobRecord]) -> Trace:
    """Build a :class:`Trace` from job records (the service's own finished steps, sacct imports, tests)."""
    names = {
        "job_id": "job_id", "submit": "submit", "wait": "wait", "run": "run", "alloc_procs": "alloc_procs",
        "used_mem": "used_mem", "req_procs": "req_procs", "req_time": "req_time", "req_mem": "req_mem",
        "status": "status", "user": "user", "group": "group", "executable": "executable", "queue": "queue",
        "partition": "partition",
    }
    recs = list(records)
    columns: dict[str, np.ndarray] = {}
    for col in SWF_FIELDS:
        attr = names.get(col)
        values = [getattr(r, attr) if attr else None for r in recs]
        columns[col] = np.array([np.nan if v is None or (isinstance(v, (int, float)) and v < 0) else float(v)
                                 for v in values], dtype=np.float64)
    order = np.argsort(columns["submit"], kind="stable")
    columns = {k: v[order] for k, v in columns.items()}
    return Trace(columns)
