"""Workflow templates and instances (seed paths below ``/organization/workflow`` and ``/organization/admin/workflow``).

* org admins publish templates (YAML or JSON; a name published again becomes its next version) and delete them;
* users list templates, submit instances (parameters validated against the template, inputs checked against
  their storage grants, the cluster given or ``auto``), list/read/cancel their instances, read step logs and
  see the nodes an instance runs on;
* org admins list the instances of one of their templates.

Instances are visible to their owner and to their organization's admins only; anything else answers 404,
the same as an id that does not exist.

The domain is in ``workflows/`` (submission rules in ``workflows/submission.py``, the engine in
``workflows/engine.py``); the app builds and starts the engine in its lifespan (``app.py``). Domain errors
(templates, cluster access) are mapped to statuses once, in ``errors.py``.
"""
from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime
from functools import partial
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..auth import Principal, require_role
from ..clusterjobs.submit import owner_connector, owner_principal
from ..clusters import identity as cluster_identity
from ..clusters import usage as cluster_usage
from ..clusters.errors import ClusterError
from ..clusters.models import cluster_by_id
from ..errors import Conflict, Invalid, NotFound
from ..identity import lifecycle
from ..store import get_session
from ..workflows import models as m
from ..workflows.cluster_files import read_tail
from ..workflows.engine import WorkflowEngine
from ..workflows.render import log_path
from ..workflows.recorded import Recorded
from ..workflows.submission import Submission, can_see, own_template, record_submission, visible_instance
from ..workflows.templates import Template, parse_template
from ..wiring import bind_clusters

# deleting an organization with live instances is refused unless forced (platform admin's route)
lifecycle.register_work_checker(m.running_work)
cluster_usage.register(m.work_on_cluster)

log = logging.getLogger("heroes_service.workflows")
any_user = require_role("user")
org_admin = require_role("org-admin")


async def engine(request: Request) -> WorkflowEngine:
    """The app's engine (built in app.py); the clusters library is bound to this app first (tests run several).
    Async: no I/O, so no trip through the thread pool."""
    bind_clusters(request.app)
    return request.app.state.workflows


router = APIRouter(tags=["workflows"])


# --- models ---------------------------------------------------------------------------------------------
class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(None, max_length=600_000, description="The template as YAML or JSON text.")
    template: dict[str, Any] | None = Field(None, description="The template as a JSON object (instead of source).")


class TemplateSummary(BaseModel):
    id: str
    name: str
    version: int
    title: str
    description: str
    created_by: str
    created_at: datetime


class TemplateOut(TemplateSummary):
    spec: dict[str, Any]
    parameters: list[dict[str, Any]]
    source: str


class SubmitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template_id: str | None = Field(None, max_length=32, description="A template version's id ...")
    template: str | None = Field(None, max_length=63, description="... or a template name (latest version).")
    parameters: dict[str, Any] = Field(default_factory=dict)
    cluster: str = Field("auto", max_length=63, description="Cluster name or id, or 'auto'.")
    name: str = Field("", max_length=200, description="Free-text label of the instance.")
    wait: bool = Field(True, description="Answer once every step is submitted (else right after the intent).")
    accept_rightsizing: bool = Field(
        False, description="Apply the decision module's right-sizing to every step (sbatch --time/--mem; never "
                           "below the template's minimums nor above its requests).")
    cpu_freq_khz: int | None = Field(
        None, ge=1, le=10_000_000, description="CPU frequency for every step (sbatch --cpu-freq, kHz), e.g. the "
                                               "decision's cpu_freq advice; must be one the cluster offers.")


class StepOut(BaseModel):
    name: str
    state: str
    job_name: str
    job_id: str | None
    depends_on: list[str]
    exit_code: int | None
    nodes: str
    reason: str
    log_tail: str
    max_rss_mb: float | None = Field(None, description="Peak memory of the step's job (largest MaxRSS of its "
                                                       "Slurm steps, MiB), recorded when the instance ends.")
    submitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


class EventOut(BaseModel):
    at: datetime
    step: str
    from_state: str
    to_state: str
    detail: str


class InstanceSummary(BaseModel):
    id: str
    name: str
    username: str
    template_id: str
    template_name: str
    template_version: int
    cluster: str
    state: str
    reason: str
    exit_code: int | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class InstanceOut(InstanceSummary):
    parameters: dict[str, Any]
    steps: list[StepOut]
    events: list[EventOut] = []
    outputs: list[dict[str, Any]]
    output_bucket: str
    output_prefix: str


