"""Ingestion and queries of step energy, with tenant isolation.

Ownership never comes from a file: the rows of a request belong to the caller's organization, and to the
caller (an org admin may name another user of the organization). A row whose HEROES organization column
names another organization refuses the whole request. A workflow instance named by the request or by the
file's ``HEROES_INSTANCE_WORKFLOW_ID`` must be visible to the caller; it then supplies the template, the
cluster and the owner.

Visibility: a user sees their own rows; an org admin their organization's; a platform admin everything.
Queries aggregate the node rows of a step by EAR's rules (power, GFLOPS, energy summed over nodes; time,
CPI, frequency averaged), in SQL.
"""
from __future__ import annotations

import itertools
import math
import os
import queue
import re
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import and_, case, func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..auth import Principal
from ..errors import Forbidden, Invalid, NotFound
from .models import EnergyRecord, EnergySample

MAX_FILES = 100
MAX_ID = 2**63 - 1  # job and step ids are BIGINT
MAX_NAME = 200
SAMPLE_HEADER = "TIMESTAMP;ELAPSED_SEC"
NO_IDS = {"", "NO_WRF_ID", "NO_HER_ID", "NO_USR_ID", "NO_PRJ_ID", "NO_ORG_ID", "None", "nan"}
GROUPS = {"step", "instance", "user", "organization", "cluster", "template"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: the clusters API's naming rule (an ingest's cluster is one of those, or an outside cluster's label)
CLUSTER_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}[a-z0-9]")
CLUSTER_RULE = "2-32 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'"


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


@dataclass
class Owner:
    organization: str
    username: str
    cluster: str
    instance_id: str = ""
    template: str = ""


def _error(file: str, line: int | None, column: str | None, message: str) -> dict:
    """One error of an ingest; ``line`` None where a check runs on the parsed table, past the lines."""
    return {"file": file, "line": line, "column": column, "message": message}


def _clean(value) -> str:
    """A text id from a frame cell ('' for the plugin's NO_* placeholders and missing values)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip()
    return "" if text in NO_IDS else text


def _num(value) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


# --- visibility --------------------------------------------------------------------------------------------
def visible(principal: Principal, model=EnergyRecord):
    """The SQL condition of the rows ``principal`` may see."""
    if principal.is_platform_admin:
        return True
    if principal.organization is None:
        return model.username == principal.username and model.organization == ""
    if principal.is_org_admin:
        return model.organization == principal.organization
    return and_(model.organization == principal.organization, model.username == principal.username)


def _check_cluster(session: Session, organization: str, cluster: str) -> None:
    """A cluster name must follow the cluster naming rule and may not be another organization's enrolled
    cluster that yours does not have (outside clusters, never enrolled here, are labels: allowed)."""
    from ..clusters.models import Cluster, cluster_by_name

    if not cluster:
        return
    if not CLUSTER_NAME.fullmatch(cluster):
        raise Invalid(f"cluster {cluster[:70]!r} is not a cluster name", rule=CLUSTER_RULE)
    if cluster_by_name(session, organization, cluster) is None and session.scalars(
            select(Cluster.id).where(Cluster.name == cluster).limit(1)).first() is not None:
        raise Invalid(f"cluster {cluster!r} is not one of your organization's clusters",
                      rule="energy is recorded for your organization's clusters")


def _owner(session: Session, principal: Principal, cluster: str, instance_id: str, user: str,
           is_member: Callable[[str], bool] | None = None) -> Owner:
    """Who the ingested rows belong to (see the module docstring). ``is_member(username)`` says whether a user
    named by ``user=`` belongs to the caller's organization (the API asks Keycloak)."""
    if principal.organization is None:
        raise Forbidden("you belong to no organization: energy is recorded per organization")
    username = principal.username
    if user and user != principal.username:
        if not principal.is_org_admin:
            raise Forbidden("only an org admin may record energy for another user")
        if is_member is None or not is_member(user):
            raise Invalid(f"user {user[:70]!r} is not a member of your organization",
                          rule="energy belongs to a user of your organization")
        username = user
    _check_cluster(session, principal.organization, cluster)
    owner = Owner(principal.organization, username, cluster)
    if instance_id:
        _apply_instance(session, principal, owner, instance_id)
    return owner


