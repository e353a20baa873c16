"""One reader for EAR application CSVs: ``eacct -c``, the ``csv`` report plugin, the HEROES plugin, ours.

- Every row is validated; an error names the file, the line (1-based) and the column.
- ``read_files(paths) -> (rows, errors)`` is all-or-nothing: any error and ``rows`` is empty, so a
  caller (the service's ingestion endpoint) stores either every row of a request or none.
- Rows repeated within a request (same job, step, app id and node) are kept once.
- ``aggregate(rows)`` builds one summary per job step with EAR's rules (``eacct`` without ``-l``):
  power, bandwidth, I/O, GFLOPS and counters summed over nodes; time, CPI, TPI, frequencies, MPI %
  and GPU frequency/utilization averaged. Energy = DC power x time per node, summed over nodes.

Tolerated EAR quirks (reference: energy-and-decision.md, section 1): rows without the extended block
under an extended header (``report_sig_detail`` off), HEROES rows without the eight phase values
(``sig_ext`` missing), headers repeated inside a file (``eacct -c`` appends), empty numeric fields,
a workflow build's APPID/TEMP/CPU_POWER/DRAM_POWER columns, GPU values joined in one column.

Standard library only; rows are plain dataclasses so the service can map them to its tables.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Callable, Iterable

from . import columns as C

MAX_ERRORS_PER_FILE = 20
#: job and step ids are stored as 64-bit integers (Slurm's batch step 4294967294 fits)
MAX_ID = 2**63 - 1
PUE = 1.2                 # eacct's hard-coded PUE
CARBON_G_PER_KWH = 174.0  # eacct's hard-coded carbon intensity

_SOCKET_RE = re.compile(r"^(TEMP|CPU_POWER|DRAM_POWER)\d+$")
_INT_COLUMNS = {"JOBID", "STEPID"}
_STRING_COLUMNS = set(C.HEROES_ID_COLUMNS) | {
    "APPID", "USERID", "GROUPID", "ACCOUNTID", "JOBNAME", "ENERGY_TAG", "JOB_START_DATE", "JOB_END_DATE",
    "POLICY", "NODENAME", C.ESTIMATED_COLUMN,
}
_REQUIRED = C.JOB_COLUMNS + C.BASE_COLUMNS + C.SIGNATURE_COLUMNS + C.NODEMGR_COLUMNS

#: numeric columns kept on the row, in AppRow field order (after the string/int fields)
_KEPT_NUMERIC = (
    "POLICY_TH", "JOB_NPROCS", "JOB_START_TIME", "JOB_END_TIME", "EARL_ENABLED",
    "AVG_CPUFREQ_KHZ", "AVG_IMCFREQ_KHZ", "DEF_FREQ_KHZ", "TIME_SEC", "CPI", "TPI", "MEM_GBS", "IO_MBS",
    "PERC_MPI", "DC_NODE_POWER_W", "DRAM_POWER_W", "PCK_POWER_W", "CYCLES", "INSTRUCTIONS", "CPU_GFLOPS",
    "CPU_UTIL",
    "NODEMGR_DC_NODE_POWER_W", "NODEMGR_DRAM_POWER_W", "NODEMGR_PCK_POWER_W", "NODEMGR_MAX_DC_POWER_W",
    "NODEMGR_MIN_DC_POWER_W", "NODEMGR_TIME_SEC", "NODEMGR_AVG_CPUFREQ_KHZ", "NODEMGR_DEF_FREQ_KHZ",
)


@dataclass(frozen=True)
class ReadError:
    """Why a file was refused: where (file, 1-based line, column name) and what."""

    file: str
    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: column {self.column}: {self.message}" if self.column else f"{where}: {self.message}"


@dataclass(slots=True)
class AppRow:
    """One node's record of one job step (all EAR variants map to this)."""

    file: str
    line: int
    variant: str  # "ear" (eacct / csv plugin), "heroes" (HEROES plugin), "earlite" (our collector)
    job_id: int
    step_id: int
    app_id: str
    node: str
    user: str
    group: str
    account: str
    job_name: str
    policy: str
    policy_th: float | None
    nprocs: float | None
    start_time: float | None
    end_time: float | None
    earl_enabled: float | None
    avg_cpufreq_khz: float | None
    avg_imcfreq_khz: float | None
    def_freq_khz: float | None
    time_s: float | None
    cpi: float | None
    tpi: float | None
    mem_gbs: float | None
    io_mbs: float | None
    perc_mpi: float | None
    dc_power_w: float | None
    dram_power_w: float | None
    pck_power_w: float | None
    cycles: float | None
    instructions: float | None
    cpu_gflops: float | None
    cpu_util: float | None
    nodemgr_dc_power_w: float | None
    nodemgr_dram_power_w: float | None
    nodemgr_pck_power_w: float | None
    nodemgr_max_dc_power_w: float | None
    nodemgr_min_dc_power_w: float | None
    nodemgr_time_s: float | None
    nodemgr_avg_cpufreq_khz: float | None
    nodemgr_def_freq_khz: float | None
    gpu_power_w: tuple[float, ...] = ()
    gpu_freq_khz: tuple[float, ...] = ()
    gpu_util_perc: tuple[float, ...] = ()
    gpu_mem_util_perc: tuple[float, ...] = ()
    gpu_gflops: tuple[float, ...] = ()
    heroes_ids: tuple[str, ...] | None = None
    max_power_w: float | None = None
    phases: tuple[float | None, ...] | None = None
    estimated: frozenset[str] = frozenset()
    #: set by the reader: True when the EARL signature block holds the step's power and time
    uses_earl_signature: bool = True
    #: this node's average DC power and elapsed time, from the block eacct would use
    power_w: float | None = None
    seconds: float | None = None

    @property
    def energy_j(self) -> float | None:
        """DC node power x time, as eacct computes a node's energy."""
        power, secs = self.power_w, self.seconds
        return None if power is None or secs is None else power * secs

    @property
    def is_estimated(self) -> bool:
        """True when this row's power (hence energy) is an estimate, not a measurement."""
        names = ("DC_NODE_POWER_W", "NODEMGR_DC_NODE_POWER_W")
        return any(name in self.estimated for name in names)