class VisualizationOut(BaseModel):
    instance_id: str
    cluster: str
    state: str
    nodes: list[str]
    steps: list[dict[str, Any]]
    desktops: list[dict[str, Any]] = Field(default_factory=list, description="Desktops opened on the instance's "
                                           "folder (Desktop app, Visualize): id, state, node, ready.")


# --- helpers --------------------------------------------------------------------------------------------
def _template_summary(row: m.WorkflowTemplate) -> dict:
    return dict(id=row.id, name=row.name, version=row.version, title=row.title,
                description=row.spec.get("description", ""), created_by=row.created_by, created_at=row.created_at)


def _template_out(row: m.WorkflowTemplate) -> TemplateOut:
    template = Template.model_validate(row.spec)
    return TemplateOut(**_template_summary(row), spec=row.spec, parameters=template.form_schema(), source=row.source)


def _summary(inst: m.WorkflowInstance) -> dict:
    return dict(id=inst.id, name=inst.name, username=inst.username, template_id=inst.template_id,
                template_name=inst.template_name, template_version=inst.template_version, cluster=inst.cluster_name,
                state=inst.state, reason=inst.reason, exit_code=inst.exit_code, cancel_requested=inst.cancel_requested,
                created_at=inst.created_at, updated_at=inst.updated_at, finished_at=inst.finished_at)


def _instance_out(session: Session, inst: m.WorkflowInstance, events: bool = True) -> InstanceOut:
    rows = []
    if events:
        event = m.WorkflowEvent   # plain rows: no ORM object per event
        rows = [EventOut(at=at, step=step, from_state=from_state, to_state=to_state, detail=detail)
                for at, step, from_state, to_state, detail in session.execute(
                    select(event.at, event.step, event.from_state, event.to_state, event.detail)
                    .where(event.instance_id == inst.id).order_by(event.id))]
    return _instance_with(inst, rows)


def _instance_with(inst: m.WorkflowInstance, events: list[EventOut]) -> InstanceOut:
    steps = [StepOut(name=s.name, state=s.state, job_name=s.job_name, job_id=s.job_id, depends_on=s.depends_on,
                     exit_code=s.exit_code, nodes=s.nodes, reason=s.reason, log_tail=s.log_tail,
                     max_rss_mb=s.max_rss_mb, submitted_at=s.submitted_at, started_at=s.started_at,
                     ended_at=s.ended_at) for s in inst.steps]
    return InstanceOut(**_summary(inst), parameters=inst.parameters, steps=steps, events=events,
                       outputs=inst.outputs, output_bucket=inst.output_bucket, output_prefix=inst.output_prefix)


# --- templates ------------------------------------------------------------------------------------------
@router.post("/organization/admin/workflow/template", response_model=TemplateOut, status_code=201,
             summary="Publish a workflow template (a known name becomes its next version)")
def create_template(body: TemplateIn = Body(...), principal: Principal = Depends(org_admin),
                    session: Session = Depends(get_session, scope="function")):
    if (body.source is None) == (body.template is None):
        raise Invalid("give either 'source' (YAML/JSON text) or 'template' (an object)", rule="one-of-source-template")
    template = parse_template(body.source if body.source is not None else body.template)
    latest = session.scalar(select(func.max(m.WorkflowTemplate.version)).where(
        m.WorkflowTemplate.organization == principal.organization, m.WorkflowTemplate.name == template.name))
    template.version = (latest or 0) + 1
    spec = template.model_dump(mode="json")
    row = m.WorkflowTemplate(organization=principal.organization, name=template.name, version=template.version,
                             title=template.title, spec=spec, source=body.source or "", created_by=principal.username)
    session.add(row)
    session.flush()
    return _template_out(row)


@router.delete("/organization/admin/workflow/template/{template_id}", status_code=204,
               summary="Delete a template version (instances keep their record)")
def delete_template(template_id: str, principal: Principal = Depends(org_admin),
                    session: Session = Depends(get_session, scope="function")):
    row = own_template(session, principal, template_id)
    row.deleted = True
    return Response(status_code=204)


@router.get("/organization/workflow/template", response_model=list[TemplateSummary],
            summary="Templates of your organization (latest versions unless all_versions)")
