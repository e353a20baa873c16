"""Energy API (issue 6): EAR file ingestion and energy queries, below ``/organization/decision``.

``POST /organization/decision/ingest_ear_files`` takes either one file as the raw request body (its name in
``?name=``) or many as JSON ``{"files": [{"name": ..., "content": "..."}]}``. Every row of every file is
validated first (an error names file, line and column, 422 with the full list in ``errors``) and the rows are
stored all together or not at all; steps the organization already stored (cluster, job, step, node) are skipped
(another organization's records never count: the key includes the organization). ``user=`` must be a member
of the caller's organization, ``cluster=`` one of its clusters (or a cluster never enrolled here).

Queries (``/organization/decision/energy/...``) see what :func:`heroes_service.energy.ownership.visible`
allows: your own steps, your organization's as an org admin.
"""
from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ..auth import Principal, current_principal, require_role
from ..energy import queries
from ..energy.ingest import Upload, ingest
from ..errors import Invalid
from ..store import get_session

router = APIRouter(prefix="/organization/decision", tags=["energy"], dependencies=[Depends(require_role("user"))])

#: a request body bigger than this is refused (413) before it is read further
MAX_BODY = 512 * 1024 * 1024
#: job and step ids are stored as 64-bit integers
MAX_ID = 2**63 - 1


class FileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., description="The file's name (errors name it).")
    content: str = Field(..., description="The file's text (EAR ';'-separated CSV or our sample file).")


class FilesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[FileIn]


def _files_schema() -> dict:
    """FilesIn's JSON schema with FileIn inlined: ``model_json_schema`` refers to ``#/$defs/FileIn``, which does
    not resolve once the schema sits inside the OpenAPI document (its ``$defs`` are not carried over)."""
    schema = FilesIn.model_json_schema()
    item = schema.pop("$defs")["FileIn"]
    schema["properties"]["files"]["items"] = item
    return schema


async def _body(request: Request) -> bytes:
    """The request body, refused past MAX_BODY (413) without reading the rest."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            from ..errors import ApiError

            raise ApiError(f"request body over {MAX_BODY // (1024 * 1024)} MiB: send fewer rows per request",
                           status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _uploads(request: Request, raw: bytes, name: str) -> list[Upload]:
    kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = FilesIn.model_validate_json(raw)
        except ValueError as exc:
            raise Invalid(f"JSON body must be {{'files': [{{'name', 'content'}}]}}: {str(exc)[:200]}",
                          rule="ear-file") from None
        return [Upload(f.name, f.content.encode("utf-8")) for f in body.files]
    if not name:
        raise Invalid("a raw file body needs its name in ?name=", rule="ear-file")
    return [Upload(name, raw)]


@router.post("/ingest_ear_files", status_code=201,
             summary="Ingest EAR application files (eacct, csv/heroes plugins, EAR-lite) and sample files",
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": _files_schema()},
                 "text/csv": {"schema": {"type": "string"}}}, "required": True}})
async def ingest_ear_files(request: Request,
                           name: str = Query("", description="Name of a raw-body file (errors name it)."),
                           cluster: str = Query("", max_length=63, description="Cluster the jobs ran on."),
                           instance_id: str = Query("", max_length=64, description="Workflow instance of the steps."),
                           user: str = Query("", max_length=255, description="Owner (org admins only)."),
                           principal: Principal = Depends(current_principal),
                           session: Session = Depends(get_session, scope="function")) -> dict:
    raw = await _body(request)
    uploads = _uploads(request, raw, name)

    def is_member(username: str) -> bool:
        """Whether ``username`` belongs to the caller's organization (asked of Keycloak, as org admin routes do)."""
        from ..identity.keycloak import OrgDirectory

        return OrgDirectory(request.app.state.identity, principal.organization).member_by_username(username) is not None

    return await run_in_threadpool(ingest, session, principal, uploads, cluster=cluster,
                                   instance_id=instance_id, user=user, is_member=is_member)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def filters(instance_id: str = Query(""), user: str = Query(""), organization: str = Query(""),
            cluster: str = Query(""), template: str = Query(""), job_id: int | None = Query(None, ge=0, le=MAX_ID),
            step_id: int | None = Query(None, ge=0, le=MAX_ID),
            start: datetime | None = Query(None, description="Steps that started at or after (ISO 8601)."),
            end: datetime | None = Query(None, description="Steps that started before (ISO 8601).")
            ) -> queries.Filters:
    return queries.Filters(instance_id, user, organization, cluster, template, job_id, step_id, _epoch(start),
                          _epoch(end))


@router.get("/energy/steps", summary="Energy of each step you may see (EAR's aggregation over nodes)")
def energy_steps(f: queries.Filters = Depends(filters), limit: int = Query(1000, ge=1, le=10000),
                 principal: Principal = Depends(current_principal),
                 session: Session = Depends(get_session, scope="function")) -> dict:
    return {"steps": queries.steps(session, principal, f, limit)}


@router.get("/energy/summary", summary="Energy totals per step, instance, user, organization, cluster or template")
def energy_summary(group_by: str = Query(..., description="step, instance, user, organization, cluster, template"),
                   f: queries.Filters = Depends(filters), principal: Principal = Depends(current_principal),
                   session: Session = Depends(get_session, scope="function")) -> dict:
    return {"group_by": group_by, "groups": queries.summary(session, principal, group_by, f)}


@router.get("/energy/samples", summary="Per-second power samples of one step (every node)")
def energy_samples(job_id: int = Query(..., ge=0, le=MAX_ID), step_id: int = Query(..., ge=0, le=MAX_ID),
                   cluster: str = Query(""),
                   principal: Principal = Depends(current_principal),
                   session: Session = Depends(get_session, scope="function")) -> dict:
    return {"samples": queries.samples(session, principal, cluster, job_id, step_id)}
