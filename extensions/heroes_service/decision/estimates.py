"""What a template run will take on one cluster: run time, right-sized requests, energy, and how sure we are.

:func:`estimate` is the contract the placement engine calls once per candidate cluster. Per step of the
template it takes the best knowledge available (see :mod:`.service_models`):

* the template step's own finished runs (``basis="history"``, confidence growing with their number);
* else the organization's whole history (imports and other templates) through the shared run-time predictor
  (``basis="history"``, lower confidence);
* else the template's own requests (``basis="template-defaults"``, confidence 0.2).

The job's run time is the longest chain of dependent steps; the recommended limit, memory and cores never go
below the template's minimums (``Resources.min_*``) nor above what the template asks. Memory comes from the
step's measured peaks (MaxRSS of its jobs: recorded when its instances end, or from imported ``sacct``
dumps) or the organization's peak-memory model, else the
request. Energy comes from the step's measured energy records on that cluster, else from the organization's
learnt power model for that cluster (both ``energy_estimated=False``), else from the cluster's power profile
(``idle_watts_per_node + watts_per_core x cores + watts_per_gpu x gpus``, ``energy_estimated=True``); either
way it is multiplied by the site's PUE so clusters compare on the same footing.

A step whose recent runs hit a limit (TIMEOUT, OUT_OF_MEMORY) is never cut on that resource: its recommendation
keeps the request, and a warning tells the user that the request itself is too tight (raising a limit is the
user's call: the gateway never asks for more than the template does).

Multi-step templates: ``run_s`` and ``run_limit_s`` follow the critical path; ``memory_mb``, ``cores`` and
``nodes`` are the largest step's; ``steps`` holds every step's own figures.

Fast: a dictionary lookup for the organization's models, a feature row and one flat tree walk; answers are
also memoised for a minute per (models version, template, parameters, cluster, user).
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np

from ..workflows.templates import Step, Template
from .encoding import StepRuns, user_features
from .features import JobView
from .fitting import MEMORY_QUANTILE, OrgModels, conformal_margin
from .service_models import REGISTRY

NO_HISTORY_CONFIDENCE = 0.2
ORG_HISTORY_MIN = 20          # jobs of the organization before its history predicts a never-run template
SMALL_SAMPLE_MARGIN = math.log(1.25)   # limit headroom over the longest run while a step has few runs
MEMORY_HEADROOM = 1.1
STEP_MEMORY_MIN = 3           # measured peaks of a step before they right-size its memory
#: EAR's memory-bound classification (classification_limits.h): CPI >= 0.8 and >= 100 GB/s per node
CPI_MEM_BOUND, GBS_MEM_BOUND = 0.8, 100.0
#: a cluster enrolled without a power profile: a plain node's figures, marked estimated like any profile
DEFAULT_IDLE_W, DEFAULT_W_PER_CORE = 100.0, 10.0
CACHE_TTL_S, CACHE_SIZE = 60.0, 4096
LIMIT_HIT_WINDOW = 10         # a step's most recent runs that tell whether its requests are too tight


@dataclass
class Estimate:
    run_s: float
    run_limit_s: float
    memory_mb: float
    cores: int
    nodes: int
    energy_j: float
    energy_estimated: bool
    confidence: float
    basis: str
    history_jobs: int
    requested: dict
    memory_bound: bool | None
    cpi: float | None
    mem_gbs: float | None
    # added (the contract allows additions): per-step detail and a sentence for the user
    steps: list[dict] = field(default_factory=list)
    note: str = ""
    warnings: list[str] = field(default_factory=list)   # "step run: 3 of its last 5 runs hit the time limit..."


@dataclass
class _StepResult:
    name: str
    run_s: float
    limit_s: float
    memory_mb: float
    cores: int
    nodes: int
    energy_j: float
    energy_estimated: bool
    confidence: float
    basis: str
    history_jobs: int
    requested: dict
    cpi: float | None = None
    mem_gbs: float | None = None
    warnings: list[str] = field(default_factory=list)


_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


def estimate(session, principal, template: Template, values: dict, cluster) -> Estimate:
    """The estimate of running ``template`` with ``values`` (resolved parameters) on ``cluster`` for ``principal``."""
    models = REGISTRY.get(session, principal.organization) if principal.organization else None
    key = _cache_key(models, principal, template, values, cluster)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return _copy(hit[1])
    result = _estimate(models, principal.username, template, values, cluster)
    with _cache_lock:
        _cache[key] = (now, result)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return _copy(result)


def _copy(est: Estimate) -> Estimate:
    """A caller's own copy of a cached estimate (callers may edit what they get)."""
    return replace(est, steps=[dict(s) for s in est.steps], requested=dict(est.requested),
                   warnings=list(est.warnings))