class _Layout:
    """Column positions for one accepted field count of one header."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}
        ix = self.index
        self.n = len(names)
        self.job = ix["JOBID"]
        self.step = ix["STEPID"]
        self.app = ix.get("APPID")
        self.strings = [ix[n] for n in ("NODENAME", "USERID", "GROUPID", "ACCOUNTID", "JOBNAME", "POLICY")]
        self.kept = [ix[n] for n in _KEPT_NUMERIC]
        # other numeric columns: validated, not kept
        special = set(_STRING_COLUMNS) | _INT_COLUMNS | set(_KEPT_NUMERIC) | {"MAX_POWER_W", *C.PHASE_COLUMNS}
        self.gpu: dict[str, list[int]] = {}
        other = []
        for i, name in enumerate(names):
            match = C.GPU_COLUMN_RE.match(name)
            if match:
                self.gpu.setdefault(match.group(2), []).append(i)
            elif name not in special:
                other.append(i)
        self.other = other
        self.numeric = self.kept + other
        self.numeric_get = itemgetter(*self.numeric)
        self.ids = [ix[n] for n in C.HEROES_ID_COLUMNS] if "HEROES_INSTANCE_WORKFLOW_ID" in ix else None
        self.max_power = ix.get("MAX_POWER_W")
        self.phases = [ix[n] for n in C.PHASE_COLUMNS] if "COMP_BOUND" in ix else None
        self.estimated = ix.get(C.ESTIMATED_COLUMN)


def _check_header(path: str, names: list[str]) -> tuple[str | None, list[ReadError]]:
    """The file's variant, or errors naming the missing/unknown/duplicated columns."""
    errors: list[ReadError] = []
    seen = set()
    for name in names:
        if name in seen:
            errors.append(ReadError(path, 1, name, "column appears twice in the header"))
        seen.add(name)
    for name in _REQUIRED:
        if name not in seen:
            errors.append(ReadError(path, 1, name, "missing column"))
    allowed = set(_REQUIRED) | set(C.EXTENDED_COLUMNS) | set(C.HEROES_PREFIX_COLUMNS) | {"APPID", C.ESTIMATED_COLUMN}
    for name in names:
        if name not in allowed and not C.GPU_COLUMN_RE.match(name) and not _SOCKET_RE.match(name):
            errors.append(ReadError(path, 1, name, "unknown column (not in EAR's application layout)"))
    if names and names[0] == "HEROES_INSTANCE_WORKFLOW_ID":
        variant = "earlite" if C.ESTIMATED_COLUMN in seen else "heroes"
        for name in C.HEROES_ID_COLUMNS + ("MAX_POWER_W",):
            if name not in seen:
                errors.append(ReadError(path, 1, name, "missing column (HEROES plugin prefix)"))
    elif names and names[0] == "JOBID":
        variant = "ear"
    else:
        variant = None
        errors.append(ReadError(path, 1, names[0] if names else None,
                                "header must start with JOBID (eacct/csv plugin) or HEROES_INSTANCE_WORKFLOW_ID "
                                "(HEROES plugin)"))
    return variant, errors


