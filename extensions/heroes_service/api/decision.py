"""Placement: ``/organization/decision/policies`` and ``/organization/decision/decide``.

``decide`` answers, for a template and its parameters, every candidate cluster of the caller's organization
with the predicted queue wait (Slurm's own ``sbatch --test-only``, run as the caller), run time, energy, cost
(with its currency) and confidence, the choice under the chosen policy and constraints (deadline, budget) and
why, and the right-sizing recommendation. Nothing is submitted and nothing is written. Each candidate's
finish includes staging its data (``staging_s``: the inputs over the cluster's measured S3 -> cluster
throughput, unless already there, and the expected outputs back; ``decision/staging_time.py``). The inputs
are checked as submit checks them: an object the caller may not read is a 404 here too.

Templates and clusters of another organization do not exist for the caller (404), like everywhere else.
The energy routes below ``/organization/decision`` belong to ``api/energy.py``.
"""
from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..auth import Principal, check, current_principal
from ..clusters.models import clusters_of
from ..decision.placement import Constraints, decide
from ..decision.policies import DEFAULT_POLICY, POLICIES
from ..decision.staging_time import InputObject
from ..errors import Conflict, NotFound
from ..workflows import models as m
from ..workflows.templates import Template, resolve_parameters
from .clusters import _bind_identity  # cluster logins via the app's Keycloak client, the CA of its state dir

log = logging.getLogger("heroes_service.decision")
router = APIRouter(tags=["decision"])

PolicyName = Literal["performance", "energy", "cost", "balanced"]


# --- models ---------------------------------------------------------------------------------------------
class PolicyOut(BaseModel):
    name: str
    title: str
    description: str
    weights: dict[str, float]


class PoliciesOut(BaseModel):
    policies: list[PolicyOut]
    default: str


class DecideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str = Field(min_length=1, max_length=63, description="A template's name (latest version unless "
                                                                   "'version') or a template version's id.")
    version: int | None = Field(None, ge=1, le=1_000_000, description="Version of a template given by name.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Parameter values, as for submit.")
    policy: PolicyName = Field(DEFAULT_POLICY, description="performance | energy | cost | balanced.")
    deadline_s: float | None = Field(None, gt=0, le=1e9, description="Seconds from now by which the job must finish.")
    budget: float | None = Field(None, ge=0, le=1e12, description="Largest acceptable cost, in 'currency'.")
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$",
                                 description="Currency of the budget and of the cost comparison (ISO 4217). "
                                             "Default: the currency most candidates are priced in.")
    clusters: list[str] | None = Field(None, max_length=64, description="Only these clusters (names).")


class CpuFreqOut(BaseModel):
    recommended_khz: int
    saving_pct: float
    slowdown_pct: float


class CandidateOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    cluster: str
    eligible: bool
    reason: str
    wait_s: float | None
    run_s: float
    finish_s: float | None
    run_limit_s: float
    energy_kwh: float
    energy_estimated: bool
    cost: float | None
    currency: str
    confidence: float
    meets_deadline: bool
    within_budget: bool
    score: float
    cpu_freq: CpuFreqOut | None
    staging_s: float | None = Field(None, description="Seconds to move the inputs in (those not already on the "
                                                        "cluster) and the expected outputs back; in finish_s.")


class RightsizingOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    time_limit_s: int
    memory_mb: int
    cores: int
    nodes: int
    requested: dict[str, Any]
    basis: str
    history_jobs: int
    note: str
    warnings: list[str] = Field(default_factory=list, description=(
        "Requests the history shows too tight: recent runs of a step that ended TIMEOUT or OUT_OF_MEMORY. "
        "That resource is then kept at the request, never cut."))


class HistoryOut(BaseModel):
    jobs: int
    basis: str
    note: str


class DecisionOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    policy: str
    weights: dict[str, float]
    candidates: list[CandidateOut]
    choice: str | None
    reason: str
    rightsizing: RightsizingOut | None
    history: HistoryOut


# --- helpers --------------------------------------------------------------------------------------------
def find_template(session: Session, principal: Principal, ref: str, version: int | None) -> m.WorkflowTemplate:
    """A template of the caller's organization by id or by name (+ version); 404 otherwise."""
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        row = session.get(m.WorkflowTemplate, ref)
        if row is not None and not row.deleted and row.organization == principal.organization:
            return row
    query = select(m.WorkflowTemplate).where(m.WorkflowTemplate.organization == principal.organization,
                                             m.WorkflowTemplate.name == ref, m.WorkflowTemplate.deleted.is_(False))
    if version is not None:
        query = query.where(m.WorkflowTemplate.version == version)
    row = session.scalars(query.order_by(m.WorkflowTemplate.version.desc())).first()
    if row is None:
        raise NotFound(f"template {ref!r}" + (f" version {version}" if version else "") + " not found")
    return row


