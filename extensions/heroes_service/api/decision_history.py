"""Job history for the decision module's estimates: imports (org admins) and a summary (any user).

``POST /organization/admin/decision/history?format=swf|sacct&cluster=<name>`` takes one file as the raw body:
an SWF trace or a ``sacct -P`` dump. Every line is validated first; any bad line answers 422 naming it (and up
to 50 others in ``errors``) and nothing is stored. A job already imported for that cluster and format (same
job id and submit time) is skipped, so sending a file twice adds nothing. Imported history belongs to the
importing organization: only its estimates learn from it and only its members see its counts; deleting the
organization deletes it.

``GET /organization/decision/history/summary``: jobs per cluster and per template the caller may see
(imports of their organization; the gateway's finished steps: their own, or the organization's for an admin).
"""
from __future__ import annotations

import logging
import math
import re
import uuid
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import delete, insert
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ..auth import Principal, require_role
from ..decision import service_history as sh
from ..decision.imports import HistoryFileError, ImportResult, read_history
from ..decision.service_models import REGISTRY
from ..errors import ApiError, Forbidden, Invalid
from ..identity import lifecycle
from ..store import get_session

log = logging.getLogger("heroes_service.decision")


def _organization_deleted(session: Session, org) -> None:
    """Deleting an organization deletes its imported history (a new organization of the same name starts
    with none) and forgets its models."""
    session.execute(delete(sh.HistoryJob).where(sh.HistoryJob.organization == org.name))
    REGISTRY.forget_organization(org.name)


lifecycle.register_deleted(_organization_deleted)


@asynccontextmanager
async def lifespan(app):
    """Models are kept in memory only: start rebuilding those of every organization with history at once."""
    sessions = getattr(app.state, "sessions", None)
    if sessions is not None:
        try:
            with sessions() as session:
                names = sh.organizations_with_history(session)
                REGISTRY.warm(session.get_bind(), names)
        except Exception:  # a warm-up never stops the service; the first estimate builds what is missing
            log.exception("could not warm the decision models up")
    yield


router = APIRouter(tags=["decision"], lifespan=lifespan)
org_admin = require_role("org-admin")
any_user = require_role("user")

#: a request body bigger than this is refused (413) before it is read further
MAX_BODY = 128 * 1024 * 1024
CLUSTER_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class HistoryRefused(Invalid):
    """422 listing the bad lines (``errors``: ``{line, message}``); nothing was stored."""

    def __init__(self, errors: list[dict], fmt: str):
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{fmt} file, line {first['line']}: {first['message']}{more}; nothing was stored",
                         rule=f"{fmt}-history")
        self.errors = errors

    def body(self) -> dict:
        return {**super().body(), "errors": self.errors}


async def _body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(f"history file over {MAX_BODY // (1024 * 1024)} MiB: split it", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes, fmt: str) -> ImportResult:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise HistoryRefused([{"line": line, "message": "not UTF-8 text"}], fmt) from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise HistoryRefused([{"line": line, "message": "contains a NUL byte"}], fmt)
    try:
        return read_history(text, fmt)
    except HistoryFileError as exc:
        raise HistoryRefused(exc.errors, fmt) from None


def _nan_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _store(session: Session, principal: Principal, fmt: str, cluster: str, result: ImportResult) -> dict:
    """Insert the jobs not imported before, all in the request's transaction (committed by get_session)."""
    seen = sh.existing_keys(session, principal.organization, cluster, fmt)
    batch = uuid.uuid4().hex
    rows, duplicates = [], 0
    for job in result.jobs:
        key = (job.job_id, float(job.submit))
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        rows.append(dict(organization=principal.organization, batch=batch, source=fmt, cluster=cluster,
                         job_id=job.job_id, username=job.username, partition=job.partition, state=job.state,
                         submit=float(job.submit), wait_s=_nan_none(job.wait_s), run_s=_nan_none(job.run_s),
                         req_time_s=_nan_none(job.req_time_s), req_mem_mb=_nan_none(job.req_mem_mb),
                         used_mem_mb=_nan_none(job.used_mem_mb), cores=_nan_none(job.cores),
                         nodes=_nan_none(job.nodes), energy_j=_nan_none(job.energy_j),
                         imported_by=principal.username, imported_at=sh.utcnow()))
    for start in range(0, len(rows), 5000):
        session.execute(insert(sh.HistoryJob), rows[start:start + 5000])
    session.flush()
    return {"batch": batch if rows else None, "format": fmt, "cluster": cluster, "lines": result.lines,
            "imported": len(rows), "duplicates": duplicates, "not_finished": result.not_finished}


@router.post("/organization/admin/decision/history", status_code=201,
             summary="Import job history (an SWF trace or a sacct -P dump) for your organization's estimates",
             openapi_extra={"requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}},
                                            "required": True}})
async def import_history(request: Request,
                         format: Literal["swf", "sacct"] = Query(..., description="swf or sacct (a -P dump)."),
                         cluster: str = Query(..., max_length=63, description="The cluster the jobs ran on."),
                         principal: Principal = Depends(org_admin), session: Session = Depends(get_session, scope="function")) -> dict:
    if principal.organization is None:
        raise Forbidden("you belong to no organization: history is kept per organization")
    if not re.fullmatch(CLUSTER_RE, cluster):
        raise Invalid("cluster: letters, digits, '_', '.', '-' (1-63 characters)", rule="cluster-name")
    raw = await _body(request)
    if not raw.strip():
        raise HistoryRefused([{"line": 1, "message": "the file is empty"}], format)
    result = await run_in_threadpool(_parse, raw, format)
    out = await run_in_threadpool(_store, session, principal, format, cluster, result)
    await run_in_threadpool(session.commit)  # stored before the models are told to refit
    REGISTRY.refresh(session, principal.organization)
    return out


@router.get("/organization/decision/history/summary",
            summary="Finished jobs the estimates learn from, per cluster and template (what you may see)")
def history_summary(principal: Principal = Depends(any_user), session: Session = Depends(get_session, scope="function")) -> dict:
    if principal.organization is None:
        return {"organization": None, "jobs": 0, "clusters": [], "templates": []}
    return sh.summary(session, principal.organization, None if principal.is_org_admin else principal.username)


__all__ = ["router"]
