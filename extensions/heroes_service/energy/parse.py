"""EAR/EAR-lite uploads read and validated into rows to store (a DataFrame of ``energy_records`` columns, dicts of
``energy_samples``), or :class:`IngestRefused` naming every problem's file, line and column.

A row whose HEROES organization column names another organization refuses the whole request; the reading of
the files themselves is :mod:`heroes_energy`'s.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ..auth import Principal
from ..errors import Invalid
from .ownership import Owner, apply_instance

MAX_FILES = 100
MAX_ID = 2**63 - 1  # job and step ids are BIGINT
MAX_NAME = 200
SAMPLE_HEADER = "TIMESTAMP;ELAPSED_SEC"
NO_IDS = {"", "NO_WRF_ID", "NO_HER_ID", "NO_USR_ID", "NO_PRJ_ID", "NO_ORG_ID", "None", "nan"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class IngestRefused(Invalid):
    """422 with every problem: ``errors`` lists ``{file, line, column, message}``; nothing was stored."""

    def __init__(self, errors: list[dict]):
        first = errors[0]
        where = first["file"] + (f", line {first['line']}" if first["line"] else "") \
            + (f", column {first['column']}" if first["column"] else "")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{where}: {first['message']}{more}; nothing was stored", rule="ear-file")
        self.errors = errors

    def body(self) -> dict:
        out = super().body()
        out["errors"] = self.errors
        return out


@dataclass
class Upload:
    name: str
    content: bytes


def _error(file: str, line: int | None, column: str | None, message: str) -> dict:
    """One error of an ingest; ``line`` None where a check runs on the parsed table, past the lines."""
    return {"file": file, "line": line, "column": column, "message": message}


def _num(value) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def check_uploads(uploads: list[Upload]) -> None:
    if not uploads:
        raise Invalid("no file in the request", rule="ear-file")
    if len(uploads) > MAX_FILES:
        raise Invalid(f"at most {MAX_FILES} files per request", rule="ear-file")
    names = [u.name for u in uploads]
    for name in names:
        if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
            raise Invalid(f"file name {name[:40]!r} is empty, too long or has control characters", rule="ear-file")
    if len(set(names)) != len(names):
        raise Invalid("two files in one request have the same name", rule="ear-file")


def is_samples(content: bytes) -> bool:
    return content[:64].lstrip(b"\xef\xbb\xbf").startswith(SAMPLE_HEADER.encode())


def read_uploads(uploads: list[Upload]):
    """Validated app rows (a frame) and sample rows, or IngestRefused naming file, line and column.

    Application files are parsed in memory (heroes_energy.table.read_contents); only the small sample files
    go through a temporary file, under our names on disk, never the client's."""
    from heroes_energy import reader, table

    apps = [(up.name, up.content) for up in uploads if not is_samples(up.content)]
    errors: list[dict] = []
    frame = None
    if apps:
        frame, read_errors = table.read_contents(apps)
        errors += [_error(e.file, e.line, e.column, e.message) for e in read_errors]
    sample_rows: list[tuple[str, list[dict]]] = []
    with tempfile.TemporaryDirectory(prefix="heroes-ear-") as folder:
        for i, up in enumerate(u for u in uploads if is_samples(u.content)):
            path = os.path.join(folder, f"{i:03d}_{_SAFE.sub('_', up.name)[-60:]}")
            with open(path, "wb") as out:
                out.write(up.content)
            rows, read_errors = reader.read_samples(path)
            errors += [_error(up.name, e.line, e.column, e.message) for e in read_errors]
            sample_rows.append((up.name, rows))
    if errors:
        raise IngestRefused(errors)
    return frame, sample_rows


#: table column <- frame column (heroes_energy.table.FRAME_COLUMNS)
_MEASURE_COLUMNS = {
    "start_time": "start_time", "end_time": "end_time", "time_s": "seconds", "dc_power_w": "power_w",
    "dram_power_w": "dram_power_w", "pck_power_w": "pck_power_w", "gpu_power_w": "gpu_power_w",
    "max_power_w": "max_power_w", "energy_j": "energy_j", "cpu_gflops": "cpu_gflops", "gpu_gflops": "gpu_gflops",
    "mem_gbs": "mem_gbs", "io_mbs": "io_mbs", "cpi": "cpi", "avg_cpufreq_khz": "avg_cpufreq_khz",
    "cpu_util": "cpu_util",
}
RECORD_COLUMNS = ("organization", "username", "cluster", "instance_id", "template", "job_id", "step_id", "app_id",
                  "node", "job_name", "variant", *_MEASURE_COLUMNS, "estimated", "source_file", "ingested_at")


