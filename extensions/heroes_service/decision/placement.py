"""Placement: for every candidate cluster, predicted wait, run, energy and cost; then the policy's choice.

``decide`` is what ``POST /organization/decision/decide`` answers and what ``auto`` in the workflow submit uses
(``choose_cluster``). Per candidate:

* run time, time limit, memory, energy and confidence from ``estimates.estimate`` (the learnt models; until
  those exist, or when they fail, the template's own requests: ``fallback_estimate``);
* queue wait from Slurm's own plan (``wait.py``: ``sbatch --test-only``, cached);
* cost from the cluster's price model (``costs.py``), energy advice from ``frequency.py``;
* staging time (``staging_time.py``): the inputs' bytes over the cluster's measured S3 -> cluster throughput
  (nothing for inputs already there) and the expected outputs back; part of the finish time.

A candidate is *eligible* when the caller can use it and Slurm accepts the job's shape there; among the eligible
ones, those that meet the deadline and fit the budget are ranked by the policy's score (``policies.py``) and
the best is the choice. When none meets the constraints the choice is null and the reason says which
constraint no cluster can meet, with the closest candidate's figures.

Costs in different currencies are never compared (the service holds no exchange rates): the comparison uses
the request's currency, else the currency most candidates share, and a candidate priced in another currency
scores nothing on cost and is outside any budget.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from ..clusters import identity as cluster_identity
from ..clusters.errors import ClusterError, NoClusterAccess
from ..clusters.models import Cluster
from ..errors import Conflict
from ..workflows.templates import Template
from . import frequency
from .costs import Shape, job_cost
from .estimates import Estimate, estimate
from .policies import DEFAULT_POLICY, policy as policy_named, scores
from .staging_time import InputObject, expected_output_bytes, staging_estimate
from .wait import wait_cache

log = logging.getLogger("heroes_service.decision")

DEFAULT_MINIMUMS = {"time_minutes": 1, "memory_mb": 64, "cores": 1}


# --- the template's shape and floors -----------------------------------------------------------------------
def resolved_steps(template: Template, values: dict) -> list[tuple[str, dict]]:
    """(step name, resolved resources) in submission order."""
    return [(step.name, step.resources.resolved(values)) for step in template.ordered_steps()]


def step_minimums(step_resources) -> dict[str, int]:
    """A step's right-sizing floors (the template's ``min_*`` fields, else the contract's defaults)."""
    minimums = getattr(step_resources, "minimums", None)
    return dict(minimums()) if callable(minimums) else dict(DEFAULT_MINIMUMS)


def template_minimums(template: Template) -> dict[str, int]:
    """The whole job's floors: the largest floor of any step (a recommendation must suit every step)."""
    out = dict(DEFAULT_MINIMUMS)
    for step in template.steps:
        for key, value in step_minimums(step.resources).items():
            out[key] = max(out.get(key, 0), int(value))
    return out


def critical_path_s(template: Template, resources: dict[str, dict]) -> float:
    """The requested wall time of the whole workflow: the longest chain of step time limits."""
    finish: dict[str, float] = {}
    for step in template.ordered_steps():
        start = max((finish[d] for d in step.depends_on), default=0.0)
        finish[step.name] = start + resources[step.name]["time_minutes"] * 60.0
    return max(finish.values(), default=0.0)


def wait_shape(template: Template, values: dict, time_s: float | None = None) -> Shape:
    """What the first job of the workflow asks Slurm for: the job whose start is the workflow's wait."""
    name, first = resolved_steps(template, values)[0]
    return Shape(nodes=first["nodes"], tasks=first["tasks"], cpus_per_task=first["cpus_per_task"],
                 memory_mb=first["memory_mb"], gpus=first["gpus"],
                 time_s=time_s if time_s is not None else first["time_minutes"] * 60.0,
                 partition=first["partition"] or "")


def bill_shape(template: Template, values: dict) -> Shape:
    """The largest step's resources: what the job holds at its peak (and is billed for)."""
    steps = [r for _, r in resolved_steps(template, values)]
    widest = max(steps, key=lambda r: (r["tasks"] * r["cpus_per_task"], r["nodes"]))
    return Shape(nodes=max(r["nodes"] for r in steps), tasks=widest["tasks"], cpus_per_task=widest["cpus_per_task"],
                 memory_mb=max(r["memory_mb"] for r in steps), gpus=max(r["gpus"] for r in steps),
                 time_s=sum(r["time_minutes"] * 60.0 for r in steps), partition="")