def _cache_key(models: OrgModels | None, principal, template: Template, values: dict, cluster) -> tuple:
    try:
        vals = json.dumps(values, sort_keys=True, default=str)
    except (TypeError, ValueError):
        vals = repr(sorted(values.items()))
    return (id(models), models.built_at if models is not None else None, principal.organization, principal.username, template.name, template.version,
            json.dumps(template.model_dump(mode="json")["steps"], sort_keys=True) if template.version is None else "",
            vals, getattr(cluster, "id", None), cluster.name, float(cluster.relative_speed or 1.0),
            json.dumps(cluster.energy_profile or {}, sort_keys=True))


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _estimate(models: OrgModels | None, username: str, template: Template, values: dict, cluster) -> Estimate:
    steps = template.ordered_steps()
    results = {s.name: _step_estimate(models, username, template, s, values, cluster) for s in steps}
    run_end: dict[str, float] = {}
    limit_end: dict[str, float] = {}
    req_end: dict[str, float] = {}
    for s in steps:
        r = results[s.name]
        run_end[s.name] = max((run_end[d] for d in s.depends_on), default=0.0) + r.run_s
        limit_end[s.name] = max((limit_end[d] for d in s.depends_on), default=0.0) + r.limit_s
        req_end[s.name] = max((req_end[d] for d in s.depends_on), default=0.0) + r.requested["time_limit_s"]
    rs = list(results.values())
    learnt = [r for r in rs if r.basis == "history"]
    basis = "history" if learnt else "template-defaults"
    cpis = [r.cpi for r in rs if r.cpi is not None]
    gbs = [r.mem_gbs for r in rs if r.mem_gbs is not None]
    cpi = float(np.mean(cpis)) if cpis else None
    mem_gbs = float(np.mean(gbs)) if gbs else None
    memory_bound = None if cpi is None or mem_gbs is None else bool(cpi >= CPI_MEM_BOUND and mem_gbs >= GBS_MEM_BOUND)
    total_run = max(run_end.values())
    weights = np.array([max(r.run_s, 1.0) for r in rs])
    confidence = float(np.average([r.confidence for r in rs], weights=weights))
    history_jobs = max((r.history_jobs for r in rs), default=0)
    note = ("no history: template defaults" if not learnt else
            f"learnt from {history_jobs} finished run(s)" + (
                "" if len(learnt) == len(rs) else f"; {len(rs) - len(learnt)} step(s) on template defaults"))
    return Estimate(
        run_s=total_run, run_limit_s=max(limit_end.values()), memory_mb=max(r.memory_mb for r in rs),
        cores=max(r.cores for r in rs), nodes=max(r.nodes for r in rs), energy_j=sum(r.energy_j for r in rs),
        energy_estimated=any(r.energy_estimated for r in rs), confidence=round(confidence, 3), basis=basis,
        history_jobs=history_jobs,
        requested={"time_limit_s": max(req_end.values()), "memory_mb": max(r.requested["memory_mb"] for r in rs),
                   "cores": max(r.requested["cores"] for r in rs), "nodes": max(r.requested["nodes"] for r in rs)},
        memory_bound=memory_bound, cpi=cpi, mem_gbs=mem_gbs, note=note,
        warnings=[f"step {r.name}: {w}" for r in rs for w in r.warnings],
        steps=[{"step": r.name, "run_s": r.run_s, "run_limit_s": r.limit_s, "memory_mb": r.memory_mb,
                "cores": r.cores, "nodes": r.nodes, "energy_j": r.energy_j, "energy_estimated": r.energy_estimated,
                "confidence": r.confidence, "basis": r.basis, "history_jobs": r.history_jobs,
                "requested": r.requested, "warnings": list(r.warnings)} for r in rs])


def floors(step: Step, requested: dict) -> dict:
    """Right-sizing floors: the template's explicit minimums; the contract's defaults capped at the request."""
    res = step.resources
    mins = res.minimums()
    return {
        "time_limit_s": mins["time_minutes"] * 60.0 if res.min_time_minutes is not None else
        min(mins["time_minutes"] * 60.0, requested["time_limit_s"]),
        "memory_mb": float(mins["memory_mb"]) if res.min_memory_mb is not None else
        min(float(mins["memory_mb"]), requested["memory_mb"]),
        "cores": mins["cores"] if res.min_cores is not None else min(mins["cores"], requested["cores"]),
    }


