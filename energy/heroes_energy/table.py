"""Columnar (pandas) fast path of the reader, for bulk ingestion of very large EAR files.

Why a second path: the row reader (:mod:`heroes_energy.reader`) is standard-library only and exact,
but costs ~20 us per row in CPython; a million-row ``eacct`` dump needs pandas' C parser. The fast
path only *accepts* a file when cheap whole-file checks prove it is well-formed (header valid, every
line has the header's field count, every numeric column parsed as numbers, ids integral, node names
present, power and time present). Whenever a check fails it hands the file to the row reader, which
either reads it (EAR's short-row quirks) or refuses it with file/line/column. Both paths produce
the same aggregation; the unit tests compare them.

Used by the service (which has pandas); the collector never imports this module.
"""
from __future__ import annotations

import dataclasses
import io
import os
import tempfile
from typing import Iterable

import numpy as np
import pandas as pd

from . import columns as C
from .reader import CARBON_G_PER_KWH, PUE, AppRow, ReadError, _check_header, read_file

_TEXT = ["APPID", "USERID", "GROUPID", "ACCOUNTID", "JOBNAME", "ENERGY_TAG", "JOB_START_DATE", "JOB_END_DATE",
         "POLICY", "NODENAME", C.ESTIMATED_COLUMN, *C.HEROES_ID_COLUMNS]

#: normalised per-node columns (the same facts as :class:`heroes_energy.reader.AppRow`)
FRAME_COLUMNS = [
    "file", "variant", "job_id", "step_id", "app_id", "node", "user", "job_name", "start_time", "end_time",
    "seconds", "power_w", "energy_j", "dram_power_w", "pck_power_w", "mem_gbs", "io_mbs", "cpu_gflops",
    "cycles", "instructions", "cpi", "tpi", "avg_cpufreq_khz", "avg_imcfreq_khz", "def_freq_khz", "perc_mpi",
    "cpu_util", "gpu_power_w", "gpu_gflops", "gpu_freq_sum", "gpu_util_sum", "gpu_active", "max_power_w",
    "estimated", "heroes_instance", "heroes_template", "heroes_user", "heroes_org_name", "heroes_org_id",
]


def _gpu_cell_values(cell) -> list[float]:
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    if isinstance(cell, (int, float, np.integer, np.floating)):
        return [float(cell)]
    return [float(part) for part in str(cell).replace(",", " ").split()]


def _gpu_lists(df: pd.DataFrame, metric: str) -> list[list[float]] | None:
    cols = [c for c in df.columns if (m := C.GPU_COLUMN_RE.match(c)) and m.group(2) == metric]
    if not cols:
        return None
    out = [[] for _ in range(len(df))]
    for col in cols:
        for i, cell in enumerate(df[col].tolist()):
            out[i].extend(_gpu_cell_values(cell))
    return out