def _layouts(names: list[str]) -> dict[int, _Layout]:
    """Accepted field counts: the full header, and EAR's known short rows (no phases / no extended block)."""
    options = [names]
    without_phases = [n for n in names if n not in C.PHASE_COLUMNS]
    without_ext = [n for n in names if n not in C.EXTENDED_COLUMNS]
    if len(without_phases) != len(names):
        options.append(without_phases)
    if len(without_ext) != len(names):
        options.append(without_ext)
        if len(without_phases) != len(names):
            options.append([n for n in without_ext if n not in C.PHASE_COLUMNS])
    layouts: dict[int, _Layout] = {}
    for option in options:
        layouts.setdefault(len(option), _Layout(option))
    return layouts


def _number(text: str) -> float | None:
    """A numeric field; empty means not measured. Raises ValueError on text, NaN or infinity."""
    if text == "" or text == "-":
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _gpu_values(fields: list[str], positions: list[int], names: list[str]) -> tuple[float, ...]:
    """All GPUs' values of one metric: one column per GPU, or one column with ',' / ' '-joined values."""
    values = []
    for pos in positions:
        text = fields[pos].strip()
        if not text:
            continue
        for part in text.replace(",", " ").split():
            try:
                value = float(part)
            except ValueError:
                raise _FieldError(names[pos], f"not a number: {fields[pos]!r}") from None
            if not math.isfinite(value):
                raise _FieldError(names[pos], f"not a finite number: {fields[pos]!r}")
            values.append(value)
    return tuple(values)


class _FieldError(Exception):
    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


def _parse_row(path: str, lineno: int, variant: str, fields: list[str], lay: _Layout) -> AppRow:
    names = lay.names
    try:
        numbers = list(map(float, lay.numeric_get(fields)))
        if not math.isfinite(sum(numbers)):  # NaN/inf anywhere propagates into the sum
            raise ValueError
    except ValueError:  # an empty, textual or non-finite field: find which, per field
        numbers = []
        for pos in lay.numeric:
            try:
                numbers.append(_number(fields[pos].strip()))
            except ValueError:
                raise _FieldError(names[pos], f"not a number: {fields[pos]!r}") from None
    kept = numbers[:len(lay.kept)]
    try:
        job_id = int(fields[lay.job])
    except ValueError:
        raise _FieldError("JOBID", f"not an integer: {fields[lay.job]!r}") from None
    try:
        step_id = int(fields[lay.step])
    except ValueError:
        raise _FieldError("STEPID", f"not an integer: {fields[lay.step]!r}") from None
    for column, value in (("JOBID", job_id), ("STEPID", step_id)):
        if not 0 <= value <= MAX_ID:
            raise _FieldError(column, f"{value} is not an id between 0 and {MAX_ID}")
    node, user, group, account, job_name, policy = (fields[i] for i in lay.strings)
    if not node:
        raise _FieldError("NODENAME", "empty")
    row = AppRow(path, lineno, variant, job_id, step_id, fields[lay.app] if lay.app is not None else "",
                 node, user, group, account, job_name, policy, *kept)
    # eacct uses the EARL signature when EARL ran; otherwise the node manager's power signature
    earl = bool(row.earl_enabled) or (bool(row.dc_power_w) and bool(row.time_s))
    row.uses_earl_signature = earl
    row.power_w = row.dc_power_w if earl else row.nodemgr_dc_power_w
    row.seconds = row.time_s if earl else row.nodemgr_time_s
    if row.power_w is None or row.seconds is None:
        column = "NODEMGR_DC_NODE_POWER_W" if row.power_w is None else "NODEMGR_TIME_SEC"
        raise _FieldError(column, "no DC power and time in either the EARL or the node manager signature")
    if row.seconds < 0:
        raise _FieldError("TIME_SEC" if earl else "NODEMGR_TIME_SEC", f"negative time: {row.seconds:g} s")
    if row.power_w < 0:
        raise _FieldError("DC_NODE_POWER_W" if earl else "NODEMGR_DC_NODE_POWER_W",
                          f"negative power: {row.power_w:g} W")
    if lay.gpu:
        gpu = lay.gpu
        row.gpu_power_w = _gpu_values(fields, gpu.get("POWER_W", []), names)
        row.gpu_freq_khz = _gpu_values(fields, gpu.get("FREQ_KHZ", []), names)
        row.gpu_util_perc = _gpu_values(fields, gpu.get("UTIL_PERC", []), names)
        row.gpu_mem_util_perc = _gpu_values(fields, gpu.get("MEM_UTIL_PERC", []), names)
        if "GFLOPS" in gpu:
            row.gpu_gflops = _gpu_values(fields, gpu["GFLOPS"], names)
    if lay.ids is not None:
        row.heroes_ids = tuple(fields[i] for i in lay.ids)
        text = fields[lay.max_power]
        try:
            row.max_power_w = _number(text)
        except ValueError:
            raise _FieldError("MAX_POWER_W", f"not a number: {text!r}") from None
        if lay.phases is not None:
            phases = []
            for pos in lay.phases:
                try:
                    phases.append(_number(fields[pos]))
                except ValueError:
                    raise _FieldError(names[pos], f"not a number: {fields[pos]!r}") from None
            row.phases = tuple(phases)
    if lay.estimated is not None and fields[lay.estimated]:
        marked = frozenset(fields[lay.estimated].split(","))
        unknown = marked.difference(names)
        if unknown:
            raise _FieldError(C.ESTIMATED_COLUMN, f"names unknown columns {sorted(unknown)}")
        row.estimated = marked
    return row