def _step_estimate(models: OrgModels | None, username: str, template: Template, step: Step, values: dict,
                   cluster) -> _StepResult:
    res = step.resources.resolved(values)
    requested = {"time_limit_s": res["time_minutes"] * 60.0, "memory_mb": float(res["memory_mb"]),
                 "cores": int(res["cpus_per_task"]), "nodes": int(res["nodes"])}
    low = floors(step, requested)
    tasks, nodes, gpus = int(res["tasks"]), int(res["nodes"]), int(res["gpus"])
    cpus = tasks * requested["cores"]
    name = f"{template.name}/{step.name}"
    runs = models.steps.get(name) if models is not None else None
    learnt = None
    if runs is not None and runs.n:
        learnt = _from_step_runs(models, runs, username, values, cluster, cpus, nodes, requested["time_limit_s"])
    elif models is not None and len(models.frame) >= ORG_HISTORY_MIN:
        learnt = _from_org_history(models, username, name, cluster, requested, cpus)
    if learnt is None:
        # no run to learn from: the request, shortened on a cluster faster than the reference (relative
        # speed > 1) so that the performance policy still prefers it; never longer than the request
        speed = max(float(cluster.relative_speed or 1.0), 1.0)
        run_s, limit_s, confidence, basis, n = requested["time_limit_s"] / speed, requested["time_limit_s"], \
            NO_HISTORY_CONFIDENCE, "template-defaults", 0
        power, cpi, gbs = None, None, None
    else:
        run_s, limit_s, confidence, n, power, cpi, gbs = learnt
        basis = "history"
    recent, timeouts, out_of_memory = limits_hit(runs, requested["time_limit_s"])
    warnings = []
    if timeouts:   # the runs that hit the limit say nothing of how long the work needs: keep the request
        limit_s = requested["time_limit_s"]
        warnings.append(f"{timeouts} of its last {recent} runs hit the time limit (TIMEOUT): the limit stays at "
                        f"the request; ask for more time if the work has not changed")
    limit_s = _round_up(max(min(limit_s, requested["time_limit_s"]), low["time_limit_s"]), 60.0)
    run_s = min(run_s, limit_s) if basis == "history" else run_s
    memory = requested["memory_mb"]
    step_upper = _step_memory_upper(runs) if runs is not None else math.nan
    if step_upper == step_upper:
        memory = min(memory, step_upper * MEMORY_HEADROOM)
    elif models is not None and models.memory is not None:
        upper = models.memory_upper(requested["memory_mb"], cpus, nodes, requested["time_limit_s"], cluster.name,
                                    name, username)
        if upper == upper:
            memory = min(memory, upper * MEMORY_HEADROOM)
    if out_of_memory:   # a peak sampled every few seconds misses the spike that killed the job
        memory = requested["memory_mb"]
        warnings.append(f"{out_of_memory} of its last {recent} runs ran out of memory (OUT_OF_MEMORY): memory "
                        f"stays at the request; ask for more")
    memory = float(math.ceil(max(memory, low["memory_mb"])))
    cores = max(requested["cores"], low["cores"])
    if power is None and models is not None:
        power = models.learnt_power(cluster.name, name, username, cpus, nodes)
    energy_estimated = power is None
    if power is None:
        power = _profile_power_per_node(cluster, cpus / max(nodes, 1), gpus / max(nodes, 1))
    pue = _pue(cluster)
    return _StepResult(step.name, float(run_s), float(limit_s), memory, int(cores), nodes,
                       float(power * nodes * run_s * pue), energy_estimated, round(float(confidence), 3), basis, n,
                       requested, cpi, gbs, warnings)


def limits_hit(runs: StepRuns | None, time_limit_s: float) -> tuple[int, int, int]:
    """(runs looked at, how many ended TIMEOUT, how many OUT_OF_MEMORY) among the step's most recent runs on
    any cluster (runs are in finish order). A timeout under a shorter limit than ``time_limit_s`` (the template
    asks for more since) does not count: it says nothing of the request as it is now."""
    if runs is None or not runs.state:
        return 0, 0, 0
    states = runs.state[-LIMIT_HIT_WINDOW:]
    limits = runs.req_time[-LIMIT_HIT_WINDOW:]
    timeouts = sum(1 for state, limit in zip(states, limits)
                   if state == "TIMEOUT" and not limit < time_limit_s - 1.0)   # NaN (unknown) counts
    return len(states), timeouts, states.count("OUT_OF_MEMORY")