# --- estimates -------------------------------------------------------------------------------------------
def fallback_estimate(template: Template, values: dict, cluster: Cluster) -> Estimate:
    """Template defaults: the requested time (faster clusters finish sooner by their relative speed), the
    requested memory, and the energy of the cluster's power profile over that time (at the facility meter:
    times the PUE, as the estimates module counts it)."""
    resources = dict(resolved_steps(template, values))
    requested_s = critical_path_s(template, resources)
    shape = bill_shape(template, values)
    speed = max(float(cluster.relative_speed or 1.0), 0.01)
    run_s = requested_s / speed
    profile = cluster.energy_profile or {}
    watts = shape.nodes * float(profile.get("idle_watts_per_node") or 0.0) \
        + shape.cores * float(profile.get("watts_per_core") or 0.0) \
        + shape.gpus * float(profile.get("watts_per_gpu") or 0.0)
    requested = {"time_limit_s": requested_s, "memory_mb": shape.memory_mb, "cores": shape.cpus_per_task,
                 "nodes": shape.nodes}
    return Estimate(run_s=run_s, run_limit_s=requested_s, memory_mb=float(shape.memory_mb),
                    cores=shape.cpus_per_task, nodes=shape.nodes,
                    energy_j=watts * run_s * float(profile.get("pue") or 1.0),
                    energy_estimated=True, confidence=0.2, basis="template-defaults", history_jobs=0,
                    requested=requested, memory_bound=None, cpi=None, mem_gbs=None,
                    note="the estimates failed: the template's requests are used")


def estimate_for(session: Session, principal, template: Template, values: dict, cluster: Cluster):
    """The learnt estimate (``estimates.estimate``), or the template's requests when it fails."""
    try:
        return estimate(session, principal, template, values, cluster)
    except Exception:  # noqa: BLE001 - a model failure must not take placement down: say so, use the requests
        log.exception("estimate for %s on %s failed; using the template's requests", template.name, cluster.name)
        return fallback_estimate(template, values, cluster)


# --- decide ----------------------------------------------------------------------------------------------
@dataclass
class Constraints:
    policy: str = DEFAULT_POLICY
    deadline_s: float | None = None
    budget: float | None = None
    currency: str | None = None


@dataclass
class Candidate:
    cluster: Cluster
    row: dict[str, Any]
    estimate: Any = None
    shape: Shape | None = None
    feasible: bool = False
    extra: dict = field(default_factory=dict)


def _connector(cluster: Cluster, principal):
    """(connector, None) or (None, why the caller cannot use this cluster)."""
    try:
        return cluster_identity.connector_for(cluster, principal), ""
    except NoClusterAccess as exc:
        return None, f"no access: {exc}"
    except ClusterError as exc:
        return None, f"unreachable: {exc}"


def decide(session: Session, principal, template: Template, values: dict, clusters: list[Cluster],
           constraints: Constraints | None = None, inputs: list[InputObject] | None = None) -> dict:
    """Every candidate with its predictions, the choice under the policy and constraints, and why.

    ``inputs``: the job's input objects (sized by the caller, who checked the user may read them)."""
    constraints = constraints or Constraints()
    chosen_policy = policy_named(constraints.policy)
    shape = bill_shape(template, values)
    candidates: list[Candidate] = []
    requests = []
    for cluster in clusters:
        est = estimate_for(session, principal, template, values, cluster)
        conn, why = _connector(cluster, principal)
        candidates.append(Candidate(cluster=cluster, row={}, estimate=est, shape=shape, extra={"access": why}))
        requests.append((cluster.id, conn, wait_shape(template, values)))
    answers = wait_cache().waits(requests)
    moves_data = bool(inputs) or bool(template.outputs)
    out_bytes = expected_output_bytes(session, principal.organization, template.name) if moves_data else 0.0
    for cand, answer in zip(candidates, answers):
        cand.row = _candidate_row(cand, answer, shape)
        if moves_data:
            _add_staging(cand.row, staging_estimate(session, principal.organization, cand.cluster.id,
                                                    list(inputs or []), out_bytes))
    currency = _reference_currency(candidates, constraints.currency)
    _apply_constraints(candidates, constraints, currency)
    _score(candidates, chosen_policy.weights, currency)
    candidates.sort(key=_rank)
    choice = next((c for c in candidates if c.feasible), None)
    reason = _reason(chosen_policy.name, candidates, choice, constraints, currency)
    basis_of = choice or next((c for c in candidates if c.row["eligible"]), None) or \
        (candidates[0] if candidates else None)
    return {
        "policy": chosen_policy.name,
        "weights": dict(chosen_policy.weights),
        "candidates": [c.row for c in candidates],
        "choice": choice.cluster.name if choice else None,
        "reason": reason,
        "rightsizing": rightsizing(template, basis_of.estimate) if basis_of else None,
        "history": _history(basis_of.estimate) if basis_of else
        {"jobs": 0, "basis": "template-defaults", "note": "no candidate cluster"},
        "currency": currency,
    }


