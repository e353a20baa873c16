"""Ingestion of step energy: validate every file, then store every new row in one transaction (or nothing).

Who the rows belong to is :mod:`.ownership`'s rule, the reading :mod:`.parse`'s, the fast storing
:mod:`.bulk`'s."""
from __future__ import annotations

from typing import Callable

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..auth import Principal
from . import bulk
from .bulk import SlowPath, ingest_pipelined, ingest_result, insert_records, new_only, unstored_samples
from .models import EnergySample
from .parse import MAX_FILES, IngestRefused, Upload, check_uploads, is_samples, read_uploads, to_records, to_samples
from .ownership import resolve_owner

__all__ = ["MAX_FILES", "IngestRefused", "Upload", "ingest", "ingest_for_owner"]


def ingest(session: Session, principal: Principal, uploads: list[Upload], *, cluster: str = "",
           instance_id: str = "", user: str = "", is_member: Callable[[str], bool] | None = None) -> dict:
    """Validate every file, then store every new row in one transaction (or nothing)."""
    check_uploads(uploads)
    owner = resolve_owner(session, principal, cluster.strip(), instance_id.strip(), user.strip(), is_member)
    if sum(len(up.content) for up in uploads if not is_samples(up.content)) >= bulk.PIPELINE_MIN_BYTES:
        try:
            return ingest_pipelined(session, principal, owner, uploads)
        except SlowPath:
            pass
    frame, sample_rows = read_uploads(uploads)
    records = to_records(frame, owner, principal, session) if frame is not None and len(frame) else None
    sample_dicts = to_samples(sample_rows, owner)
    new = records
    for attempt in (1, 2):
        new = new_only(session, records)
        new_samples = unstored_samples(session, sample_dicts)
        try:
            with session.begin_nested():
                if new is not None and len(new):
                    insert_records(session, new)
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
    return ingest_result(uploads, owner, total, stored, len(new_samples), steps)


def ingest_for_owner(session: Session, *, organization: str, username: str, files: dict[str, bytes],
                     cluster: str = "", instance_id: str = "") -> dict:
    """For the workflow engine, which stages a finished step's EAR/EAR-lite files back: ingest them on behalf of
    the instance's owner (same validation, ownership and duplicate rules as the API route)."""
    owner = Principal(username=username, organization=organization, roles=frozenset({"user"}))
    return ingest(session, owner, [Upload(name, content) for name, content in files.items()], cluster=cluster,
                  instance_id=instance_id)
