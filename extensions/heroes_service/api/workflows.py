"""Workflow templates and instances (seed paths below ``/organization/workflow`` and ``/organization/admin/workflow``).

* org admins publish templates (YAML or JSON; a name published again becomes its next version) and delete them;
* users list templates, submit instances (parameters validated against the template, inputs checked against
  their storage grants, the cluster given or ``auto``), list/read/cancel their instances, read step logs and
  see the nodes an instance runs on;
* org admins list the instances of one of their templates.

Instances are visible to their owner and to their organization's admins only; anything else answers 404,
the same as an id that does not exist.

The router's lifespan starts the engine (``workflows.engine``) with the app: the driver pool and one
reconciler thread per cluster with live work.
"""
from __future__ import annotations

import asyncio
import logging
import re
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..auth import Principal, require_role
from ..clusters import identity as cluster_identity
from ..clusters import logins
from ..clusters import usage as cluster_usage
from ..clusters.config import bind_state_dir
from ..clusters.errors import ClusterError, NoClusterAccess
from ..clusters.models import Cluster, cluster_by_id, cluster_by_name, clusters_of
from ..decision import frequency, placement
from ..errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from ..identity import lifecycle
from ..store import get_session
from ..store.models import Organization
from ..workflows import models as m
from ..workflows.config import get_workflow_settings
from ..workflows.engine import WorkflowEngine, owner_connector, read_tail
from ..workflows.render import instance_dir, job_name, log_path
from ..workflows.staging import Staging
from ..workflows.templates import Template, TemplateError, parse_template, resolve_parameters

# deleting an organization with live instances is refused unless forced (platform admin's route)
lifecycle.register_work_checker(m.running_work)
cluster_usage.register(m.work_on_cluster)

log = logging.getLogger("heroes_service.workflows")
any_user = require_role("user")
org_admin = require_role("org-admin")


# --- engine wiring --------------------------------------------------------------------------------------
def _bind_clusters(app) -> None:
    """Cluster logins through the app's Keycloak client; cluster secrets below the app's state dir."""
    logins.bind(app.state.identity)
    settings = getattr(app.state, "settings", None)
    if settings is not None and bind_state_dir(settings.state_dir):
        cluster_identity.forget_secrets()


def _data_service(app):
    service = getattr(app.state, "data", None)
    if service is None:
        from .. import data as data_pkg

        service = data_pkg.build(app.state.settings)
        app.state.data = service
    return service


def engine_of(app) -> WorkflowEngine:
    engine = getattr(app.state, "workflows", None)
    if engine is None:
        _bind_clusters(app)
        engine = WorkflowEngine(app.state.sessions, get_workflow_settings(), lambda: Staging(_data_service(app)),
                                app.state.settings.state_dir)
        app.state.workflows = engine
    return engine


@asynccontextmanager
async def lifespan(app):
    engine = engine_of(app)
    if engine.settings.reconciler:
        engine.start()
    try:
        yield
    finally:
        await asyncio.to_thread(engine.stop)
        app.state.workflows = None


def engine(request: Request) -> WorkflowEngine:
    _bind_clusters(request.app)
    return engine_of(request.app)


router = APIRouter(tags=["workflows"], lifespan=lifespan)


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
    steps = [StepOut(name=s.name, state=s.state, job_name=s.job_name, job_id=s.job_id, depends_on=s.depends_on,
                     exit_code=s.exit_code, nodes=s.nodes, reason=s.reason, log_tail=s.log_tail,
                     max_rss_mb=s.max_rss_mb, submitted_at=s.submitted_at, started_at=s.started_at, ended_at=s.ended_at) for s in inst.steps]
    rows = []
    if events:
        rows = [EventOut(at=e.at, step=e.step, from_state=e.from_state, to_state=e.to_state, detail=e.detail)
                for e in session.scalars(select(m.WorkflowEvent).where(m.WorkflowEvent.instance_id == inst.id)
                                         .order_by(m.WorkflowEvent.id))]
    return InstanceOut(**_summary(inst), parameters=inst.parameters, steps=steps, events=rows, outputs=inst.outputs,
                       output_bucket=inst.output_bucket, output_prefix=inst.output_prefix)


def _own_template(session: Session, principal: Principal, template_id: str) -> m.WorkflowTemplate:
    row = session.get(m.WorkflowTemplate, template_id) if len(template_id) <= 32 else None
    if row is None or row.deleted or row.organization != principal.organization:
        raise NotFound(f"template {template_id!r} not found")
    return row