def _apply_instance(session: Session, principal: Principal, owner: Owner, instance_id: str) -> None:
    """Take template, cluster and owner from a workflow instance the caller may see (404 otherwise)."""
    from ..workflows.models import WorkflowInstance

    inst = session.get(WorkflowInstance, instance_id) if len(instance_id) <= 32 else None
    if inst is None:
        owner.instance_id = instance_id  # an instance outside this gateway (e.g. a manual run): kept as a label
        return
    if inst.organization != principal.organization or (
            not principal.is_org_admin and inst.username != principal.username):
        raise NotFound(f"workflow instance {instance_id!r} not found")
    owner.instance_id, owner.template, owner.username = inst.id, inst.template_name, inst.username
    owner.cluster = owner.cluster or inst.cluster_name


# --- ingestion ---------------------------------------------------------------------------------------------
def _check_uploads(uploads: list[Upload]) -> None:
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


def _is_samples(content: bytes) -> bool:
    return content[:64].lstrip(b"\xef\xbb\xbf").startswith(SAMPLE_HEADER.encode())


def _read(uploads: list[Upload]):
    """Validated app rows (a frame) and sample rows, or IngestRefused naming file, line and column.

    Application files are parsed in memory (heroes_energy.table.read_contents); only the small sample files
    go through a temporary file, under our names on disk, never the client's."""
    from heroes_energy import reader, table

    apps = [(up.name, up.content) for up in uploads if not _is_samples(up.content)]
    errors: list[dict] = []
    frame = None
    if apps:
        frame, read_errors = table.read_contents(apps)
        errors += [_error(e.file, e.line, e.column, e.message) for e in read_errors]
    sample_rows: list[tuple[str, list[dict]]] = []
    with tempfile.TemporaryDirectory(prefix="heroes-ear-") as folder:
        for i, up in enumerate(u for u in uploads if _is_samples(u.content)):
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


def _records(frame, owner: Owner, principal: Principal, session: Session):
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
            _apply_instance(session, principal, o, inst)
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


def _samples(sample_rows, owner: Owner) -> list[dict]:
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


def _new_only(session: Session, records):
    """Drop rows whose (organization, cluster, job, step, node) is already stored (a file ingested again): one
    range query per cluster for the organization's keys already there, then a set lookup per row (no per-row
    query). Only the rows' own organization is looked at: another tenant's records neither count as
    duplicates nor hide these."""
    if records is None or not len(records):
        return records
    stored: set[tuple] = set()
    (organization,) = records["organization"].unique()
    for cluster, part in records.groupby("cluster"):
        low, high = int(part["job_id"].min()), int(part["job_id"].max())
        stored.update(tuple(row) for row in session.execute(select(
            EnergyRecord.cluster, EnergyRecord.job_id, EnergyRecord.step_id, EnergyRecord.node).where(
            EnergyRecord.organization == organization, EnergyRecord.cluster == cluster,
            EnergyRecord.job_id.between(low, high))))
    if not stored:
        return records
    keys = zip(records["cluster"].tolist(), records["job_id"].tolist(), records["step_id"].tolist(),
               records["node"].tolist())
    new = [key not in stored for key in keys]
    return records[new].reset_index(drop=True)


#: rows per executemany batch / COPY flush (bounds the Python objects alive at once)
BATCH_ROWS = 50_000
#: SQLite page cache while a large ingest runs (KiB): index pages stay in memory instead of spilling
SQLITE_BULK_CACHE_KIB = 256 * 1024