_parsed: OrderedDict[str, Template] = OrderedDict()
_parsed_lock = threading.Lock()


def parsed_template(row: m.WorkflowTemplate) -> Template:
    """The template of a version row, validated once: a published version never changes (only its 'deleted'
    flag does, and callers found the row with that checked). Decide is called far more often than publish."""
    with _parsed_lock:
        template = _parsed.get(row.id)
        if template is not None:
            _parsed.move_to_end(row.id)
            return template
    template = Template.model_validate(row.spec)
    with _parsed_lock:
        _parsed[row.id] = template
        while len(_parsed) > 512:
            _parsed.popitem(last=False)
    return template


def template_values(row: m.WorkflowTemplate, parameters: dict) -> tuple[Template, dict]:
    """The template and its parameters resolved; a TemplateError is a 422 with the rule (errors.py)."""
    template = parsed_template(row)
    values = resolve_parameters(template, parameters)
    for step in template.steps:
        step.resources.resolved(values)
    return template, values


def _input_objects(request: Request, principal: Principal, template: Template, values: dict) -> list[InputObject]:
    """The job's input files as S3 objects (size, content hash), each checked against the caller's grants
    (``Staging.check_input``: 404 for what the caller may not read, as at submit)."""
    files = [p.name for p in template.parameters if p.type == "file" and isinstance(values.get(p.name), dict)]
    if not files:
        return []
    from ..wiring import data_service
    from ..workflows.staging import Staging

    staging = Staging(data_service(request.app))
    out = []
    for name in files:
        checked = staging.check_input(principal, values[name])
        head = staging.data.storage.client.head_object(Bucket=checked["bucket"], Key=checked["key"])
        out.append(InputObject(bucket=checked["bucket"], key=checked["key"], size=int(checked["size"]),
                               etag=str(head.get("ETag", "")).strip('"')))
    return out


# --- routes ---------------------------------------------------------------------------------------------
async def user(principal: Principal = Depends(current_principal)) -> Principal:
    """Any user (the access middleware enforced it already); async, so no trip through the thread pool."""
    check("user", principal)
    return principal


@router.get("/organization/decision/policies", response_model=PoliciesOut,
            summary="Placement policies and their weights (time, energy, cost)")
async def list_policies(principal: Principal = Depends(user)):
    return PoliciesOut(policies=[PolicyOut(**p.as_dict()) for p in POLICIES.values()], default=DEFAULT_POLICY)


@router.post("/organization/decision/decide", response_model=DecisionOut,
             summary="Where to run a template: every cluster's predicted wait, run, energy, cost; the choice and why")
async def decide_route(request: Request, body: DecideIn = Body(...), principal: Principal = Depends(user)):
    """The work (database, estimates, Slurm's plans) runs in ONE worker thread: under load every extra hop
    through the thread pool (sync dependencies, a session dependency) adds its own scheduling delay."""
    if principal.organization is None:
        raise Conflict("you belong to no organization, so no cluster or template is yours to place",
                       rule="organization-member")
    return await anyio.to_thread.run_sync(_decide, request, body, principal)


def _decide(request: Request, body: DecideIn, principal: Principal) -> dict:
    _bind_identity(request)
    with request.app.state.sessions() as session:
        row = find_template(session, principal, body.template, body.version)
        template, values = template_values(row, body.parameters)
        clusters = clusters_of(session, principal.organization)
        if body.clusters is not None:
            known = {c.name for c in clusters}
            unknown = sorted(set(body.clusters) - known)
            if unknown:
                raise NotFound(f"cluster(s) {', '.join(repr(u[:63]) for u in unknown[:10])} not found among your "
                               "organization's clusters")
            clusters = [c for c in clusters if c.name in set(body.clusters)]
        constraints = Constraints(policy=body.policy, deadline_s=body.deadline_s, budget=body.budget,
                                  currency=body.currency)
        decision = decide(session, principal, template, values, clusters, constraints,
                          inputs=_input_objects(request, principal, template, values))
        session.rollback()  # read only
        return decision