def list_templates(all_versions: bool = False, principal: Principal = Depends(any_user),
                   session: Session = Depends(get_session, scope="function")):
    rows = list(session.scalars(select(m.WorkflowTemplate).where(
        m.WorkflowTemplate.organization == principal.organization, m.WorkflowTemplate.deleted.is_(False))
        .order_by(m.WorkflowTemplate.name, m.WorkflowTemplate.version.desc())))
    if not all_versions:
        seen, latest = set(), []
        for row in rows:
            if row.name not in seen:
                seen.add(row.name)
                latest.append(row)
        rows = latest
    return [TemplateSummary(**_template_summary(r)) for r in rows]


@router.get("/organization/workflow/template/{template_id}", response_model=TemplateOut,
            summary="One template version with its parameter form schema")
def get_template(template_id: str, principal: Principal = Depends(any_user), session: Session = Depends(get_session, scope="function")):
    return _template_out(own_template(session, principal, template_id))


# --- instances ------------------------------------------------------------------------------------------
@router.post("/organization/workflow/submit", response_model=InstanceOut, status_code=201,
             summary="Submit a workflow: validate, record the intent, stage inputs, sbatch every step")
async def submit(request: Request, body: SubmitIn = Body(...), principal: Principal = Depends(any_user),
                 wf: WorkflowEngine = Depends(engine)):
    if principal.organization is None:
        raise Conflict("you belong to no organization, so no cluster or template is yours to run",
                       rule="organization-member")
    submission = Submission(**body.model_dump(exclude={"wait"}))
    record = partial(record_submission, request.app.state.sessions, wf.staging, principal, submission)
    # the instance, its first states and its first step's intent in one commit; with wait, the driver's
    # thread makes the answer in the transaction of the last job id (no further hop, no second read)
    answer = partial(_answer, principal) if body.wait else None
    instance_id, future = await asyncio.to_thread(wf.submit_recorded, record, answer)
    if body.wait:
        try:
            out = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout=wf.settings.submit_wait_s)
            if out is not None:
                return _created(out)
        except asyncio.TimeoutError:
            pass  # still staging/submitting: the answer shows where it is
    return _created(await asyncio.to_thread(_read_instance, request, principal, instance_id))


def _created(out: InstanceOut) -> Response:
    """The answer serialized once: ``out`` is built as ``InstanceOut`` already, so FastAPI's check of the
    returned value against ``response_model`` (dump, validate, dump again) would only repeat that work."""
    return Response(out.model_dump_json(), status_code=201, media_type="application/json")


def _read_instance(request: Request, principal: Principal, instance_id: str) -> InstanceOut:
    with request.app.state.sessions() as session:
        return _answer(principal, session, instance_id)


def _answer(principal: Principal, session: Session | None, instance_id: str,
            recorded: Recorded | None = None) -> InstanceOut:
    """The submission's answer, read in ``session``, or, when the driver committed the job ids from what it
    held in memory (``workflows/recorded.py``), made from ``recorded`` - exactly what that commit wrote."""
    if recorded is None:
        return _instance_out(session, visible_instance(session, principal, instance_id))
    inst = recorded.instance
    if inst.id != instance_id or not can_see(principal, inst):
        raise NotFound(f"instance {instance_id!r} not found")
    return _instance_with(inst, [EventOut(at=e.at, step=e.step, from_state=e.from_state, to_state=e.to_state,
                                          detail=e.detail) for e in recorded.events])


@router.get("/organization/workflow/instance", response_model=list[InstanceSummary],
            summary="Your workflow instances, newest first")
def list_instances(state: str | None = Query(None, max_length=32), limit: int = Query(200, ge=1, le=2000),
                   principal: Principal = Depends(any_user), session: Session = Depends(get_session, scope="function")):
    query = select(m.WorkflowInstance).where(m.WorkflowInstance.organization == principal.organization,
                                             m.WorkflowInstance.username == principal.username)
    if state:
        query = query.where(m.WorkflowInstance.state == state.upper())
    rows = session.scalars(query.order_by(m.WorkflowInstance.created_at.desc()).limit(limit))
    return [InstanceSummary(**_summary(r)) for r in rows]


@router.get("/organization/workflow/instance/{instance_id}", response_model=InstanceOut,
            summary="One instance: steps, job ids, states, events, outputs")
def get_instance(instance_id: str, principal: Principal = Depends(any_user), session: Session = Depends(get_session, scope="function")):
    return _instance_out(session, visible_instance(session, principal, instance_id))