def _step_memory_upper(runs: StepRuns) -> float:
    """Upper quantile of the step's measured peak memory per node (any cluster: memory hardly depends on
    it); NaN with fewer than STEP_MEMORY_MIN measurements."""
    used = runs.used_mem[~np.isnan(runs.used_mem)] if runs.used_mem is not None else np.zeros(0)
    if len(used) < STEP_MEMORY_MIN:
        return math.nan
    if len(used) < 20:
        return float(used.max())
    return conformal_margin(used, 1 - MEMORY_QUANTILE)


def _round_up(x: float, unit: float) -> float:
    return math.ceil(x / unit - 1e-9) * unit


def _from_step_runs(models: OrgModels, runs: StepRuns, username: str, values: dict, cluster, cpus: float,
                    nodes: float, req_time: float):
    """(run, limit, confidence, n, power per node or None, cpi, GB/s) from the step's own runs."""
    here = runs.on(cluster.name)
    speed = float(cluster.relative_speed or 1.0)
    if here.any():
        log_run = runs.log_run[here]
    else:  # only other clusters: scale each run by the speed ratio (unknown clusters count as speed 1)
        log_run = runs.log_run + runs.log_speed(models.speeds) - math.log(speed)
    n_here = int(here.sum())
    if runs.model is not None and n_here:
        last, med = user_features(runs, username)
        row = runs.model.row(values, cluster.name, cpus, nodes, req_time, last, med)
        point = float(runs.model.forest.predict_row(row)[0])
        upper = point + runs.model.margin
    else:
        point = float(np.median(log_run))
        if len(log_run) >= 20:
            upper = point + conformal_margin(log_run - point, 0.05)
        else:
            upper = float(np.max(log_run)) + SMALL_SAMPLE_MARGIN
    basis_n = n_here if n_here else len(log_run)
    confidence = 0.4 + 0.55 * (1 - math.exp(-basis_n / 8.0))
    if not n_here:
        confidence -= 0.15
    sel = here if here.any() else np.ones(runs.n, dtype=bool)
    power = _nanmedian(runs.power_per_node[here]) if here.any() else None
    cpi = _nanmedian(runs.cpi[sel])
    gbs = _nanmedian(runs.mem_gbs_per_node[sel])
    return math.exp(point), math.exp(upper), confidence, runs.n, power, cpi, gbs


def _nanmedian(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(np.median(x)) if len(x) else None


def _from_org_history(models: OrgModels, username: str, name: str, cluster, requested: dict, cpus: float):
    """The organization-wide predictor for a step this template never ran (no energy or CPI knowledge)."""
    job = JobView(submit=time.time(), req_time=requested["time_limit_s"], req_procs=float(cpus),
                  req_mem=requested["memory_mb"], user=models.users.get(username),
                  executable=models.templates.get(name), queue=models.clusters.get(cluster.name))
    point_log, scale = models.runtime_point(job)
    if point_log != point_log:
        return None
    clipped, _free = models.calibrator.limit(point_log, scale, math.log(requested["time_limit_s"]))
    u = models.state.users.get(job.user) if job.user == job.user else None
    own = u.n if u is not None else 0
    confidence = 0.25 + 0.25 * (1 - math.exp(-own / 20.0)) + (0.05 if models.fitted else 0.0)
    limit = clipped if clipped == clipped else requested["time_limit_s"]
    return math.exp(point_log), limit, confidence, len(models.frame), None, None, None


def _profile(cluster) -> dict:
    return dict(cluster.energy_profile or {})


def _pue(cluster) -> float:
    pue = _profile(cluster).get("pue") or 1.0
    return float(pue) if pue >= 1.0 else 1.0


def _profile_power_per_node(cluster, cores_per_node: float, gpus_per_node: float) -> float:
    """IT power of one node from the cluster's energy profile (W); a default node when it has none."""
    p = _profile(cluster)
    idle = float(p.get("idle_watts_per_node") or 0.0)
    per_core = float(p.get("watts_per_core") or 0.0)
    per_gpu = float(p.get("watts_per_gpu") or 0.0)
    if idle == 0 and per_core == 0 and per_gpu == 0:
        idle, per_core = DEFAULT_IDLE_W, DEFAULT_W_PER_CORE
    return idle + per_core * cores_per_node + per_gpu * gpus_per_node


__all__ = ["Estimate", "estimate", "floors", "clear_cache"]