def _column_values(records, name: str, stamp) -> list:
    """One column as Python values the drivers bind directly (NaN -> None, numpy scalars -> Python)."""
    import numpy as np
    import pandas as pd

    if name == "ingested_at":
        return [stamp] * len(records)
    values = records[name].to_numpy()
    if values.dtype.kind == "f":
        out = values.tolist()
        return [None if v != v else v for v in out] if np.isnan(values).any() else out
    if values.dtype.kind in "iub":
        return values.tolist()
    missing = pd.isna(values)
    out = values.tolist()
    return [None if gap else v for v, gap in zip(out, missing.tolist())] if missing.any() else out


def _row_tuples(records, stamp):
    """The rows in RECORD_COLUMNS order, built column-wise (a DataFrame's itertuples costs ~10x more)."""
    return zip(*[_column_values(records, name, stamp) for name in RECORD_COLUMNS])


def _insert_records(session: Session, records, bulk_cache: bool = True) -> None:
    """Bulk insert on the request's transaction: PostgreSQL COPY, SQLite executemany of prepared tuples
    (the ORM's per-row bookkeeping would cost minutes for a million rows). ``ingested_at`` is bound the way
    SQLAlchemy stores it for each dialect."""
    dialect = session.get_bind().dialect
    now = datetime.now().astimezone()
    connection = session.connection()
    if dialect.name == "postgresql":
        _copy_records(connection.connection.driver_connection, records, now)
        return
    stamp = now.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ") if dialect.name == "sqlite" else now
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {EnergyRecord.__tablename__} ({', '.join(RECORD_COLUMNS)}) "
           f"VALUES ({', '.join([mark] * len(RECORD_COLUMNS))})")
    rows = _row_tuples(records, stamp)
    with _sqlite_bulk_cache(connection, bulk_cache and dialect.name == "sqlite" and len(records) > BATCH_ROWS):
        while batch := list(itertools.islice(rows, BATCH_ROWS)):
            connection.exec_driver_sql(sql, batch)


@contextmanager
def _sqlite_bulk_cache(connection, enabled: bool):
    """A large SQLite page cache for the duration of a bulk insert (the default 2 MiB makes every index
    update of a million-row insert go to disk), then the connection's own size again."""
    if not enabled:
        yield
        return
    previous = connection.exec_driver_sql("PRAGMA cache_size").scalar()
    connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_BULK_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size={int(previous)}")


def _copy_types() -> list[str]:
    """PostgreSQL type of each RECORD_COLUMNS column, for a binary COPY."""
    from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, String

    names = []
    for name in RECORD_COLUMNS:
        kind = EnergyRecord.__table__.c[name].type
        for sql_type, pg in ((BigInteger, "int8"), (Integer, "int4"), (Float, "float8"), (Boolean, "bool"),
                             (DateTime, "timestamptz"), (String, "text")):
            if isinstance(kind, sql_type):
                names.append(pg)
                break
        else:
            raise TypeError(f"energy_records.{name}: no COPY type for {kind!r}")
    return names


def _copy_records(raw, records, now: datetime) -> None:
    """PostgreSQL: a binary COPY ... FROM STDIN on the session's own connection (same transaction, so a later
    failure rolls it back with the rest). Binary: no float formatting in Python, no parsing in the server."""
    sql = f"COPY {EnergyRecord.__tablename__} ({', '.join(RECORD_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
    with raw.cursor() as cursor, cursor.copy(sql) as copy:
        copy.set_types(_copy_types())
        for row in _row_tuples(records, now):
            copy.write_row(row)


def _new_samples(session: Session, samples: list[dict]) -> list[dict]:
    """Samples of steps the organization has not stored yet (keyed per organization, like the records)."""
    keys = {(s["organization"], s["cluster"], s["job_id"], s["step_id"], s["node"]) for s in samples}
    if not keys:
        return []
    s_ = EnergySample
    stored = set(session.execute(select(s_.organization, s_.cluster, s_.job_id, s_.step_id, s_.node).where(
        tuple_(s_.organization, s_.cluster, s_.job_id, s_.step_id, s_.node).in_(list(keys))
    ).distinct()).all())
    return [s for s in samples if (s["organization"], s["cluster"], s["job_id"], s["step_id"], s["node"]) not in stored]