def _candidate_row(cand: Candidate, answer, shape: Shape) -> dict:
    est, cluster = cand.estimate, cand.cluster
    reason = cand.extra["access"] or answer.error
    wait_s = answer.wait_s() if not cand.extra["access"] else None
    run_s = float(est.run_s)
    energy_kwh = float(est.energy_j) / 3.6e6
    cost = job_cost(cluster.price_model, cluster.energy_profile, shape, run_s, energy_kwh)
    cores_per_node = math.ceil(shape.cores / max(shape.nodes, 1))
    advice = frequency.advise(getattr(est, "memory_bound", None), getattr(est, "cpi", None), cluster.energy_profile,
                              cores_per_node)
    eligible = not reason and wait_s is not None
    return {
        "cluster": cluster.name,
        "eligible": eligible,
        "reason": reason,
        "wait_s": round(wait_s, 1) if wait_s is not None else None,
        "run_s": round(run_s, 1),
        "finish_s": round(wait_s + run_s, 1) if wait_s is not None else None,
        "run_limit_s": round(float(est.run_limit_s), 1),
        "energy_kwh": round(energy_kwh, 6),
        "energy_estimated": bool(est.energy_estimated),
        "cost": cost.amount,
        "currency": cost.currency,
        "cost_kind": cost.kind,
        "cost_note": cost.note,
        "confidence": round(float(est.confidence), 3),
        "meets_deadline": True,
        "within_budget": True,
        "score": 0.0,
        "cpu_freq": advice.as_dict() if advice else None,
        "slurm_nodes": answer.nodes if eligible else "",
    }


def _add_staging(row: dict, staging) -> None:
    """Staging time is part of the finish: the data must reach the cluster before the job can start and
    come back before the user has its results."""
    row.update(staging.as_row())
    if row["finish_s"] is not None:
        row["finish_s"] = round(row["finish_s"] + staging.seconds, 1)


def _reference_currency(candidates: list[Candidate], requested: str | None) -> str:
    if requested:
        return requested
    counts = Counter(c.row["currency"] for c in candidates if c.row["eligible"] and c.row["cost"] is not None)
    if not counts:
        counts = Counter(c.row["currency"] for c in candidates)
    if not counts:
        return "EUR"
    top = max(counts.values())
    return sorted(cur for cur, n in counts.items() if n == top)[0]


def _apply_constraints(candidates: list[Candidate], constraints: Constraints, currency: str) -> None:
    for cand in candidates:
        row = cand.row
        if constraints.deadline_s is not None:
            row["meets_deadline"] = row["finish_s"] is not None and row["finish_s"] <= constraints.deadline_s
        if constraints.budget is not None:
            comparable = row["cost"] is not None and row["currency"] == currency
            row["within_budget"] = comparable and row["cost"] <= constraints.budget
            if row["cost"] is not None and row["currency"] != currency:
                row["cost_note"] = (row["cost_note"] + "; " if row["cost_note"] else "") + \
                    f"priced in {row['currency']}, budget in {currency} (no exchange rates)"
        cand.feasible = row["eligible"] and row["meets_deadline"] and row["within_budget"]