def read_file(path: str) -> tuple[list[AppRow], list[ReadError]]:
    """Parse and validate one application CSV (every variant); errors stop at 20 per file."""
    rows: list[AppRow] = []
    errors: list[ReadError] = []
    try:
        handle = open(path, "r", encoding="utf-8", newline="")
    except OSError as exc:
        return [], [ReadError(path, 0, None, f"cannot open: {exc.strerror or exc}")]
    with handle:
        try:
            header_line = handle.readline()
        except UnicodeDecodeError:
            return [], [ReadError(path, 1, None, "not UTF-8 text")]
        header_text = header_line.rstrip("\r\n").lstrip("\ufeff")
        if not header_text:
            return [], [ReadError(path, 1, None, "empty file (no header)")]
        if C.SEP not in header_text:
            found = next((s for s in (",", "\t", "|") if s in header_text), None)
            hint = f" (found {found!r}; EAR files are ';'-separated)" if found else ""
            return [], [ReadError(path, 1, None, f"header is not ';'-separated{hint}")]
        names = [n.strip() for n in header_text.split(C.SEP)]
        if names and names[-1] == "":  # a trailing ';' (the HEROES plugin's prefix ends with one)
            names.pop()
        variant, errors = _check_header(path, names)
        if errors:
            return [], errors
        layouts = _layouts(names)
        full = len(names)
        lineno = 1
        try:
            for line in handle:
                lineno += 1
                text = line.rstrip("\r\n")
                if not text.strip() or text == header_text:
                    continue  # blank line, or a header repeated by an appending writer
                fields = text.split(C.SEP)
                if len(fields) == full + 1 and fields[-1] == "":
                    fields.pop()
                lay = layouts.get(len(fields))
                if lay is None:
                    missing = names[len(fields)] if len(fields) < full else None
                    errors.append(ReadError(
                        path, lineno, missing,
                        f"expected {full} ';'-separated fields, found {len(fields)}"
                        + (" (truncated line?)" if len(fields) < full else "")))
                else:
                    try:
                        rows.append(_parse_row(path, lineno, variant, fields, lay))
                    except _FieldError as exc:
                        errors.append(ReadError(path, lineno, exc.column, exc.message))
                if len(errors) >= MAX_ERRORS_PER_FILE:
                    errors.append(ReadError(path, lineno, None, "too many errors; stopped reading this file"))
                    break
        except UnicodeDecodeError:
            errors.append(ReadError(path, lineno, None, "not UTF-8 text"))
    return rows, errors