#: uploads of application files this large in all are parsed and stored in overlapping chunks
PIPELINE_MIN_BYTES = 64 * 1024 * 1024
PIPELINE_CHUNK_BYTES = 32 * 1024 * 1024


class _SlowPath(Exception):
    """A chunk needs the exact row reader (or a concurrent request stored the same rows): the pipeline's
    savepoint is rolled back and the request is ingested the plain way."""


def _chunks(content: bytes, size: int):
    """The file as pieces of about ``size`` bytes cut at line ends, each with the header line first."""
    cut = content.find(b"\n") + 1
    header = content[:cut]
    while 0 < cut < len(content):
        end = content.find(b"\n", cut + size)
        end = len(content) if end < 0 else end + 1
        yield header + content[cut:end]
        cut = end


def _ingest_pipelined(session: Session, principal: Principal, owner: Owner, uploads: list[Upload]) -> dict:
    """Large uploads: a storing thread inserts chunk k while this one parses chunk k+1 (pandas' tokenizer and
    SQLite's step / PostgreSQL's COPY leave the GIL), all in one savepoint, so nothing is stored unless every
    chunk was valid. Any chunk the fast path will not take raises :class:`_SlowPath` (the plain path then
    names file, line and column). The session is used under a lock: the storing thread holds it per chunk."""
    from heroes_energy import table

    _, sample_rows = _read([up for up in uploads if _is_samples(up.content)])
    sample_dicts = _samples(sample_rows, owner)
    lock = threading.Lock()
    work: queue.Queue = queue.Queue(maxsize=2)
    outcome: dict = {"stored": 0, "error": None}

    def store() -> None:
        while (records := work.get()) is not None:
            if outcome["error"] is None:
                try:
                    with lock:
                        new = _new_only(session, records)
                        if len(new):
                            _insert_records(session, new, bulk_cache=False)
                    outcome["stored"] += len(new)
                except BaseException as exc:  # noqa: BLE001 - handed to the request's thread
                    outcome["error"] = exc

    rows, steps = 0, []
    try:
        with session.begin_nested():
            with _sqlite_bulk_cache(session.connection(), session.get_bind().dialect.name == "sqlite"):
                worker = threading.Thread(target=store, name="energy-ingest", daemon=True)
                worker.start()
                try:
                    for up in uploads:
                        if _is_samples(up.content):
                            continue
                        for chunk in _chunks(up.content, PIPELINE_CHUNK_BYTES):
                            frame = table._fast_frame_bytes(up.name, chunk)
                            if frame is None:
                                raise _SlowPath()
                            frame = frame.drop_duplicates(subset=["job_id", "step_id", "app_id", "node"],
                                                          ignore_index=True)
                            with lock:
                                records = _records(frame, owner, principal, session)
                            rows += len(records)
                            steps.append(records[["cluster", "job_id", "step_id"]].drop_duplicates())
                            if outcome["error"] is not None:
                                break
                            work.put(records)
                finally:
                    work.put(None)
                    worker.join()
                if outcome["error"] is not None:
                    raise outcome["error"]
                new_samples = _new_samples(session, sample_dicts)
                if new_samples:
                    session.execute(insert(EnergySample), new_samples)
    except IntegrityError:
        raise _SlowPath() from None  # a concurrent request stored some of the same rows
    import pandas as pd

    step_count = len(pd.concat(steps).drop_duplicates()) if steps else 0
    return _result(uploads, owner, rows, outcome["stored"], len(new_samples), step_count)


def _result(uploads, owner: Owner, rows: int, stored: int, samples_stored: int, steps: int) -> dict:
    return {"files": len(uploads), "rows": rows, "stored": stored, "duplicates": rows - stored,
            "samples_stored": samples_stored, "steps": steps, "organization": owner.organization,
            "user": owner.username, "cluster": owner.cluster, "instance_id": owner.instance_id}