@router.delete("/organization/workflow/instance/{instance_id}", status_code=202,
               summary="Cancel an instance: scancel every step, stop staging")
def cancel_instance(request: Request, instance_id: str, principal: Principal = Depends(any_user),
                    wf: WorkflowEngine = Depends(engine)):
    with request.app.state.sessions() as session:
        inst = visible_instance(session, principal, instance_id)
        if inst.username != principal.username and not principal.is_org_admin:
            raise NotFound(f"instance {instance_id!r} not found")
        cluster = cluster_by_id(session, None, inst.cluster_id)
        if inst.state in m.INSTANCE_FINAL:
            raise Conflict(f"instance {instance_id!r} already ended ({inst.state})", rule="instance-final")
    conn = None
    if cluster is not None and inst.username == principal.username:
        try:
            conn = cluster_identity.connector_for(cluster, principal)
        except ClusterError:
            conn = None
    result = wf.cancel(instance_id, conn)  # a cluster that does not answer: 503 (errors.py); the reconciler retries
    return {"id": instance_id, "cancel_requested": True, "scancelled": result["cancelled"]}


@router.get("/organization/workflow/instance/{instance_id}/log/{step}", response_class=PlainTextResponse,
            summary="A step's log (stdout and stderr), the last `tail` bytes")
def step_log(request: Request, instance_id: str, step: str, tail: int = Query(65536, ge=1, le=16 * 1024**2),
             principal: Principal = Depends(any_user), wf: WorkflowEngine = Depends(engine)):
    with request.app.state.sessions() as session:
        inst = visible_instance(session, principal, instance_id)
        if step not in {s.name for s in inst.steps}:
            raise NotFound(f"step {step!r} not found")
        cluster = cluster_by_id(session, None, inst.cluster_id)
        if cluster is None:
            raise NotFound("the instance's cluster was deleted")
        session.expunge(cluster)
        work_dir, login, owner = inst.work_dir, inst.cluster_login, owner_principal(inst)
    return PlainTextResponse(read_tail(owner_connector(cluster, login, owner), f"{work_dir}/{log_path(step)}", tail))


@router.get("/organization/workflow/visualization", response_model=VisualizationOut,
            summary="The node(s) an instance runs (or ran) on, per step")
def visualization(instance_id: str = Query(..., max_length=32), principal: Principal = Depends(any_user),
                  session: Session = Depends(get_session, scope="function")):
    inst = visible_instance(session, principal, instance_id)
    nodes: list[str] = []
    for s in inst.steps:
        for node in _expand_nodes(s.nodes):
            if node not in nodes:
                nodes.append(node)
    from ..visualization.models import desktops_of_instance  # the visualization capability's own table

    return VisualizationOut(instance_id=inst.id, cluster=inst.cluster_name, state=inst.state, nodes=nodes,
                            steps=[{"name": s.name, "state": s.state, "nodes": _expand_nodes(s.nodes)}
                                   for s in inst.steps], desktops=desktops_of_instance(session, inst.id))


def _expand_nodes(text: str) -> list[str]:
    """``alpha-n[1-2],beta-n1`` -> names (Slurm's compact host lists, the simple forms)."""
    out: list[str] = []
    for match in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", text or ""):
        base, ranges = match.group(1), match.group(2)
        if not ranges:
            out.append(base)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if hi and lo.isdigit() and hi.isdigit():
                out += [f"{base}{str(i).zfill(len(lo))}" for i in range(int(lo), int(hi) + 1)]
            else:
                out.append(base + lo)
    return out


@router.get("/organization/admin/workflow/instance/{template_id}", response_model=list[InstanceSummary],
            summary="Instances of one of your organization's templates (every user)")
def admin_instances(template_id: str, principal: Principal = Depends(org_admin),
                    session: Session = Depends(get_session, scope="function")):
    row = session.get(m.WorkflowTemplate, template_id) if len(template_id) <= 32 else None
    if row is None or row.organization != principal.organization:
        raise NotFound(f"template {template_id!r} not found")
    rows = session.scalars(select(m.WorkflowInstance).where(m.WorkflowInstance.template_id == template_id,
                                                            m.WorkflowInstance.organization == principal.organization)
                           .order_by(m.WorkflowInstance.created_at.desc()).limit(2000))
    return [InstanceSummary(**_summary(r)) for r in rows]


__all__ = ["router"]