def _visible_instance(session: Session, principal: Principal, instance_id: str) -> m.WorkflowInstance:
    inst = session.get(m.WorkflowInstance, instance_id) if len(instance_id) <= 32 else None
    if inst is None or inst.organization != principal.organization or \
            (inst.username != principal.username and not principal.is_org_admin):
        raise NotFound(f"instance {instance_id!r} not found")
    return inst


def _template_error(exc: TemplateError) -> Invalid:
    return Invalid(str(exc)[:2000], rule="; ".join(f"{loc}: {msg}" for loc, msg in exc.errors[:10])[:2000])


def _choose_cluster(session: Session, principal: Principal, wanted: str, template: Template,
                    values: dict) -> tuple[Cluster, dict | None]:
    """(cluster, the placement decision when ``auto`` chose it, else None)."""
    if wanted != "auto":
        cluster = cluster_by_name(session, principal.organization, wanted) or \
            cluster_by_id(session, principal.organization, wanted)
        if cluster is None:
            raise NotFound(f"cluster {wanted!r} not found among your organization's clusters")
        return cluster, None
    candidates = clusters_of(session, principal.organization)
    if not candidates:
        raise Conflict("your organization has no cluster to run on", rule="no-cluster")
    return placement.place(session, principal, template, values, candidates)


def _accepted_options(session: Session, principal: Principal, body: SubmitIn, template: Template, values: dict,
                      cluster: Cluster, decision: dict | None) -> tuple[dict[str, list[str]], list[str]]:
    """Per step, the sbatch options the user accepted (right-sizing, CPU frequency), and the events saying so.
    A frequency the cluster does not offer is refused (422) before anything is written."""
    options: dict[str, list[str]] = {step.name: [] for step in template.steps}
    events: list[str] = []
    if body.cpu_freq_khz is not None:
        try:
            frequency.check_frequency(body.cpu_freq_khz, cluster.energy_profile)
        except ValueError as exc:
            raise Invalid(f"cluster {cluster.name!r}: {exc}", rule="cpu-freq-offered-by-cluster") from None
        for step_options in options.values():
            step_options.append(f"--cpu-freq={body.cpu_freq_khz}")
        events.append(f"--cpu-freq={body.cpu_freq_khz} kHz applied to every step (accepted by the user)")
    if body.accept_rightsizing:
        recommendation = decision.get("rightsizing") if decision else None  # auto: the chosen cluster's
        if recommendation is None:
            est = placement.estimate_for(session, principal, template, values, cluster)
            recommendation = placement.rightsizing(template, est)
        sized = placement.rightsized_steps(template, values, recommendation)
        resources = dict(placement.resolved_steps(template, values))
        changes = []
        for name, new in sized.items():
            options[name] += [f"--time={new['time_minutes']}", f"--mem={new['memory_mb']}M"]
            old = resources[name]
            changes.append(f"{name}: --time {old['time_minutes']}->{new['time_minutes']} min, "
                           f"--mem {old['memory_mb']}->{new['memory_mb']}M")
        events.append(f"right-sizing accepted ({recommendation['basis']}, {recommendation['history_jobs']} "
                      f"run(s)): " + "; ".join(changes))
    return options, events


# --- templates ------------------------------------------------------------------------------------------
@router.post("/organization/admin/workflow/template", response_model=TemplateOut, status_code=201,
             summary="Publish a workflow template (a known name becomes its next version)")
def create_template(body: TemplateIn = Body(...), principal: Principal = Depends(org_admin),
                    session: Session = Depends(get_session)):
    if (body.source is None) == (body.template is None):
        raise Invalid("give either 'source' (YAML/JSON text) or 'template' (an object)", rule="one-of-source-template")
    try:
        template = parse_template(body.source if body.source is not None else body.template)
    except TemplateError as exc:
        raise _template_error(exc) from None
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
                    session: Session = Depends(get_session)):
    row = _own_template(session, principal, template_id)
    row.deleted = True
    return Response(status_code=204)


@router.get("/organization/workflow/template", response_model=list[TemplateSummary],
            summary="Templates of your organization (latest versions unless all_versions)")
def list_templates(all_versions: bool = False, principal: Principal = Depends(any_user),
                   session: Session = Depends(get_session)):
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
def get_template(template_id: str, principal: Principal = Depends(any_user), session: Session = Depends(get_session)):
    return _template_out(_own_template(session, principal, template_id))


