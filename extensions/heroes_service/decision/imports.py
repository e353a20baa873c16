"""Strict readers for imported job history: SWF traces and ``sacct`` dumps, validated line by line.

:mod:`.history` reads SWF for offline evaluation and quietly skips lines it cannot use; an import into the
service must instead refuse the whole file when any line is malformed, and say which line (the caller fixes
the file and sends it again; nothing is half-stored). Both readers return :class:`ImportedJob` rows with
absolute epoch times, so imported jobs and the gateway's own steps share one clock.

Jobs that never ran (pending, or cancelled before they started) are valid lines but not history: they are
counted in ``ImportResult.not_finished`` and left out.

Units: times in seconds, memory in MiB per node (SWF knows no nodes, so a whole SWF job counts as one node),
energy in joules.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime

from ..clusters.slurm import parse_size_mb

SWF_FIELD_COUNT = 18
#: the documented column order of a header-less dump (``sacct -P -n -o ...``)
SACCT_DEFAULT_COLUMNS = ("JobID", "User", "Submit", "Start", "End", "Elapsed", "Timelimit", "ReqMem", "MaxRSS",
                         "NCPUS", "NNodes", "State", "Partition")
#: Slurm states of a job that ran and ended (its elapsed time is a real run time)
FINISHED_STATES = frozenset({"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL",
                             "PREEMPTED", "DEADLINE", "BOOT_FAIL"})
SWF_STATUS = {0: "FAILED", 1: "COMPLETED", 5: "CANCELLED"}
MAX_ERRORS = 50


class HistoryFileError(ValueError):
    """A file that does not validate; ``errors`` lists ``{"line": n, "message": ...}`` (first MAX_ERRORS)."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        first = errors[0] if errors else {"line": 0, "message": "empty"}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"line {first['line']}: {first['message']}{more}")


@dataclass
class ImportedJob:
    """One finished job, as stored in ``decision_history`` (NaN = unknown)."""

    job_id: str
    submit: float
    run_s: float
    wait_s: float = math.nan
    req_time_s: float = math.nan
    req_mem_mb: float = math.nan
    used_mem_mb: float = math.nan
    cores: float = math.nan
    nodes: float = math.nan
    energy_j: float = math.nan
    username: str = ""
    partition: str = ""
    state: str = ""


@dataclass
class ImportResult:
    jobs: list[ImportedJob] = field(default_factory=list)
    lines: int = 0
    not_finished: int = 0