def row_key(row: AppRow) -> tuple:
    """Identity of a node's record of a step (duplicates are ignored)."""
    return (row.job_id, row.step_id, row.app_id, row.node)


def read_files(paths: Iterable[str]) -> tuple[list[AppRow], list[ReadError]]:
    """Read many files all-or-nothing: ``(rows, [])`` or ``([], errors)``. Duplicate rows kept once."""
    rows: list[AppRow] = []
    errors: list[ReadError] = []
    for path in paths:
        file_rows, file_errors = read_file(os.fspath(path))
        errors.extend(file_errors)
        if not errors:
            rows.extend(file_rows)
    if errors:
        return [], errors
    seen: set[tuple] = set()
    unique = []
    for row in rows:
        key = row_key(row)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique, []


# ---------------------------------------------------------------- aggregation (eacct without -l)

@dataclass(slots=True)
class StepSummary:
    """One job step over all its nodes, aggregated as eacct does."""

    job_id: int
    step_id: int
    app_id: str
    nodes: list[str]
    user: str
    job_name: str
    heroes_ids: tuple[str, ...] | None
    start_time: float | None
    end_time: float | None
    time_s: float | None          # mean over nodes
    dc_power_w: float | None      # sum over nodes
    dram_power_w: float | None
    pck_power_w: float | None
    mem_gbs: float | None
    io_mbs: float | None
    cpu_gflops: float | None
    cycles: float | None
    instructions: float | None
    cpi: float | None             # mean over nodes
    tpi: float | None
    avg_cpufreq_khz: float | None
    avg_imcfreq_khz: float | None
    def_freq_khz: float | None
    perc_mpi: float | None
    cpu_util: float | None
    gpu_power_w: float | None     # sum over nodes and GPUs
    gpu_gflops: float | None
    gpu_freq_khz: float | None    # mean over the GPUs that drew power
    gpu_util_perc: float | None
    max_node_power_w: float | None
    energy_j: float               # sum over nodes of DC power x time
    estimated: bool
    estimated_columns: frozenset[str] = field(default_factory=frozenset)

    @property
    def energy_kwh(self) -> float:
        return self.energy_j / 3.6e6

    @property
    def gflops_per_w(self) -> float | None:
        """(CPU + GPU GFLOPS) / DC power, as eacct prints it."""
        if not self.dc_power_w:
            return None
        total = (self.cpu_gflops or 0.0) + (self.gpu_gflops or 0.0)
        return total / self.dc_power_w

    @property
    def carbon_g(self) -> float:
        """eacct's carbon footprint: energy x PUE 1.2 x 174 gCO2/kWh."""
        return self.energy_kwh * PUE * CARBON_G_PER_KWH