def _fast_frame(path: str) -> pd.DataFrame | None:
    """The file as a normalised frame, or None when any whole-file check fails (row reader decides)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return _fast_frame_bytes(path, data)


def _fast_frame_bytes(path: str, data: bytes) -> pd.DataFrame | None:
    """:func:`_fast_frame` of a file's content (``path`` only labels the rows)."""
    first_nl = data.find(b"\n")
    if first_nl <= 0:
        return None
    header = data[:first_nl].rstrip(b"\r").decode("utf-8", "replace").lstrip("\ufeff")
    names = header.split(C.SEP)
    variant, errors = _check_header(path, names)
    if errors or header.endswith(C.SEP):
        return None
    body_lines = data.count(b"\n") - 1 + (0 if data.endswith(b"\n") else 1)
    if body_lines <= 0 or data.count(b";") != (len(names) - 1) * (body_lines + 1):
        return None  # a short/long line, a blank line or a repeated header: let the row reader judge
    if b"\n\n" in data:
        return None
    try:
        df = pd.read_csv(io.BytesIO(data), sep=C.SEP, engine="c", dtype={n: str for n in _TEXT if n in names},
                         keep_default_na=False, na_values=[""], low_memory=False)
    except (ValueError, pd.errors.ParserError):
        return None
    for name in names:
        if name in _TEXT or C.GPU_COLUMN_RE.match(name):
            continue
        if df[name].dtype.kind not in "iuf":
            return None  # text in a number, or a 'nan' literal (the C parser leaves those as text)
        if df[name].dtype.kind == "f" and np.isinf(df[name].to_numpy()).any():
            return None  # 'inf' / '1e999' parse as infinity: the row reader refuses them with the line
    if df["JOBID"].dtype.kind not in "iu" or df["STEPID"].dtype.kind not in "iu":
        return None
    for name in ("JOBID", "STEPID"):
        if df[name].dtype.kind == "u" or (len(df) and (df[name].to_numpy() < 0).any()):
            return None  # negative (or past int64) ids: the row reader refuses them with their line
    nodes = df["NODENAME"].fillna("")
    if (nodes == "").any():
        return None
    earl = (df["EARL_ENABLED"].fillna(0) != 0) | ((df["DC_NODE_POWER_W"].fillna(0) != 0) & (df["TIME_SEC"].fillna(0) != 0))
    power = df["DC_NODE_POWER_W"].where(earl, df["NODEMGR_DC_NODE_POWER_W"])
    seconds = df["TIME_SEC"].where(earl, df["NODEMGR_TIME_SEC"])
    if power.isna().any() or seconds.isna().any():
        return None
    if (power < 0).any() or (seconds < 0).any():
        return None  # a negative power or time: the row reader refuses it with its line
    try:
        gpu_power = _gpu_lists(df, "POWER_W")
        gpu_freq = _gpu_lists(df, "FREQ_KHZ")
        gpu_util = _gpu_lists(df, "UTIL_PERC")
        gpu_flops = _gpu_lists(df, "GFLOPS")
    except ValueError:
        return None
    estimated = pd.Series(False, index=df.index)
    if C.ESTIMATED_COLUMN in df:
        marks = df[C.ESTIMATED_COLUMN].fillna("")
        known = set(names)
        for value in marks.unique():
            if value and not set(value.split(",")) <= known:
                return None
        estimated = marks.str.contains(r"(?:^|,)(?:NODEMGR_)?DC_NODE_POWER_W(?:,|$)", regex=True)
    out = pd.DataFrame({
        "file": path, "variant": variant, "job_id": df["JOBID"], "step_id": df["STEPID"],
        "app_id": df["APPID"].fillna("") if "APPID" in df else "", "node": nodes,
        "user": df["USERID"].fillna(""), "job_name": df["JOBNAME"].fillna(""),
        "start_time": df["JOB_START_TIME"].astype(float), "end_time": df["JOB_END_TIME"].astype(float),
        "seconds": seconds.astype(float), "power_w": power.astype(float),
        "dram_power_w": df["DRAM_POWER_W"].where(earl, df["NODEMGR_DRAM_POWER_W"]).astype(float),
        "pck_power_w": df["PCK_POWER_W"].where(earl, df["NODEMGR_PCK_POWER_W"]).astype(float),
        "avg_cpufreq_khz": df["AVG_CPUFREQ_KHZ"].where(earl, df["NODEMGR_AVG_CPUFREQ_KHZ"]).astype(float),
        "max_power_w": (df["MAX_POWER_W"] if "MAX_POWER_W" in df else df["NODEMGR_MAX_DC_POWER_W"]).astype(float),
        "estimated": estimated,
    })
    for src, dst in (("MEM_GBS", "mem_gbs"), ("IO_MBS", "io_mbs"), ("CPU_GFLOPS", "cpu_gflops"),
                     ("CYCLES", "cycles"), ("INSTRUCTIONS", "instructions"), ("CPI", "cpi"), ("TPI", "tpi"),
                     ("AVG_IMCFREQ_KHZ", "avg_imcfreq_khz"), ("DEF_FREQ_KHZ", "def_freq_khz"),
                     ("PERC_MPI", "perc_mpi"), ("CPU_UTIL", "cpu_util")):
        out[dst] = df[src].astype(float)
    out["energy_j"] = out["power_w"] * out["seconds"]
    _add_gpu(out, gpu_power, gpu_freq, gpu_util, gpu_flops)
    _add_ids(out, df if "HEROES_INSTANCE_WORKFLOW_ID" in df else None)
    return out[FRAME_COLUMNS]