def _score(candidates: list[Candidate], weights: dict[str, float], currency: str) -> None:
    racing = [c for c in candidates if c.row["eligible"]]
    values = [{"time": c.row["finish_s"], "energy": c.row["energy_kwh"],
               "cost": c.row["cost"] if c.row["currency"] == currency else None} for c in racing]
    for cand, value in zip(racing, scores(values, weights)):
        cand.row["score"] = value


def _rank(cand: Candidate) -> tuple:
    row = cand.row
    group = 0 if cand.feasible else (1 if row["eligible"] else 2)
    finish = row["finish_s"] if row["finish_s"] is not None else math.inf
    return (group, -row["score"], finish, row["cluster"])


def _money(amount: float | None, currency: str) -> str:
    return "unknown cost" if amount is None else f"{amount:.4g} {currency}"


def _parts(row: dict) -> str:
    """wait + run (+ staging) of a candidate's finish, in words."""
    staging = f" + staging {row['staging_s']:.0f} s" if row.get("staging_s") else ""
    return f"wait {row['wait_s']:.0f} s + run {row['run_s']:.0f} s{staging}"


def _describe(row: dict) -> str:
    return (f"{row['cluster']}: finish {row['finish_s']:.0f} s ({_parts(row)}), "
            f"{row['energy_kwh']:.3g} kWh, {_money(row['cost'], row['currency'])}")


def _reason(policy: str, candidates: list[Candidate], choice: Candidate | None, constraints: Constraints,
            currency: str) -> str:
    eligible = [c for c in candidates if c.row["eligible"]]
    if not candidates:
        return "no candidate cluster: your organization has none (or none of the ones named)"
    if not eligible:
        return "no eligible cluster: " + "; ".join(f"{c.row['cluster']}: {c.row['reason']}" for c in candidates)
    if choice is None:
        parts = []
        if constraints.deadline_s is not None and not any(c.row["meets_deadline"] for c in eligible):
            first = min(eligible, key=lambda c: c.row["finish_s"])
            parts.append(f"no cluster can meet the deadline of {constraints.deadline_s:.0f} s: the earliest finish "
                         f"is {first.row['cluster']} at {first.row['finish_s']:.0f} s")
        if constraints.budget is not None and not any(c.row["within_budget"] for c in eligible):
            priced = [c for c in eligible if c.row["cost"] is not None and c.row["currency"] == currency]
            cheapest = min(priced, key=lambda c: c.row["cost"]) if priced else None
            parts.append(f"no cluster fits the budget of {constraints.budget:g} {currency}"
                         + (f": the cheapest is {cheapest.row['cluster']} at {_money(cheapest.row['cost'], currency)}"
                            if cheapest else ""))
        if not parts:
            parts.append(f"no cluster meets both the deadline of {constraints.deadline_s:.0f} s and the budget of "
                         f"{constraints.budget:g} {currency} at once")
        return "; ".join(parts)
    row = choice.row
    others = [c.row for c in eligible if c is not choice]
    if policy == "performance":
        head = f"earliest finish ({row['finish_s']:.0f} s = {_parts(row)}) on {row['cluster']}"
        tail = [f"{o['cluster']} {o['finish_s']:.0f} s" for o in others]
    elif policy == "energy":
        head = f"least energy ({row['energy_kwh']:.3g} kWh) on {row['cluster']}"
        tail = [f"{o['cluster']} {o['energy_kwh']:.3g} kWh" for o in others]
    elif policy == "cost":
        head = f"cheapest ({_money(row['cost'], row['currency'])}) on {row['cluster']}"
        tail = [f"{o['cluster']} {_money(o['cost'], o['currency'])}" for o in others]
    else:
        head = f"best balance of finish time, energy and cost on {_describe(row)} (score {row['score']:.2f})"
        tail = [f"{o['cluster']} score {o['score']:.2f}" for o in others]
    text = head + (f"; others: {', '.join(tail)}" if tail else "")
    constraints_met = []
    if constraints.deadline_s is not None:
        constraints_met.append(f"meets the deadline of {constraints.deadline_s:.0f} s")
    if constraints.budget is not None:
        constraints_met.append(f"within the budget of {constraints.budget:g} {currency}")
    return text + (f"; {' and '.join(constraints_met)}" if constraints_met else "")