class _Errors:
    def __init__(self):
        self.items: list[dict] = []

    def add(self, line: int, message: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append({"line": line, "message": message[:300]})

    def raise_any(self) -> None:
        if self.items:
            raise HistoryFileError(self.items)


# --- SWF --------------------------------------------------------------------------------------------------
def read_swf_strict(text: str) -> ImportResult:
    """Every data line must be exactly 18 numbers with a known (non-negative) submit time."""
    errors, result = _Errors(), ImportResult()
    origin = 0.0
    rows: list[tuple[int, list[float]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(";"):
            key, sep, value = line[1:].strip().partition(":")
            if sep and key.strip() == "UnixStartTime":
                try:
                    origin = float(value.split()[0])
                except (ValueError, IndexError):
                    errors.add(number, "UnixStartTime is not a number")
            continue
        parts = line.split()
        if len(parts) != SWF_FIELD_COUNT:
            errors.add(number, f"expected {SWF_FIELD_COUNT} fields, found {len(parts)}")
            continue
        try:
            values = [float(p) for p in parts]
        except ValueError:
            bad = next(p for p in parts if not _is_number(p))
            errors.add(number, f"{bad[:40]!r} is not a number")
            continue
        if not all(math.isfinite(v) for v in values):
            errors.add(number, "values must be finite")
            continue
        if values[1] < 0:
            errors.add(number, "the submit time (field 2) is unknown")
            continue
        rows.append((number, values))
    errors.raise_any()
    for _number, v in rows:
        result.lines += 1
        job = _swf_job(v, origin)
        if job is None:
            result.not_finished += 1
        else:
            result.jobs.append(job)
    return result


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _known(x: float) -> float:
    return x if x >= 0 else math.nan


def _swf_job(v: list[float], origin: float) -> ImportedJob | None:
    run = _known(v[3])
    if math.isnan(run):
        return None
    procs = _known(v[7]) if v[7] > 0 else _known(v[4])
    alloc = _known(v[4]) if v[4] > 0 else procs
    status = int(v[10]) if v[10] >= 0 else None
    return ImportedJob(
        job_id=str(int(v[0])), submit=origin + v[1], wait_s=_known(v[2]), run_s=run,
        req_time_s=_known(v[8]) if v[8] > 0 else math.nan,
        req_mem_mb=_known(v[9]) * procs / 1024 if v[9] > 0 and procs == procs else math.nan,
        used_mem_mb=_known(v[6]) * alloc / 1024 if v[6] > 0 and alloc == alloc else math.nan,
        cores=procs, nodes=1.0, username=f"swf:{int(v[11])}" if v[11] >= 0 else "",
        partition=str(int(v[15])) if v[15] >= 0 else "", state=SWF_STATUS.get(status, "") if status is not None else "")


# --- sacct ------------------------------------------------------------------------------------------------
def parse_duration(text: str) -> float:
    """Slurm durations: ``[D-]HH:MM:SS``, ``MM:SS``, ``D-HH[:MM]``, plain minutes; NaN for UNLIMITED etc."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "PARTITION_LIMIT", "INVALID", "NONE", "UNKNOWN"):
        return math.nan
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+(?:\.\d+)?))?", text)
    if not match:
        raise ValueError(f"{text[:40]!r} is not a Slurm duration")
    days, a, b, c = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + float(c or 0)
    elif c is not None:   # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + float(c)
    elif b is not None:   # MM:SS
        seconds = int(a) * 60 + int(b)
    else:                 # minutes
        seconds = int(a) * 60
    return float(seconds)


def parse_memory_mb(text: str, cores: float = math.nan, nodes: float = math.nan) -> float:
    """``512M``, ``4G``, ``1000Mn`` (per node), ``500Mc`` (per CPU: times CPUs per node), bare = KiB; MiB."""
    text = text.strip()
    if not text:
        return math.nan
    suffix = text[-1].lower() if text[-1] in "ncNC" else ""
    value = parse_size_mb(text[:-1] if suffix else text)
    if value is None:
        raise ValueError(f"{text[:40]!r} is not a memory size")
    if suffix == "c":
        per_node = cores / nodes if cores == cores and nodes == nodes and nodes > 0 else 1.0
        value *= per_node
    return value


def parse_time(text: str) -> float | None:
    """An ISO timestamp from sacct (the cluster's local time) as epoch seconds; None for Unknown/None."""
    text = text.strip()
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.fromisoformat(text).astimezone().timestamp()
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a timestamp") from None


def _count(text: str) -> float:
    text = text.strip()
    if not text:
        return math.nan
    if not re.fullmatch(r"\d{1,9}", text):
        raise ValueError(f"{text[:40]!r} is not a count")
    return float(text)


def _energy(text: str) -> float:
    """ConsumedEnergy(Raw): joules, with an optional K/M/G suffix (decimal, as sacct prints it)."""
    text = text.strip()
    if not text:
        return math.nan
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]?)", text)
    if not match:
        raise ValueError(f"{text[:40]!r} is not an energy")
    return float(match.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[match.group(2)]


_PARSERS = {
    "submit": parse_time, "start": parse_time, "end": parse_time, "elapsed": parse_duration,
    "elapsedraw": lambda t: float(t) if t.strip() else math.nan, "timelimit": parse_duration,
    "timelimitraw": lambda t: float(t) * 60 if t.strip() and t.strip().isdigit() else math.nan,
    "ncpus": _count, "alloccpus": _count, "reqcpus": _count, "nnodes": _count, "allocnodes": _count,
    "consumedenergyraw": _energy, "consumedenergy": _energy,
}


@dataclass
class _SacctJob:
    row: dict
    line: int
    max_rss_mb: float = math.nan
    energy_j: float = math.nan


def read_sacct_strict(text: str) -> ImportResult:
    """A ``sacct -P`` (or ``-p``) dump, with its header line or in :data:`SACCT_DEFAULT_COLUMNS` order.

    Allocation rows (``123``) give the job; step rows (``123.batch``, ``123.0``) add their peak memory
    (MaxRSS, taken as the per-node peak: HEROES steps run one task per node) and energy.
    """
    errors, result = _Errors(), ImportResult()
    lines = text.splitlines()
    columns: tuple[str, ...] | None = None
    trailing: bool | None = None  # `sacct -p` ends every line (header included) with the separator
    jobs: dict[str, _SacctJob] = {}
    steps: list[tuple[str, dict, int]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        fields = raw.rstrip("\r\n").split("|")
        if columns is None:
            if fields[0].strip().lower() in ("jobid", "jobidraw"):
                trailing = len(fields) > 1 and fields[-1] == ""
                columns = tuple(f.strip() for f in (fields[:-1] if trailing else fields))
                missing = [c for c in ("JobID", "Submit", "Elapsed") if c.lower() not in
                           {x.lower() for x in columns} and not (c == "JobID" and "jobidraw" in
                                                                  {x.lower() for x in columns})]
                if missing:
                    errors.add(number, f"header lacks the column(s) {', '.join(missing)}")
                    break
                continue
            columns = SACCT_DEFAULT_COLUMNS
        if trailing is None:  # no header: the first line says whether lines end with the separator
            trailing = len(fields) == len(columns) + 1 and fields[-1] == ""
        if trailing and fields[-1] == "":
            fields = fields[:-1]
        if len(fields) != len(columns):
            errors.add(number, f"expected {len(columns)} '|'-separated fields, found {len(fields)}")
            continue
        row = _parse_row(number, dict(zip((c.lower() for c in columns), fields)), errors)
        if row is None:
            continue
        job_id = (row.get("jobid") or row.get("jobidraw") or "").strip()
        if not re.fullmatch(r"[0-9][0-9_+\[\]-]{0,40}(\.[A-Za-z0-9_+-]{1,20})?", job_id):
            errors.add(number, f"JobID {job_id[:40]!r} is not a Slurm job id")
            continue
        base, dot, _step = job_id.partition(".")
        if dot:
            steps.append((base, row, number))
        elif base in jobs:
            errors.add(number, f"job {base} appears twice")
        else:
            jobs[base] = _SacctJob(row, number)
    errors.raise_any()
    if columns is None:
        return result
    for base, row, _number in steps:
        job = jobs.get(base)
        if job is None:
            continue  # a step whose job is outside the dump's window: nothing to learn
        rss = row.get("_maxrss", math.nan)
        if rss == rss:
            job.max_rss_mb = rss if job.max_rss_mb != job.max_rss_mb else max(job.max_rss_mb, rss)
    for base, job in jobs.items():
        result.lines += 1
        imported = _sacct_job(base, job)
        if imported is None:
            result.not_finished += 1
        else:
            result.jobs.append(imported)
    return result


def _parse_row(number: int, raw: dict[str, str], errors: _Errors) -> dict | None:
    row: dict = dict(raw)
    try:
        for name, parser in _PARSERS.items():
            if name in raw:
                try:
                    row[name] = parser(raw[name])
                except ValueError as exc:
                    raise ValueError(f"column {name}: {exc}") from None
        cores = row.get("ncpus", row.get("alloccpus", math.nan))
        nodes = row.get("nnodes", row.get("allocnodes", math.nan))
        for name, key in (("reqmem", "_reqmem"), ("maxrss", "_maxrss")):
            if name in raw:
                try:
                    row[key] = parse_memory_mb(raw[name], cores, nodes)
                except ValueError as exc:
                    raise ValueError(f"column {name}: {exc}") from None
    except ValueError as exc:
        errors.add(number, str(exc))
        return None
    return row


def _sacct_job(base: str, job: _SacctJob) -> ImportedJob | None:
    row = job.row
    state = (row.get("state") or "").strip().split(" ")[0].upper()
    submit, start, end = row.get("submit"), row.get("start"), row.get("end")
    run = row.get("elapsed", math.nan)
    if run != run:
        run = row.get("elapsedraw", math.nan)
    if run != run and start is not None and end is not None:
        run = max(end - start, 0.0)
    if submit is None or start is None or state not in FINISHED_STATES or run != run:
        return None
    req_time = row.get("timelimit", math.nan)
    if req_time != req_time:
        req_time = row.get("timelimitraw", math.nan)
    energy = row.get("consumedenergyraw", row.get("consumedenergy", math.nan))
    return ImportedJob(
        job_id=base, submit=submit, wait_s=max(start - submit, 0.0), run_s=float(run), req_time_s=req_time,
        req_mem_mb=row.get("_reqmem", math.nan), used_mem_mb=job.max_rss_mb,
        cores=row.get("ncpus", row.get("alloccpus", row.get("reqcpus", math.nan))),
        nodes=row.get("nnodes", row.get("allocnodes", math.nan)), energy_j=energy if energy and energy > 0 else math.nan,
        username=(row.get("user") or "").strip()[:255], partition=(row.get("partition") or "").strip()[:63],
        state=state)


def read_history(text: str, fmt: str) -> ImportResult:
    """Dispatch on ``fmt`` (``swf`` or ``sacct``)."""
    if fmt == "swf":
        return read_swf_strict(text)
    if fmt == "sacct":
        return read_sacct_strict(text)
    raise ValueError(f"unknown history format {fmt!r} (swf or sacct)")