def _add_gpu(out, gpu_power, gpu_freq, gpu_util, gpu_flops) -> None:
    n = len(out)
    power, fsum, usum, active, flops = [np.nan] * n, [0.0] * n, [0.0] * n, [0] * n, [np.nan] * n
    if gpu_power is not None:
        for i, powers in enumerate(gpu_power):
            freqs = gpu_freq[i] if gpu_freq else []
            utils = gpu_util[i] if gpu_util else []
            on = [k for k, p in enumerate(powers) if p]
            if on:
                power[i] = sum(powers[k] for k in on)
                fsum[i] = sum(freqs[k] for k in on if k < len(freqs))
                usum[i] = sum(utils[k] for k in on if k < len(utils))
                active[i] = len(on)
    if gpu_flops is not None:
        flops = [sum(v) if v else np.nan for v in gpu_flops]
    out["gpu_power_w"], out["gpu_gflops"] = power, flops
    out["gpu_freq_sum"], out["gpu_util_sum"], out["gpu_active"] = fsum, usum, active


def _add_ids(out: pd.DataFrame, df: pd.DataFrame | None) -> None:
    targets = ["heroes_instance", "heroes_template", "heroes_user", "heroes_org_name", "heroes_org_id"]
    for src, dst in zip(C.HEROES_ID_COLUMNS, targets):
        out[dst] = df[src].fillna("") if df is not None else None