# --- right-sizing ----------------------------------------------------------------------------------------
def rightsizing(template: Template, est) -> dict:
    """The recommended requests of the whole job, never below the template's floors nor above its requests."""
    floors = template_minimums(template)
    requested = dict(est.requested)
    time_limit = max(float(est.run_limit_s), floors["time_minutes"] * 60.0)
    memory = max(float(est.memory_mb), float(floors["memory_mb"]))
    cores = max(int(est.cores), int(floors["cores"]))
    if requested.get("time_limit_s"):
        time_limit = min(time_limit, max(float(requested["time_limit_s"]), floors["time_minutes"] * 60.0))
    if requested.get("memory_mb"):
        memory = min(memory, max(float(requested["memory_mb"]), float(floors["memory_mb"])))
    if est.basis == "history":
        note = (f"from {est.history_jobs} finished run(s) of this template: time limit at a calibrated upper "
                f"quantile of the run time, memory at the upper quantile of the peak")
    else:
        note = "no history: template defaults (the template's own requests)"
    steps = [{"step": str(s["step"]), "time_limit_s": int(math.ceil(float(s["run_limit_s"]))),
              "memory_mb": int(math.ceil(float(s["memory_mb"])))}
             for s in getattr(est, "steps", None) or [] if "step" in s and "run_limit_s" in s and "memory_mb" in s]
    return {"time_limit_s": int(math.ceil(time_limit)), "memory_mb": int(math.ceil(memory)), "cores": cores,
            "nodes": int(est.nodes), "requested": requested, "basis": est.basis,
            "history_jobs": int(est.history_jobs), "note": note, "minimums": floors, "steps": steps,
            "warnings": list(getattr(est, "warnings", None) or [])}


def _history(est) -> dict:
    if est.basis == "history":
        return {"jobs": int(est.history_jobs), "basis": "history",
                "note": f"learnt from {est.history_jobs} finished run(s)"}
    return {"jobs": int(est.history_jobs), "basis": "template-defaults", "note": "no history: template defaults"}


def rightsized_steps(template: Template, values: dict, recommendation: dict) -> dict[str, dict[str, int]]:
    """Per step: the sbatch ``--time`` (minutes) and ``--mem`` (MiB) that apply ``recommendation``.

    Each step gets its own recommendation when the estimate gave one per step; otherwise the workflow's time
    limit is shared among its steps in proportion to their requests and memory is the job's recommendation.
    Never below a step's floors, never above its request (right-sizing only shrinks).
    """
    resources = dict(resolved_steps(template, values))
    per_step = {s["step"]: s for s in recommendation.get("steps") or []}
    requested_s = critical_path_s(template, resources) or 1.0
    factor = min(1.0, recommendation["time_limit_s"] / requested_s)
    out = {}
    for step in template.steps:
        res, floors = resources[step.name], step_minimums(step.resources)
        own = per_step.get(step.name)
        minutes = math.ceil(own["time_limit_s"] / 60.0) if own else math.ceil(res["time_minutes"] * factor)
        memory = int(own["memory_mb"]) if own else int(recommendation["memory_mb"])
        minutes = max(int(floors["time_minutes"]), min(minutes, res["time_minutes"]))
        memory = max(int(floors["memory_mb"]), min(memory, res["memory_mb"]))
        out[step.name] = {"time_minutes": minutes, "memory_mb": memory}
    return out


# --- submit's "auto" -------------------------------------------------------------------------------------
def place(session: Session, principal, template: Template, values: dict, candidates: list[Cluster],
          policy: str = DEFAULT_POLICY) -> tuple[Cluster, dict]:
    """(chosen cluster, the decision) under ``policy``; 409 with the reason when no cluster qualifies."""
    decision = decide(session, principal, template, values, candidates, Constraints(policy=policy))
    if decision["choice"] is None:
        raise Conflict(f"no cluster to run on: {decision['reason']}", rule="placement")
    chosen = next(c for c in candidates if c.name == decision["choice"])
    return chosen, decision


def choose_cluster(session: Session, principal, template: Template, values: dict,
                   candidates: list[Cluster]) -> Cluster:
    """The cluster ``auto`` resolves to: the decide logic with the user's default policy (balanced)."""
    return place(session, principal, template, values, candidates)[0]