def ingest(session: Session, principal: Principal, uploads: list[Upload], *, cluster: str = "",
           instance_id: str = "", user: str = "", is_member: Callable[[str], bool] | None = None) -> dict:
    """Validate every file, then store every new row in one transaction (or nothing)."""
    _check_uploads(uploads)
    owner = _owner(session, principal, cluster.strip(), instance_id.strip(), user.strip(), is_member)
    if sum(len(up.content) for up in uploads if not _is_samples(up.content)) >= PIPELINE_MIN_BYTES:
        try:
            return _ingest_pipelined(session, principal, owner, uploads)
        except _SlowPath:
            pass
    frame, sample_rows = _read(uploads)
    records = _records(frame, owner, principal, session) if frame is not None and len(frame) else None
    sample_dicts = _samples(sample_rows, owner)
    new = records
    for attempt in (1, 2):
        new = _new_only(session, records)
        new_samples = _new_samples(session, sample_dicts)
        try:
            with session.begin_nested():
                if new is not None and len(new):
                    _insert_records(session, new)
                if new_samples:
                    session.execute(insert(EnergySample), new_samples)
            break
        except IntegrityError:
            if attempt == 2:
                raise
            # a concurrent request stored some of the same steps: look again and store what is still new
    total = 0 if records is None else len(records)
    stored = 0 if new is None else len(new)
    steps = 0 if records is None else len(records.drop_duplicates(["cluster", "job_id", "step_id"]))
    return _result(uploads, owner, total, stored, len(new_samples), steps)


# --- queries -----------------------------------------------------------------------------------------------
@dataclass
class Filters:
    instance_id: str = ""
    user: str = ""
    organization: str = ""
    cluster: str = ""
    template: str = ""
    job_id: int | None = None
    step_id: int | None = None
    start: float | None = None
    end: float | None = None


def _conditions(principal: Principal, f: Filters) -> list:
    if f.user and f.user != principal.username and not (principal.is_org_admin or principal.is_platform_admin):
        raise Forbidden("you may see only your own energy (org admins see their organization's)")
    if f.organization and f.organization != principal.organization and not principal.is_platform_admin:
        raise Forbidden("you may see only your own organization's energy")
    m = EnergyRecord
    conds = [visible(principal)]
    for column, value in ((m.instance_id, f.instance_id), (m.username, f.user), (m.organization, f.organization),
                          (m.cluster, f.cluster), (m.template, f.template)):
        if value:
            conds.append(column == value)
    if f.job_id is not None:
        conds.append(m.job_id == f.job_id)
    if f.step_id is not None:
        conds.append(m.step_id == f.step_id)
    if f.start is not None:
        conds.append(m.start_time >= f.start)
    if f.end is not None:
        conds.append(m.start_time < f.end)
    return conds


def _measures():
    """EAR's aggregation of a step's node rows (power, GFLOPS, energy summed; time, CPI, frequency averaged)."""
    m = EnergyRecord
    return [
        func.count().label("nodes"), func.min(m.start_time).label("start_time"), func.max(m.end_time).label("end_time"),
        func.avg(m.time_s).label("time_s"), func.sum(m.dc_power_w).label("dc_power_w"),
        func.sum(m.pck_power_w).label("pck_power_w"), func.sum(m.dram_power_w).label("dram_power_w"),
        func.sum(m.gpu_power_w).label("gpu_power_w"), func.max(m.max_power_w).label("max_node_power_w"),
        func.coalesce(func.sum(m.energy_j), 0.0).label("energy_j"),
        (func.coalesce(func.sum(m.cpu_gflops), 0.0) + func.coalesce(func.sum(m.gpu_gflops), 0.0)).label("gflops"),
        func.avg(m.cpi).label("cpi"), func.avg(m.avg_cpufreq_khz).label("avg_cpufreq_khz"),
        func.sum(m.mem_gbs).label("mem_gbs"), func.sum(m.io_mbs).label("io_mbs"),
        func.max(case((m.estimated, 1), else_=0)).label("estimated"),
    ]