def rows_to_frame(rows: list[AppRow]) -> pd.DataFrame:
    """Row-reader output in the same normalised frame (files that took the exact path)."""
    records = []
    for r in rows:
        on = [k for k, p in enumerate(r.gpu_power_w) if p]
        ids = r.heroes_ids or (None,) * 5
        records.append((
            r.file, r.variant, r.job_id, r.step_id, r.app_id, r.node, r.user, r.job_name, r.start_time, r.end_time,
            r.seconds, r.power_w, r.energy_j,
            r.dram_power_w if r.uses_earl_signature else r.nodemgr_dram_power_w,
            r.pck_power_w if r.uses_earl_signature else r.nodemgr_pck_power_w,
            r.mem_gbs, r.io_mbs, r.cpu_gflops, r.cycles, r.instructions, r.cpi, r.tpi,
            r.avg_cpufreq_khz if r.uses_earl_signature else r.nodemgr_avg_cpufreq_khz,
            r.avg_imcfreq_khz, r.def_freq_khz, r.perc_mpi, r.cpu_util,
            sum(r.gpu_power_w[k] for k in on) if on else np.nan,
            sum(r.gpu_gflops) if r.gpu_gflops else np.nan,
            sum(r.gpu_freq_khz[k] for k in on if k < len(r.gpu_freq_khz)),
            sum(r.gpu_util_perc[k] for k in on if k < len(r.gpu_util_perc)), len(on),
            r.max_power_w if r.max_power_w is not None else r.nodemgr_max_dc_power_w,
            r.is_estimated, *ids,
        ))
    frame = pd.DataFrame.from_records(records, columns=FRAME_COLUMNS)
    for col in ("seconds", "power_w", "energy_j", "dram_power_w", "pck_power_w", "mem_gbs", "io_mbs",
                "cpu_gflops", "cycles", "instructions", "cpi", "tpi", "avg_cpufreq_khz", "avg_imcfreq_khz",
                "def_freq_khz", "perc_mpi", "cpu_util", "gpu_power_w", "gpu_gflops", "max_power_w",
                "start_time", "end_time"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame


def read_table(paths: Iterable[str]) -> tuple[pd.DataFrame | None, list[ReadError]]:
    """All-or-nothing like :func:`heroes_energy.reader.read_files`, one normalised row per node record."""
    frames, errors = [], []
    for path in map(os.fspath, paths):
        frame = _fast_frame(path)
        if frame is None:
            rows, file_errors = read_file(path)
            errors.extend(file_errors)
            if file_errors:
                continue
            frame = rows_to_frame(rows)
        frames.append(frame)
    return _combine(frames, errors)


def read_contents(files: Iterable[tuple[str, bytes]]) -> tuple[pd.DataFrame | None, list[ReadError]]:
    """:func:`read_table` of files held in memory, as ``(name, content)``: the service parses an upload
    without writing it to disk and reading it back. Only a file the fast path refuses is written to a
    temporary file for the row reader; rows and errors name the file by ``name``."""
    frames, errors = [], []
    for name, data in files:
        frame = _fast_frame_bytes(name, data)
        if frame is None:
            rows, file_errors = _read_file_content(name, data)
            errors.extend(file_errors)
            if file_errors:
                continue
            frame = rows_to_frame(rows)
            frame["file"] = name
        frames.append(frame)
    return _combine(frames, errors)


def _read_file_content(name: str, data: bytes) -> tuple[list[AppRow], list[ReadError]]:
    with tempfile.TemporaryDirectory(prefix="heroes-ear-") as folder:
        path = os.path.join(folder, "file.csv")
        with open(path, "wb") as out:
            out.write(data)
        rows, errors = read_file(path)
    return rows, [dataclasses.replace(e, file=name) for e in errors]


def _combine(frames: list[pd.DataFrame], errors: list[ReadError]) -> tuple[pd.DataFrame | None, list[ReadError]]:
    if errors:
        return None, errors
    if not frames:
        return pd.DataFrame(columns=FRAME_COLUMNS), []
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    table = table.drop_duplicates(subset=["job_id", "step_id", "app_id", "node"], keep="first", ignore_index=True)
    return table, []


def aggregate_table(table: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """EAR's per-step aggregation of a normalised frame (same rules as :func:`reader.aggregate`)."""
    keys = keys or ["job_id", "step_id", "app_id"]
    g = table.groupby(keys, sort=False, dropna=False)
    summed = ["power_w", "dram_power_w", "pck_power_w", "mem_gbs", "io_mbs", "cpu_gflops", "cycles",
              "instructions", "gpu_power_w", "gpu_gflops", "energy_j", "gpu_freq_sum", "gpu_util_sum", "gpu_active"]
    averaged = ["seconds", "cpi", "tpi", "avg_cpufreq_khz", "avg_imcfreq_khz", "def_freq_khz", "perc_mpi", "cpu_util"]
    out = g[summed].sum(min_count=1)
    out = out.join(g[averaged].mean())
    out = out.join(g.agg(nodes=("node", "size"), start_time=("start_time", "min"), end_time=("end_time", "max"),
                         max_node_power_w=("max_power_w", "max"), estimated=("estimated", "any"),
                         user=("user", "first"), job_name=("job_name", "first")))
    active = out.pop("gpu_active")
    out["gpu_freq_khz"] = out.pop("gpu_freq_sum") / active.where(active > 0)
    out["gpu_util_perc"] = out.pop("gpu_util_sum") / active.where(active > 0)
    out = out.rename(columns={"power_w": "dc_power_w", "seconds": "time_s"})
    out["energy_j"] = out["energy_j"].fillna(0.0)
    out["energy_kwh"] = out["energy_j"] / 3.6e6
    out["gflops_per_w"] = (out["cpu_gflops"].fillna(0) + out["gpu_gflops"].fillna(0)) / out["dc_power_w"].where(
        out["dc_power_w"] > 0)
    out["carbon_g"] = out["energy_kwh"] * PUE * CARBON_G_PER_KWH
    return out.reset_index()