# --- instances ------------------------------------------------------------------------------------------
@router.post("/organization/workflow/submit", response_model=InstanceOut, status_code=201,
             summary="Submit a workflow: validate, record the intent, stage inputs, sbatch every step")
async def submit(request: Request, body: SubmitIn = Body(...), principal: Principal = Depends(any_user),
                 wf: WorkflowEngine = Depends(engine)):
    if principal.organization is None:
        raise Conflict("you belong to no organization, so no cluster or template is yours to run",
                       rule="organization-member")
    instance_id = await asyncio.to_thread(_record_submission, request, wf, principal, body)
    future = wf.start_drive(instance_id)
    if body.wait and future is not None:
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), timeout=wf.settings.submit_wait_s)
        except asyncio.TimeoutError:
            pass  # still staging/submitting: the answer shows where it is
    return await asyncio.to_thread(_read_instance, request, principal, instance_id)


def _record_submission(request: Request, wf: WorkflowEngine, principal: Principal, body: SubmitIn) -> str:
    """Validate everything, then commit the instance and its steps (state NEW): the intent."""
    with request.app.state.sessions() as session:
        if body.template_id:
            row = _own_template(session, principal, body.template_id)
        elif body.template:
            row = session.scalars(select(m.WorkflowTemplate).where(
                m.WorkflowTemplate.organization == principal.organization, m.WorkflowTemplate.name == body.template,
                m.WorkflowTemplate.deleted.is_(False)).order_by(m.WorkflowTemplate.version.desc())).first()
            if row is None:
                raise NotFound(f"template {body.template!r} not found")
        else:
            raise Invalid("give template_id or template (a name)", rule="one-of-template-id-name")
        template = Template.model_validate(row.spec)
        try:
            values = resolve_parameters(template, body.parameters)
            for step in template.steps:
                step.resources.resolved(values)
        except TemplateError as exc:
            raise _template_error(exc) from None
        cluster, decision = _choose_cluster(session, principal, body.cluster, template, values)
        accepted, accepted_events = _accepted_options(session, principal, body, template, values, cluster, decision)
        try:
            login = cluster_identity.connector_for(cluster, principal).login
        except NoClusterAccess as exc:
            raise Forbidden(str(exc), rule="cluster-access") from None
        except ClusterError as exc:
            raise Unavailable(f"cluster {cluster.name!r}: {exc}") from None
        staging = wf.staging
        for param in template.parameters:
            if param.type == "file" and param.name in values:
                info = staging.check_input(principal, values[param.name])
                values[param.name] = {"bucket": info["bucket"], "key": info["key"]}
        bucket = staging.output_bucket(principal.username, principal.organization)
        org = session.scalars(select(Organization).where(Organization.name == principal.organization)).first()
        instance_id = m.new_id()
        inst = m.WorkflowInstance(
            id=instance_id, organization=principal.organization, organization_id=org.id if org else "", username=principal.username,
            user_id=principal.user_id, name=body.name, template_id=row.id, template_name=row.name,
            template_version=row.version, cluster_id=cluster.id, cluster_name=cluster.name, cluster_login=login,
            parameters=values, state=m.NEW, reason="", outputs=[], output_bucket=bucket)
        inst.work_dir = instance_dir(cluster.work_dir_for(login), instance_id)
        inst.output_prefix = f"workflows/{inst.id}/"
        session.add(inst)
        session.flush()  # the instance row first: steps and events reference it
        for position, step in enumerate(template.ordered_steps()):
            session.add(m.WorkflowStep(instance_id=inst.id, name=step.name, position=position,
                                       depends_on=list(step.depends_on), state=m.STEP_NEW,
                                       job_name=job_name(inst.id, step.name), reason="", log_tail="", script="",
                                       options=accepted.get(step.name, [])))
        session.add(m.WorkflowEvent(instance_id=inst.id, from_state="", to_state=m.NEW,
                                    detail=f"submitted by {principal.username} to {cluster.name}"))
        if decision is not None:
            session.add(m.WorkflowEvent(instance_id=inst.id, from_state=m.NEW, to_state=m.NEW,
                                        detail=f"placement ({decision['policy']}): {decision['reason']}"[:4000]))
        for detail in accepted_events:
            session.add(m.WorkflowEvent(instance_id=inst.id, from_state=m.NEW, to_state=m.NEW, detail=detail[:4000]))
        session.commit()
        return inst.id