def _finish(row: dict) -> dict:
    row["estimated"] = bool(row["estimated"])
    row["energy_kwh"] = row["energy_j"] / 3.6e6
    power = row.get("dc_power_w")
    row["gflops_per_w"] = (row.pop("gflops") / power) if power else None
    return row


def steps(session: Session, principal: Principal, f: Filters, limit: int = 1000) -> list[dict]:
    """One row per step (cluster, job, step, app), newest first."""
    m = EnergyRecord
    keys = [m.organization, m.username, m.cluster, m.instance_id, m.template, m.job_id, m.step_id, m.app_id,
            m.job_name]
    query = (select(*keys, *_measures()).where(*_conditions(principal, f)).group_by(*keys)
             .order_by(func.min(m.start_time).desc(), m.job_id.desc(), m.step_id).limit(limit))
    return [_finish(dict(r._mapping)) for r in session.execute(query)]


def summary(session: Session, principal: Principal, group_by: str, f: Filters) -> list[dict]:
    """Totals per instance, user, organization, cluster, template or step: energy summed over steps."""
    if group_by not in GROUPS:
        raise Invalid(f"group_by must be one of {', '.join(sorted(GROUPS))}", rule="group-by")
    m = EnergyRecord
    column = {"instance": m.instance_id, "user": m.username, "organization": m.organization, "cluster": m.cluster,
              "template": m.template}.get(group_by)
    conds = _conditions(principal, f)
    if column is None:  # step
        return steps(session, principal, f)
    per_step = (select(column.label("group"), m.cluster, m.job_id, m.step_id,
                       func.count().label("nodes"), func.coalesce(func.sum(m.energy_j), 0.0).label("energy_j"),
                       func.min(m.start_time).label("start_time"), func.max(m.end_time).label("end_time"),
                       func.max(case((m.estimated, 1), else_=0)).label("estimated"))
                .where(*conds).group_by(column, m.cluster, m.job_id, m.step_id).subquery())
    p = per_step.c
    query = (select(p.group, func.count().label("steps"), func.sum(p.nodes).label("node_rows"),
                    func.sum(p.energy_j).label("energy_j"), func.min(p.start_time).label("start_time"),
                    func.max(p.end_time).label("end_time"), func.max(p.estimated).label("estimated"))
             .group_by(p.group).order_by(p.group))
    out = []
    for r in session.execute(query):
        row = dict(r._mapping)
        row["estimated"] = bool(row["estimated"])
        row["energy_kwh"] = row["energy_j"] / 3.6e6
        out.append(row)
    return out


def samples(session: Session, principal: Principal, cluster: str, job_id: int, step_id: int) -> list[dict]:
    """Per-second samples of a step the caller may see (every node), in time order."""
    s = EnergySample
    query = (select(s.node, s.elapsed_s, s.dc_power_w, s.pck_power_w, s.dram_power_w, s.gpu_power_w, s.estimated)
             .where(visible(principal, s), s.cluster == cluster, s.job_id == job_id, s.step_id == step_id)
             .order_by(s.node, s.elapsed_s))
    return [dict(r._mapping) for r in session.execute(query)]


def ingest_for_owner(session: Session, *, organization: str, username: str, files: dict[str, bytes],
                     cluster: str = "", instance_id: str = "") -> dict:
    """For the workflow engine, which stages a finished step's EAR/EAR-lite files back: ingest them on behalf of
    the instance's owner (same validation, ownership and duplicate rules as the API route)."""
    owner = Principal(username=username, organization=organization, roles=frozenset({"user"}))
    return ingest(session, owner, [Upload(name, content) for name, content in files.items()], cluster=cluster,
                  instance_id=instance_id)