def _text(series, limit: int | None = None, ids: bool = False):
    """A text column as clean ``str`` values ('' when missing; cut to ``limit``; with ``ids``, '' for the
    plugin's NO_* placeholders). Cleaned once per distinct value: a million rows usually hold few."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    cleaned = []
    for value in uniques:
        text = str(value).strip() if ids else str(value)
        cleaned.append("" if ids and text in NO_IDS else text[:limit])
    lookup = np.array(cleaned + [""], dtype=object)  # code -1 (missing) -> the last entry
    return pd.Series(lookup[codes], index=series.index, dtype=object)


def _ids(series):
    """A HEROES id column as clean text ('' for the plugin's NO_* placeholders and missing values)."""
    return _text(series, ids=True)


def to_records(frame, owner: Owner, principal: Principal, session: Session):
    """The table's rows as a DataFrame (vectorised: a million rows in seconds); a row naming another
    organization refuses the request; instances named by the files are resolved once each."""
    import numpy as np
    import pandas as pd

    orgs = _ids(frame["heroes_org_name"])
    foreign = orgs[(orgs != "") & (orgs != owner.organization)]
    if len(foreign):
        first = foreign.index[0]
        raise IngestRefused([_error(str(frame["file"].iat[first]), None, "HEROES_ORGANIZATION_NAME",
                                    f"names organization {str(foreign.iat[0])!r}, not yours "
                                    f"({owner.organization!r})")])
    for column, name in (("job_id", "JOBID"), ("step_id", "STEPID")):
        ids = pd.to_numeric(frame[column], errors="coerce")
        bad = ids.isna() | (ids < 0) | (ids > MAX_ID)
        if bad.any():
            first = bad.to_numpy().nonzero()[0][0]
            value = frame[column].iat[first]
            shown = str(int(value)) if pd.notna(ids.iat[first]) else repr(str(value))
            raise IngestRefused([_error(str(frame["file"].iat[first]), None, name,
                                        f"{shown} is not an id between 0 and {MAX_ID}")])
    n = len(frame)
    out = pd.DataFrame({
        "organization": owner.organization, "username": owner.username, "cluster": owner.cluster,
        "instance_id": owner.instance_id, "template": owner.template,
    }, index=frame.index)
    file_templates = _ids(frame["heroes_template"])
    if not owner.instance_id:
        instances = _ids(frame["heroes_instance"])
        for inst in instances[instances != ""].unique():
            o = Owner(owner.organization, owner.username, owner.cluster)
            apply_instance(session, principal, o, inst)
            rows = instances == inst
            out.loc[rows, ["username", "cluster", "instance_id", "template"]] = [o.username, o.cluster, o.instance_id,
                                                                                o.template]
    if not owner.template:
        out["template"] = out["template"].where(out["template"] != "", file_templates)
    out["template"] = _text(out["template"], 128)
    out["job_id"] = frame["job_id"].astype("int64")
    out["step_id"] = frame["step_id"].astype("int64")
    out["app_id"] = _text(frame["app_id"], 128)
    out["node"] = _text(frame["node"], 128)
    out["job_name"] = _text(frame["job_name"], 255)
    out["variant"] = _text(frame["variant"])
    for column, source in _MEASURE_COLUMNS.items():
        values = pd.to_numeric(frame[source], errors="coerce").astype(float)
        out[column] = values.where(np.isfinite(values))
    out["estimated"] = frame["estimated"].fillna(False).astype(bool)
    out["source_file"] = _text(frame["file"], 255)
    out["ingested_at"] = None
    assert len(out) == n
    return out.reset_index(drop=True)


def to_samples(sample_rows, owner: Owner) -> list[dict]:
    out = []
    for name, rows in sample_rows:
        for s in rows:
            try:
                job, step = int(s["JOBID"]), int(s["STEPID"])
            except (TypeError, ValueError):
                raise IngestRefused([_error(name, 0, "JOBID", "JOBID and STEPID must be integers")]) from None
            out.append({"organization": owner.organization, "username": owner.username, "cluster": owner.cluster,
                        "job_id": job, "step_id": step, "node": str(s["NODENAME"])[:128],
                        "elapsed_s": _num(s["ELAPSED_SEC"]) or 0.0, "dc_power_w": _num(s.get("DC_NODE_POWER_W")),
                        "pck_power_w": _num(s.get("PCK_POWER_W")), "dram_power_w": _num(s.get("DRAM_POWER_W")),
                        "gpu_power_w": _num(s.get("GPU_POWER_W")),
                        "estimated": ",".join(sorted(s.get("EARLITE_ESTIMATED") or ()))[:255]})
    return out