def _read_instance(request: Request, principal: Principal, instance_id: str) -> InstanceOut:
    with request.app.state.sessions() as session:
        return _instance_out(session, _visible_instance(session, principal, instance_id))


@router.get("/organization/workflow/instance", response_model=list[InstanceSummary],
            summary="Your workflow instances, newest first")
def list_instances(state: str | None = Query(None, max_length=32), limit: int = Query(200, ge=1, le=2000),
                   principal: Principal = Depends(any_user), session: Session = Depends(get_session)):
    query = select(m.WorkflowInstance).where(m.WorkflowInstance.organization == principal.organization,
                                             m.WorkflowInstance.username == principal.username)
    if state:
        query = query.where(m.WorkflowInstance.state == state.upper())
    rows = session.scalars(query.order_by(m.WorkflowInstance.created_at.desc()).limit(limit))
    return [InstanceSummary(**_summary(r)) for r in rows]


@router.get("/organization/workflow/instance/{instance_id}", response_model=InstanceOut,
            summary="One instance: steps, job ids, states, events, outputs")
def get_instance(instance_id: str, principal: Principal = Depends(any_user), session: Session = Depends(get_session)):
    return _instance_out(session, _visible_instance(session, principal, instance_id))


@router.delete("/organization/workflow/instance/{instance_id}", status_code=202,
               summary="Cancel an instance: scancel every step, stop staging")
def cancel_instance(request: Request, instance_id: str, principal: Principal = Depends(any_user),
                    wf: WorkflowEngine = Depends(engine)):
    with request.app.state.sessions() as session:
        inst = _visible_instance(session, principal, instance_id)
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
    try:
        result = wf.cancel(instance_id, conn)
    except ClusterError as exc:
        raise Unavailable(f"cancel requested, but scancel did not reach {inst.cluster_name!r}: {exc}; the "
                          "reconciler retries") from None
    return {"id": instance_id, "cancel_requested": True, "scancelled": result["cancelled"]}


@router.get("/organization/workflow/instance/{instance_id}/log/{step}", response_class=PlainTextResponse,
            summary="A step's log (stdout and stderr), the last `tail` bytes")
def step_log(request: Request, instance_id: str, step: str, tail: int = Query(65536, ge=1, le=16 * 1024**2),
             principal: Principal = Depends(any_user), wf: WorkflowEngine = Depends(engine)):
    with request.app.state.sessions() as session:
        inst = _visible_instance(session, principal, instance_id)
        if step not in {s.name for s in inst.steps}:
            raise NotFound(f"step {step!r} not found")
        cluster = cluster_by_id(session, None, inst.cluster_id)
        if cluster is None:
            raise NotFound("the instance's cluster was deleted")
        session.expunge(cluster)
        work_dir, login = inst.work_dir, inst.cluster_login
    try:
        return PlainTextResponse(read_tail(owner_connector(cluster, login), f"{work_dir}/{log_path(step)}", tail))
    except ClusterError as exc:
        raise Unavailable(f"cluster {cluster.name!r} unreachable: {exc}") from None


@router.get("/organization/workflow/visualization", response_model=VisualizationOut,
            summary="The node(s) an instance runs (or ran) on, per step")
def visualization(instance_id: str = Query(..., max_length=32), principal: Principal = Depends(any_user),
                  session: Session = Depends(get_session)):
    inst = _visible_instance(session, principal, instance_id)
    nodes: list[str] = []
    for s in inst.steps:
        for node in _expand_nodes(s.nodes):
            if node not in nodes:
                nodes.append(node)
    return VisualizationOut(instance_id=inst.id, cluster=inst.cluster_name, state=inst.state, nodes=nodes,
                            steps=[{"name": s.name, "state": s.state, "nodes": _expand_nodes(s.nodes)}
                                   for s in inst.steps])


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
                    session: Session = Depends(get_session)):
    row = session.get(m.WorkflowTemplate, template_id) if len(template_id) <= 32 else None
    if row is None or row.organization != principal.organization:
        raise NotFound(f"template {template_id!r} not found")
    rows = session.scalars(select(m.WorkflowInstance).where(m.WorkflowInstance.template_id == template_id,
                                                            m.WorkflowInstance.organization == principal.organization)
                           .order_by(m.WorkflowInstance.created_at.desc()).limit(2000))
    return [InstanceSummary(**_summary(r)) for r in rows]


__all__ = ["router", "engine_of"]
