"""Storing a large ingest fast, in the request's transaction: duplicates dropped with one range query per
cluster, rows inserted by SQLite executemany of prepared tuples or PostgreSQL binary COPY, and uploads of many
megabytes parsed and stored in overlapping chunks (one thread parses while another stores)."""
from __future__ import annotations

import itertools
import queue
import threading
from contextlib import contextmanager
from datetime import datetime, timezone

from sqlalchemy import insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..auth import Principal
from .models import EnergyRecord, EnergySample
from .ownership import Owner
from .parse import RECORD_COLUMNS, Upload, is_samples, read_uploads, to_records, to_samples


def new_only(session: Session, records):
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


def insert_records(session: Session, records, bulk_cache: bool = True) -> None:
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


def unstored_samples(session: Session, samples: list[dict]) -> list[dict]:
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


class SlowPath(Exception):
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


def ingest_pipelined(session: Session, principal: Principal, owner: Owner, uploads: list[Upload]) -> dict:
    """Large uploads: a storing thread inserts chunk k while this one parses chunk k+1 (pandas' tokenizer and
    SQLite's step / PostgreSQL's COPY leave the GIL), all in one savepoint, so nothing is stored unless every
    chunk was valid. Any chunk the fast path will not take raises :class:`SlowPath` (the plain path then
    names file, line and column). The session is used under a lock: the storing thread holds it per chunk."""
    from heroes_energy import table

    _, sample_rows = read_uploads([up for up in uploads if is_samples(up.content)])
    sample_dicts = to_samples(sample_rows, owner)
    lock = threading.Lock()
    work: queue.Queue = queue.Queue(maxsize=2)
    outcome: dict = {"stored": 0, "error": None}

    def store() -> None:
        while (records := work.get()) is not None:
            if outcome["error"] is None:
                try:
                    with lock:
                        new = new_only(session, records)
                        if len(new):
                            insert_records(session, new, bulk_cache=False)
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
                        if is_samples(up.content):
                            continue
                        for chunk in _chunks(up.content, PIPELINE_CHUNK_BYTES):
                            frame = table._fast_frame_bytes(up.name, chunk)
                            if frame is None:
                                raise SlowPath()
                            frame = frame.drop_duplicates(subset=["job_id", "step_id", "app_id", "node"],
                                                          ignore_index=True)
                            with lock:
                                records = to_records(frame, owner, principal, session)
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
                new_samples = unstored_samples(session, sample_dicts)
                if new_samples:
                    session.execute(insert(EnergySample), new_samples)
    except IntegrityError:
        raise SlowPath() from None  # a concurrent request stored some of the same rows
    import pandas as pd

    step_count = len(pd.concat(steps).drop_duplicates()) if steps else 0
    return ingest_result(uploads, owner, rows, outcome["stored"], len(new_samples), step_count)


def ingest_result(uploads, owner: Owner, rows: int, stored: int, samples_stored: int, steps: int) -> dict:
    return {"files": len(uploads), "rows": rows, "stored": stored, "duplicates": rows - stored,
            "samples_stored": samples_stored, "steps": steps, "organization": owner.organization,
            "user": owner.username, "cluster": owner.cluster, "instance_id": owner.instance_id}