def _sum(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


_SUMMED = ("mem_gbs", "io_mbs", "cpu_gflops", "cycles", "instructions")
_AVERAGED = ("cpi", "tpi", "avg_imcfreq_khz", "def_freq_khz", "perc_mpi", "cpu_util")


def _summarise(group: list[AppRow]) -> StepSummary:
    """EAR's rules over one step's node rows (a single loop: this runs a million times in the benchmark)."""
    first = group[0]
    if len(group) == 1:
        r = first
        sums = {name: getattr(r, name) for name in _SUMMED}
        means = {name: getattr(r, name) for name in _AVERAGED}
        earl = r.uses_earl_signature
        dram = r.dram_power_w if earl else r.nodemgr_dram_power_w
        pck = r.pck_power_w if earl else r.nodemgr_pck_power_w
        freq = r.avg_cpufreq_khz if earl else r.nodemgr_avg_cpufreq_khz
        time_s, dc = r.seconds, r.power_w
        energy = (dc or 0.0) * (time_s or 0.0)
        start, end = r.start_time, r.end_time
        max_power = r.max_power_w if r.max_power_w is not None else r.nodemgr_max_dc_power_w
        nodes = [r.node]
    else:
        sums = {name: _sum([getattr(r, name) for r in group]) for name in _SUMMED}
        means = {name: _mean([getattr(r, name) for r in group]) for name in _AVERAGED}
        dram = _sum([r.dram_power_w if r.uses_earl_signature else r.nodemgr_dram_power_w for r in group])
        pck = _sum([r.pck_power_w if r.uses_earl_signature else r.nodemgr_pck_power_w for r in group])
        freq = _mean([r.avg_cpufreq_khz if r.uses_earl_signature else r.nodemgr_avg_cpufreq_khz for r in group])
        time_s = _mean([r.seconds for r in group])
        dc = _sum([r.power_w for r in group])
        energy = sum((r.power_w or 0.0) * (r.seconds or 0.0) for r in group)
        starts = [r.start_time for r in group if r.start_time is not None]
        ends = [r.end_time for r in group if r.end_time is not None]
        start, end = (min(starts) if starts else None), (max(ends) if ends else None)
        maxes = [r.max_power_w if r.max_power_w is not None else r.nodemgr_max_dc_power_w for r in group]
        maxes = [m for m in maxes if m is not None]
        max_power = max(maxes) if maxes else None
        nodes = [r.node for r in group]
    gpu_power = gpu_gflops = gpu_freq = gpu_util = None
    if any(r.gpu_power_w for r in group):
        active = [(p, f, u) for r in group
                  for p, f, u in zip(r.gpu_power_w, r.gpu_freq_khz or (None,) * len(r.gpu_power_w),
                                     r.gpu_util_perc or (None,) * len(r.gpu_power_w)) if p]
        if active:
            gpu_power = sum(p for p, _, _ in active)
            gpu_freq = _mean([f for _, f, _ in active])
            gpu_util = _mean([u for _, _, u in active])
    if any(r.gpu_gflops for r in group):
        gpu_gflops = sum(g for r in group for g in r.gpu_gflops)
    estimated_rows = [r for r in group if r.estimated]
    return StepSummary(
        first.job_id, first.step_id, first.app_id, nodes, first.user, first.job_name, first.heroes_ids,
        start, end, time_s, dc, dram, pck, sums["mem_gbs"], sums["io_mbs"], sums["cpu_gflops"],
        sums["cycles"], sums["instructions"], means["cpi"], means["tpi"], freq, means["avg_imcfreq_khz"],
        means["def_freq_khz"], means["perc_mpi"], means["cpu_util"], gpu_power, gpu_gflops, gpu_freq,
        gpu_util, max_power, energy,
        any(r.is_estimated for r in estimated_rows),
        frozenset().union(*(r.estimated for r in estimated_rows)),
    )


def aggregate(rows: Iterable[AppRow], key: Callable[[AppRow], tuple] | None = None) -> list[StepSummary]:
    """One :class:`StepSummary` per step (default key: job, step, app id), in first-seen order."""
    groups: dict[tuple, list[AppRow]] = {}
    get_key = key or (lambda r: (r.job_id, r.step_id, r.app_id))
    for row in rows:
        groups.setdefault(get_key(row), []).append(row)
    return [_summarise(group) for group in groups.values()]


# ---------------------------------------------------------------- sample (timeline) files

def read_samples(path: str) -> tuple[list[dict], list[ReadError]]:
    """Our per-interval sample file as dicts of floats (strings for ids, a set for EARLITE_ESTIMATED)."""
    rows: list[dict] = []
    errors: list[ReadError] = []
    text_columns = {"NODENAME", "JOBID", "STEPID", "GPU_POWER_W_EACH", "GPU_FREQ_KHZ_EACH"}
    with open(path, "r", encoding="utf-8", newline="") as handle:
        header = handle.readline().rstrip("\r\n").split(C.SEP)
        missing = [name for name in C.SAMPLE_COLUMNS if name not in header]
        if missing:
            return [], [ReadError(path, 1, name, "missing column") for name in missing]
        for lineno, line in enumerate(handle, start=2):
            fields = line.rstrip("\r\n").split(C.SEP)
            if len(fields) != len(header):
                errors.append(ReadError(path, lineno, None, f"expected {len(header)} fields, found {len(fields)}"))
                continue
            row: dict = {}
            for name, value in zip(header, fields):
                if name == C.ESTIMATED_COLUMN:
                    row[name] = set(filter(None, value.split(",")))
                elif name in text_columns:
                    row[name] = value
                else:
                    try:
                        row[name] = _number(value)
                    except ValueError:
                        errors.append(ReadError(path, lineno, name, f"not a number: {value!r}"))
                        break
            else:
                rows.append(row)
    return (rows, []) if not errors else ([], errors)
