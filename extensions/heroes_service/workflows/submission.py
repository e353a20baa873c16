"""Taking a submission: validate everything, then commit the instance, its steps and events (state NEW) - the
intent the driver works from. No cluster or S3 write happens here; the driver stages and submits.

The API (``api/workflows.py``) translates its request body to ``Submission`` and calls ``record_submission``;
the template, parameter, cluster, placement and right-sizing rules all live here, in the domain.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..auth import Principal
from ..clusters import identity as cluster_identity
from ..clusters.models import Cluster, cluster_by_id, cluster_by_name, clusters_of
from ..decision import frequency, placement
from ..errors import Conflict, Invalid, NotFound
from ..store.models import Organization
from ..store.plain_insert import commit_new
from . import models as m
from .render import instance_dir, job_name
from .staging import Staging
from .templates import Template, TemplateError, resolve_parameters


@dataclass
class Submission:
    """What a user asks to run (the API's body without its transport options)."""

    template_id: str | None = None
    template: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    cluster: str = "auto"
    name: str = ""
    accept_rightsizing: bool = False
    cpu_freq_khz: int | None = None


def own_template(session: Session, principal: Principal, template_id: str) -> m.WorkflowTemplate:
    row = session.get(m.WorkflowTemplate, template_id) if len(template_id) <= 32 else None
    return _owned(row, principal, template_id)


def _owned(row: m.WorkflowTemplate | None, principal: Principal, named: str) -> m.WorkflowTemplate:
    if row is None or row.deleted or row.organization != principal.organization:
        raise NotFound(f"template {named!r} not found")
    return row


def _template_to_run(session: Session, principal: Principal, body: Submission) -> tuple[m.WorkflowTemplate, str]:
    """The template version ``body`` names (by id, or the latest of a name) and the id of the caller's
    organization, in one query (the organization's row is needed for nothing else)."""
    org_id = select(Organization.id).where(Organization.name == principal.organization).scalar_subquery()
    if body.template_id:
        found = session.execute(select(m.WorkflowTemplate, org_id).where(
            m.WorkflowTemplate.id == body.template_id)).first() if len(body.template_id) <= 32 else None
        return _owned(found[0] if found else None, principal, body.template_id), (found[1] or "")
    if not body.template:
        raise Invalid("give template_id or template (a name)", rule="one-of-template-id-name")
    found = session.execute(select(m.WorkflowTemplate, org_id).where(
        m.WorkflowTemplate.organization == principal.organization, m.WorkflowTemplate.name == body.template,
        m.WorkflowTemplate.deleted.is_(False)).order_by(m.WorkflowTemplate.version.desc()).limit(1)).first()
    if found is None:
        raise NotFound(f"template {body.template!r} not found")
    return found[0], found[1] or ""


def can_see(principal: Principal, inst: m.WorkflowInstance) -> bool:
    """Its owner and its organization's admins."""
    return inst.organization == principal.organization and \
        (inst.username == principal.username or principal.is_org_admin)


def visible_instance(session: Session, principal: Principal, instance_id: str) -> m.WorkflowInstance:
    inst = session.get(m.WorkflowInstance, instance_id) if len(instance_id) <= 32 else None
    if inst is None or not can_see(principal, inst):
        raise NotFound(f"instance {instance_id!r} not found")
    return inst


def template_error(exc: TemplateError) -> Invalid:
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


def _accepted_options(session: Session, principal: Principal, body: Submission, template: Template, values: dict,
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


def record_submission(sessions: sessionmaker[Session], staging: Staging, principal: Principal,
                      body: Submission, plan: Callable[..., None] | None = None,
                      early: Callable[..., None] | None = None) -> str:
    """Validate everything, then commit the instance and its steps (state NEW): the intent. ``plan(session,
    instance, cluster, template, connector)`` adds to the same commit (the driver's first states and intent:
    ``driver.submit_recorded``). ``early(connector, cluster, template, work dir)`` is called as soon as the cluster and
    the instance's folder are known, before anything is written (the driver starts preparing the folder on
    the login node then, while this function works on)."""
    with sessions() as session:
        row, org_id = _template_to_run(session, principal, body)
        template = Template.model_validate(row.spec)
        try:
            values = resolve_parameters(template, body.parameters)
            for step in template.steps:
                step.resources.resolved(values)
        except TemplateError as exc:
            raise template_error(exc) from None
        cluster, decision = _choose_cluster(session, principal, body.cluster, template, values)
        accepted, accepted_events = _accepted_options(session, principal, body, template, values, cluster, decision)
        # NoClusterAccess (403) and other ClusterErrors (503) are mapped once, in errors.py
        conn = cluster_identity.connector_for(cluster, principal)
        login = conn.login
        instance_id = m.new_id()
        work_dir = instance_dir(cluster.work_dir_for(login), instance_id)
        if early is not None:
            early(conn, cluster, template, work_dir)
        for param in template.parameters:
            if param.type == "file" and param.name in values:
                info = staging.check_input(principal, values[param.name])
                values[param.name] = {"bucket": info["bucket"], "key": info["key"]}
        bucket = staging.output_bucket(principal.username, principal.organization)
        inst = m.WorkflowInstance(
            id=instance_id, organization=principal.organization, organization_id=org_id, username=principal.username,
            user_id=principal.user_id, name=body.name, template_id=row.id, template_name=row.name,
            template_version=row.version, cluster_id=cluster.id, cluster_name=cluster.name, cluster_login=login,
            parameters=values, state=m.NEW, reason="", outputs=[], output_bucket=bucket)
        inst.work_dir = work_dir
        inst.output_prefix = f"workflows/{inst.id}/"
        # the steps through the relationship: the instance holds them in memory (no lazy load when the driver
        # plans, and the driver's answer is made from them)
        inst.steps = [m.WorkflowStep(instance_id=instance_id, name=step.name, position=position,
                                     depends_on=list(step.depends_on), state=m.STEP_NEW,
                                     job_name=job_name(inst.id, step.name), reason="", log_tail="", script="",
                                     options=accepted.get(step.name, []))
                      for position, step in enumerate(template.ordered_steps())]
        session.add(inst)   # written at the commit: the instance, then its steps and events
        session.add(m.WorkflowEvent(instance_id=inst.id, from_state="", to_state=m.NEW,
                                    detail=f"submitted by {principal.username} to {cluster.name}"))
        if decision is not None:
            session.add(m.WorkflowEvent(instance_id=inst.id, from_state=m.NEW, to_state=m.NEW,
                                        detail=f"placement ({decision['policy']}): {decision['reason']}"[:4000]))
        for detail in accepted_events:
            session.add(m.WorkflowEvent(instance_id=inst.id, from_state=m.NEW, to_state=m.NEW, detail=detail[:4000]))
        if plan is not None:
            plan(session, inst, cluster, template, conn)
        # plain INSERTs (the ORM's unit of work was most of this commit's cost); the objects keep the values
        commit_new(session, m.WorkflowInstance, m.WorkflowStep, m.WorkflowEvent)
        return inst.id


