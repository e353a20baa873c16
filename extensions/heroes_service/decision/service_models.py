"""Per-organization models behind :func:`.estimates.estimate`, kept in memory and refit in the background.

Three levels of knowledge, best first:

1. **The template's own runs** (``template/step`` rows of the history): the run-time distribution per cluster
   (other clusters' runs scaled by relative speed when this one has none), and from 30 runs on a
   scikit-learn model of log run time on the template's numeric parameters, requested resources and cluster,
   with a split-conformal upper quantile for the time limit. Energy per node-second and CPI / GB/s come
   from the runs' energy records.
2. **The organization's whole history** (imported traces and every step): the shared
   :class:`~.predictor.RuntimePredictor` on :class:`~.features.HistoryState` features (user habits, same
   request shape, queue/cluster medians), its limit from :class:`~.predictor.LimitCalibrator` calibrated on a
   chronological hold-out; a quantile gradient-boosting model of peak memory per node.
3. Nothing: the template's requests (the caller reports ``template-defaults``).

Storage: models live in memory only (nothing is written, so nothing is ever unpickled) and are rebuilt after a
restart on first use. The first use builds the cheap part synchronously (history, features state, statistics,
no fitting); fitting always happens on a background thread and the fitted models replace the old ones
atomically. The history is checked at most every ``CHECK_EVERY_S`` seconds (and at once after an import): any
change rebuilds the history and feature state (cheap; the fitted parts are carried over, so a finished job
shows in its user's features at once), and a refit follows when the history grew by ``REFIT_GROWTH`` since the
last fit (or anything changed and the last fit is older than ``REFIT_EVERY_S``).

Speed: scikit-learn's per-call overhead (input validation, OpenMP thread pools) costs milliseconds for one row,
so predictions walk the fitted trees ourselves (:class:`FlatForest`: every tree of every model at once, one
vectorised step per depth level) — checked against scikit-learn's own predictions after each fit.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.orm import Session

from . import service_history as sh
from .features import HistoryState, JobView, sweep
from .history import Trace
from .model_store import PortableEnsemble
from .predictor import LimitCalibrator, RuntimePredictor, candidate_matrix, log_request

log = logging.getLogger("heroes_service.decision")

REFIT_GROWTH = 0.2
REFIT_EVERY_S = 600.0        # a fit older than this is redone as soon as anything changed
CHECK_EVERY_S = 30.0
TEMPLATE_MODEL_MIN = 30      # runs of one template step before it gets its own regression model
MEMORY_MODEL_MIN = 50        # jobs with a measured peak memory before the memory model is fitted
ENERGY_MODEL_MIN = 20        # jobs with measured energy before the power model is fitted
ENERGY_CLUSTER_MIN = 5       # measured jobs on a cluster before its learnt power replaces the profile
TARGET_KILL = 0.05           # the time limit's calibrated miss rate
MEMORY_QUANTILE = 0.95
USER_RECENT = 5              # a user's last runs of a step that describe their current habit
HOLDOUT = 0.2                # chronological share of the history that calibrates the run-time limit


# --- fast tree walks -----------------------------------------------------------------------------------
class FlatForest:
    """Several boosted-tree models evaluated together on one row (see module doc for why)."""

    def __init__(self, ensembles: list[PortableEnsemble]):
        parts, roots, starts, offset, trees = [], [], [], 0, 0
        for ens in ensembles:
            starts.append(trees)
            roots.append(ens.roots + offset)
            parts.append(ens)
            trees += len(ens.roots)
            offset += len(ens.feature)
        cat = (lambda name: np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0))
        self.feature, self.threshold = cat("feature"), cat("threshold")
        self.missing_left, self.is_leaf = cat("missing_left").astype(bool), cat("is_leaf").astype(bool)
        shift = np.concatenate([np.full(len(p.feature), sum(len(q.feature) for q in parts[:k]))
                                for k, p in enumerate(parts)]) if parts else np.zeros(0, dtype=np.int64)
        self.left = np.where(self.is_leaf, 0, cat("left") + shift).astype(np.int64) if parts else np.zeros(0, int)
        self.right = np.where(self.is_leaf, 0, cat("right") + shift).astype(np.int64) if parts else np.zeros(0, int)
        # from_sklearn already offsets children within one ensemble; shift moves them past earlier ensembles
        self.value = cat("value")
        self.roots = np.concatenate(roots).astype(np.int64) if roots else np.zeros(0, dtype=np.int64)
        self.starts = np.array(starts, dtype=np.int64)
        self.baselines = np.array([e.baseline for e in ensembles], dtype=np.float64)
        self.empty = np.array([len(e.roots) == 0 for e in ensembles], dtype=bool)

    @classmethod
    def from_models(cls, models: list) -> "FlatForest":
        return cls([m if isinstance(m, PortableEnsemble) else PortableEnsemble.from_sklearn(m) for m in models])

    def predict_row(self, x: np.ndarray) -> np.ndarray:
        """One output per model for the single feature row ``x``."""
        if not len(self.roots):
            return self.baselines.copy()
        idx = self.roots.copy()
        while True:
            inner = ~self.is_leaf[idx]
            if not inner.any():
                break
            v = x[self.feature[idx]]
            go_left = np.where(np.isnan(v), self.missing_left[idx], v <= self.threshold[idx])
            idx = np.where(inner, np.where(go_left, self.left[idx], self.right[idx]), idx)
        sums = np.add.reduceat(self.value[idx], self.starts) if len(self.starts) else np.zeros(0)
        sums = np.where(self.empty, 0.0, sums)
        return self.baselines + sums


def _fit_hgb(X: np.ndarray, y: np.ndarray, **params):
    """A histogram gradient-boosting fit on one thread (OpenMP workers thrash on a shared machine)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    defaults = dict(max_iter=80, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=5, early_stopping=False,
                    random_state=0)
    defaults.update(params)
    with threadpool_limits(limits=1, user_api="openmp"):
        return HistGradientBoostingRegressor(**defaults).fit(X, y)


def conformal_margin(residuals: np.ndarray, miss: float) -> float:
    """Smallest margin that at most ``miss`` of the (out-of-sample) residuals exceed, finite-sample corrected."""
    r = np.sort(residuals[np.isfinite(residuals)])
    n = len(r)
    if n == 0:
        return math.inf
    k = math.ceil((n + 1) * (1 - miss))
    return float(r[-1]) if k > n else float(r[k - 1])


# --- level 1: one template step ---------------------------------------------------------------------------
@dataclass
class StepRuns:
    """Finished runs of one ``template/step``: arrays aligned with ``cluster``."""

    cluster: list[str]
    log_run: np.ndarray
    nodes: np.ndarray
    cpus: np.ndarray
    power_per_node: np.ndarray   # measured energy / run / nodes (W), NaN without energy records
    cpi: np.ndarray
    mem_gbs_per_node: np.ndarray
    params: list[dict]
    req_time: np.ndarray
    used_mem: np.ndarray | None = None    # peak memory per node (MiB), NaN where accounting had no sample
    user_last: np.ndarray | None = None   # each run's user's previous run of this step (log s), NaN if none
    user_med: np.ndarray | None = None    # median of that user's last USER_RECENT runs before it
    recent: dict | None = None            # user -> their last USER_RECENT log runs (for a new estimate)
    state: list[str] | None = None        # each run's final Slurm state (TIMEOUT, OUT_OF_MEMORY, ...)
    model: "StepModel | None" = None

    @property
    def n(self) -> int:
        return len(self.cluster)

    def on(self, cluster: str) -> np.ndarray:
        """Boolean mask of the runs on ``cluster`` (memoised: estimates ask per call)."""
        masks = self.__dict__.setdefault("_masks", {})
        mask = masks.get(cluster)
        if mask is None:
            mask = masks[cluster] = np.array([c == cluster for c in self.cluster], dtype=bool)
        return mask

    def log_speed(self, speeds: dict[str, float]) -> np.ndarray:
        """log relative speed of each run's cluster (unknown clusters count as 1)."""
        cached = self.__dict__.get("_log_speed")
        if cached is None or cached[0] is not speeds:
            cached = self.__dict__["_log_speed"] = (speeds, np.array([math.log(speeds.get(c, 1.0) or 1.0)
                                                                      for c in self.cluster]))
        return cached[1]


@dataclass
class StepModel:
    """log run time of one template step from its numeric parameters, resources and cluster."""

    names: list[str]
    clusters: list[str]
    forest: FlatForest
    margin: float                 # conformal upper margin (log units)
    n: int

    def row(self, params: dict, cluster: str, cpus: float, nodes: float, req_time: float,
            user_last: float = math.nan, user_med: float = math.nan) -> np.ndarray:
        x = [_number(params.get(name)) for name in self.names]
        x += [float(self.clusters.index(cluster)) if cluster in self.clusters else math.nan,
              _log(cpus), _log(nodes), _log(req_time), user_last, user_med]
        return np.array(x, dtype=np.float64)


def _number(value) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return math.nan


def _log(x: float) -> float:
    return math.log(x) if x == x and x > 0 else math.nan


def _fit_step_model(runs: StepRuns) -> StepModel | None:
    names = sorted({k for p in runs.params for k, v in (p or {}).items() if not math.isnan(_number(v))})
    clusters = sorted(set(runs.cluster))
    shape = StepModel(names, clusters, FlatForest([]), 0.0, 0)
    rows = [shape.row(p or {}, c, cpu, nd, rq, ul, um) for p, c, cpu, nd, rq, ul, um in
            zip(runs.params, runs.cluster, runs.cpus, runs.nodes, runs.req_time, runs.user_last, runs.user_med)]
    X, y = np.array(rows), runs.log_run
    if X.shape[1] == 0 or len(y) < TEMPLATE_MODEL_MIN:
        return None
    # out-of-sample residuals for the margin: fit on all but each fold, in time order (5 folds)
    folds = np.array_split(np.arange(len(y)), 5)
    residuals = []
    for fold in folds[1:]:
        train = np.arange(fold[0])
        if len(train) < 10:
            continue
        model = _fit_hgb(X[train], y[train], max_iter=60)
        residuals.append(y[fold] - model.predict(X[fold]))
    final = _fit_hgb(X, y, max_iter=60)
    margin = conformal_margin(np.concatenate(residuals), TARGET_KILL) if residuals else math.inf
    forest = FlatForest.from_models([final])
    if not np.allclose(forest.predict_row(X[0])[0], final.predict(X[:1])[0], atol=1e-6):
        return None  # the flat walk disagrees with scikit-learn (format change): keep the statistics only
    return StepModel(names, clusters, forest, max(margin, 0.05), len(y))


# --- level 2: the organization's history -------------------------------------------------------------------
class Codes:
    """Stable small integers for strings (users, clusters, template steps) as the SWF-shaped features want."""

    def __init__(self):
        self.table: dict[str, float] = {}

    def __call__(self, name: str) -> float:
        if not name:
            return math.nan
        code = self.table.get(name)
        if code is None:
            code = self.table[name] = float(len(self.table) + 1)
        return code

    def get(self, name: str) -> float:
        return self.table.get(name, math.nan) if name else math.nan


_STATUS = {"COMPLETED": 1.0, "FAILED": 0.0, "CANCELLED": 5.0, "TIMEOUT": 0.0, "OUT_OF_MEMORY": 0.0}


def as_trace(frame: sh.HistoryFrame, users: Codes, clusters: Codes, templates: Codes) -> Trace:
    """The history in the SWF shape the shared features expect (codes for the strings; NaN = unknown)."""
    n = len(frame)
    nan = np.full(n, np.nan)
    submit, finish, run = frame["submit"], frame["finish"], frame["run"]
    cols = {
        "job_id": np.arange(1, n + 1, dtype=np.float64), "submit": submit,
        "wait": np.maximum(finish - run - submit, 0.0), "run": run, "alloc_procs": frame["cpus"],
        "avg_cpu": nan, "used_mem": frame["used_mem"], "req_procs": frame["cpus"], "req_time": frame["req_time"],
        "req_mem": frame["req_mem"], "status": np.array([_STATUS.get(s, np.nan) for s in frame.state]),
        "user": np.array([users(u) for u in frame.user]), "group": nan.copy(),
        "executable": np.array([templates(t) for t in frame.template]),
        "queue": np.array([clusters(c) for c in frame.cluster]), "partition": nan.copy(), "preceding": nan.copy(),
        "think_time": nan.copy(),
    }
    order = np.argsort(submit, kind="stable")
    return Trace({k: np.asarray(v, dtype=np.float64)[order] for k, v in cols.items()})


class FastRuntime:
    """:class:`RuntimePredictor`'s choice among candidates, with the candidate scores from a :class:`FlatForest`.

    Built only when the flat walk reproduces ``predictor.predict`` on sample rows; otherwise the predictor's
    own ``predict`` is used (slower, never wrong).
    """

    def __init__(self, predictor: RuntimePredictor):
        self.predictor = predictor
        trees = [(k, m) for k, m in enumerate(predictor.models) if not isinstance(m, float)]
        self.tree_index = [k for k, _ in trees]
        self.constants = np.array([m if isinstance(m, float) else 0.0 for m in predictor.models])
        self.forest = FlatForest.from_models([m for _, m in trees])
        # the outcome distribution (when fitted) is blended into the candidate scores: walk it flat too
        dist = predictor.distribution
        classes = [(b, m) for b, m in enumerate(dist.class_models) if not isinstance(m, float)] if dist else []
        self.class_index = [b for b, _ in classes]
        self.class_constants = (np.array([m if isinstance(m, float) else 0.0 for m in dist.class_models])
                                if dist else np.zeros(0))
        self.class_forest = FlatForest([m for _, m in classes]) if classes else None

    def predict(self, x: np.ndarray, req_time: float) -> tuple[float, float]:
        p = self.predictor
        X = x[None, :]
        req_log = log_request(np.array([req_time]))
        C = candidate_matrix(X, req_log)
        D = p.design(X, C, req_log)[0, p.columns]
        scores = self.constants.copy()
        scores[self.tree_index] = self.forest.predict_row(D)
        scores = scores[None, :]
        if p.distribution is not None:
            raw = self.class_constants.copy()
            if self.class_forest is not None:
                raw[self.class_index] = self.class_forest.predict_row(D)
            raw -= raw.max()
            e = np.exp(raw)
            scores = p._blend(scores, (e / e.sum())[None, :], C, req_log)
        k = int(np.argmax(scores[0]))
        from .predictor import candidate_spread

        return float(C[0, k]), float(candidate_spread(C, scores)[0])


@dataclass
class OrgModels:
    """Everything an estimate for one organization needs, immutable once built (swapped whole)."""

    counts: sh.HistoryCounts
    frame: sh.HistoryFrame
    state: HistoryState
    users: Codes
    clusters: Codes
    templates: Codes
    steps: dict[str, StepRuns]
    runtime: RuntimePredictor
    fast: FastRuntime | None
    calibrator: LimitCalibrator
    speeds: dict[str, float] = field(default_factory=dict)   # enrolled clusters' relative speed, by name
    memory: FlatForest | None = None
    memory_n: int = 0
    energy: FlatForest | None = None
    energy_n: int = 0
    measured_by_cluster: dict[str, int] = field(default_factory=dict)   # jobs with measured energy
    fit_counts: sh.HistoryCounts | None = None   # the history the fitted parts learnt from
    fitted_at: float = field(default_factory=time.monotonic)
    fitted: bool = False
    built_at: float = field(default_factory=time.monotonic)
    version: int = 0

    def runtime_point(self, job: JobView) -> tuple[float, float]:
        """(log run point, uncertainty scale) of the org-wide model for a job submitted now."""
        x = np.array(self.state.features(job), dtype=np.float64)
        if self.fast is not None:
            return self.fast.predict(x, job.req_time)
        pred = self.runtime.predict(x[None, :], np.array([job.req_time]))
        return float(pred.point_log[0]), float(pred.scale[0])

    def memory_upper(self, req_mem: float, cpus: float, nodes: float, req_time: float, cluster: str,
                     template: str, user: str) -> float:
        if self.memory is None:
            return math.nan
        row = _memory_row(req_mem, cpus, nodes, req_time, self.clusters.get(cluster), self.templates.get(template),
                          self.users.get(user))
        return float(math.exp(self.memory.predict_row(row)[0]))

    def learnt_power(self, cluster: str, template: str, user: str, cpus: float, nodes: float) -> float | None:
        """Power per node (W) from the organization's measured jobs on ``cluster``; None without enough."""
        if self.energy is None or self.measured_by_cluster.get(cluster, 0) < ENERGY_CLUSTER_MIN:
            return None
        row = _energy_row(self.clusters.get(cluster), self.templates.get(template), self.users.get(user), cpus, nodes)
        return float(math.exp(self.energy.predict_row(row)[0]))


def _energy_row(cluster, template, user, cpus, nodes) -> np.ndarray:
    nodes = nodes if nodes == nodes and nodes > 0 else 1.0
    return np.array([cluster, template, user, _log(cpus / nodes), _log(nodes)])


def _fit_energy(frame: sh.HistoryFrame, users: Codes, clusters: Codes, templates: Codes):
    """log power per node (W) of measured jobs: cluster, template, user, cores per node, nodes."""
    run, energy = frame["run"], frame["energy_j"]
    nodes = np.where(frame["nodes"] > 0, frame["nodes"], 1.0)
    ok = np.flatnonzero((energy > 0) & (run > 0))
    if len(ok) < ENERGY_MODEL_MIN:
        return None, 0
    X = np.array([_energy_row(clusters.get(frame.cluster[i]), templates.get(frame.template[i]),
                              users.get(frame.user[i]), frame["cpus"][i], frame["nodes"][i]) for i in ok])
    y = np.log(energy[ok] / run[ok] / nodes[ok])
    model = _fit_hgb(X, y, loss="absolute_error", max_iter=60)
    forest = FlatForest.from_models([model])
    if not np.isclose(forest.predict_row(X[0])[0], model.predict(X[:1])[0], atol=1e-6):
        return None, 0
    return forest, len(ok)


def _measured_by_cluster(frame: sh.HistoryFrame) -> dict[str, int]:
    out: dict[str, int] = {}
    ok = (frame["energy_j"] > 0) & (frame["run"] > 0)
    for i in np.flatnonzero(ok):
        out[frame.cluster[i]] = out.get(frame.cluster[i], 0) + 1
    return out


def _memory_row(req_mem, cpus, nodes, req_time, cluster, template, user) -> np.ndarray:
    return np.array([_log(req_mem), _log(cpus), _log(nodes), _log(req_time), cluster, template, user])


def _step_runs(frame: sh.HistoryFrame) -> dict[str, StepRuns]:
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(frame.template):
        if t:
            groups.setdefault(t, []).append(i)
    out = {}
    for name, idx in groups.items():
        ix = np.array(idx)
        run = frame["run"][ix]
        nodes = np.where(frame["nodes"][ix] > 0, frame["nodes"][ix], 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            power = np.where(run > 0, frame["energy_j"][ix] / np.maximum(run, 1.0) / nodes, np.nan)
        log_run = np.log(np.maximum(run, 1.0))
        user_last, user_med, recent = _user_history([frame.user[i] for i in idx], log_run)
        out[name] = StepRuns(
            cluster=[frame.cluster[i] for i in idx], log_run=log_run, nodes=nodes,
            cpus=frame["cpus"][ix], power_per_node=power, cpi=frame["cpi"][ix],
            mem_gbs_per_node=frame["mem_gbs"][ix] / nodes, params=[frame.params[i] or {} for i in idx],
            req_time=frame["req_time"][ix], used_mem=frame["used_mem"][ix], user_last=user_last, user_med=user_med, recent=recent,
            state=[frame.state[i] for i in idx])
    return out


def _user_history(users: list[str], log_run: np.ndarray):
    """Per run (in finish order): the same user's previous run and recent median, from earlier runs only."""
    recent: dict[str, deque] = {}
    last = np.full(len(users), np.nan)
    med = np.full(len(users), np.nan)
    for i, name in enumerate(users):
        mine = recent.setdefault(name, deque(maxlen=USER_RECENT))
        if mine:
            last[i], med[i] = mine[-1], float(np.median(mine))
        mine.append(float(log_run[i]))
    return last, med, recent


def user_features(runs: StepRuns, user: str) -> tuple[float, float]:
    """(last, median of recent) log run of ``user`` for this step; NaN when they never ran it."""
    mine = runs.recent.get(user) if runs.recent else None
    if not mine:
        return math.nan, math.nan
    return mine[-1], float(np.median(mine))


def build_light(session: Session, organization: str, codes: tuple[Codes, Codes, Codes] | None = None) -> OrgModels:
    """History, feature state and statistics; no fitting (fast enough to run inside a first request).

    ``codes`` are the previous models' (users, clusters, templates) codes, kept so that fitted models that
    take codes as inputs stay valid; names seen for the first time get new codes."""
    c = sh.counts(session, organization)
    frame = sh.load(session, organization)
    users, clusters, templates = codes or (Codes(), Codes(), Codes())
    trace = as_trace(frame, users, clusters, templates)
    state = HistoryState()
    finish = trace.finish
    from .features import job_view

    for j in np.argsort(np.where(np.isnan(finish), np.inf, finish), kind="stable"):
        if finish[j] == finish[j]:
            state.add_finished(job_view(trace, int(j)), float(trace["run"][j]), float(trace["status"][j]),
                               float(finish[j]), was_submitted=False)
    from ..clusters.models import clusters_of

    speeds = {row.name: float(row.relative_speed or 1.0) for row in clusters_of(session, organization)}
    return OrgModels(counts=c, frame=frame, state=state, users=users, clusters=clusters, templates=templates,
                     steps=_step_runs(frame), runtime=RuntimePredictor(), fast=None,
                     calibrator=LimitCalibrator(TARGET_KILL), speeds=speeds,
                     measured_by_cluster=_measured_by_cluster(frame))


def fit(light: OrgModels) -> OrgModels:
    """The fitted models (runs on the background thread)."""
    began = time.perf_counter()
    frame = light.frame
    users, clusters, templates = light.users, light.clusters, light.templates
    trace = as_trace(frame, users, clusters, templates)
    runtime, calibrator, fast = RuntimePredictor(), LimitCalibrator(TARGET_KILL), None
    if len(trace):
        X = sweep(trace).X
        run, req = trace["run"], trace["req_time"]
        # One fit on the older part; the newest part calibrates the limit out of sample. (A second fit on
        # everything would double the cost for little: the feature state already holds every job, and the
        # next refit comes once the history grew by REFIT_GROWTH.)
        cut = int(len(trace) * (1 - HOLDOUT))
        runtime = RuntimePredictor().fit(X[:cut], req[:cut], run[:cut])
        if not runtime.fitted:  # too few jobs to hold any out: learn from all, calibrate in sample
            runtime = RuntimePredictor().fit(X, req, run)
            cut = 0
        pred = runtime.predict(X[cut:], req[cut:])
        req_log = log_request(req[cut:])
        for k in range(len(pred.point_log)):
            calibrator.observe(float(pred.point_log[k]), float(pred.scale[k]), float(req_log[k]),
                               float(run[cut + k]))
        if runtime.fitted:
            fast = _checked_fast(runtime, X[-50:], req[-50:])
    steps = dict(light.steps)
    for name, runs in steps.items():
        if runs.n >= TEMPLATE_MODEL_MIN:
            runs.model = _fit_step_model(runs)
    memory, memory_n = _fit_memory(frame, users, clusters, templates)
    energy, energy_n = _fit_energy(frame, users, clusters, templates)
    log.info("decision models fitted on %d jobs in %.1f s", len(trace), time.perf_counter() - began)
    return OrgModels(counts=light.counts, frame=frame, state=light.state, users=users, clusters=clusters,
                     templates=templates, steps=steps, runtime=runtime, fast=fast, calibrator=calibrator,
                     memory=memory, memory_n=memory_n, energy=energy, energy_n=energy_n,
                     measured_by_cluster=light.measured_by_cluster, fit_counts=light.counts, fitted=True,
                     version=light.version + 1,
                     speeds=light.speeds)


def carry_over(fitted: OrgModels, light: OrgModels) -> OrgModels:
    """The new history and feature state with the fitted parts kept (a cheap refresh between refits: a finished
    job shows in its user's features at once, without waiting for the next fit)."""
    for name, runs in light.steps.items():
        old = fitted.steps.get(name)
        if old is not None and old.model is not None:
            runs.model = old.model
    return OrgModels(counts=light.counts, frame=light.frame, state=light.state, users=light.users,
                     clusters=light.clusters, templates=light.templates, steps=light.steps, runtime=fitted.runtime,
                     fast=fitted.fast, calibrator=fitted.calibrator, speeds=light.speeds, memory=fitted.memory,
                     memory_n=fitted.memory_n, energy=fitted.energy, energy_n=fitted.energy_n,
                     measured_by_cluster=light.measured_by_cluster, fit_counts=fitted.fit_counts,
                     fitted_at=fitted.fitted_at, fitted=True,
                     version=fitted.version + 1)


def _checked_fast(runtime: RuntimePredictor, X: np.ndarray, req: np.ndarray) -> FastRuntime | None:
    try:
        fast = FastRuntime(runtime)
        slow = runtime.predict(X, req)
        for i in range(len(X)):
            point, scale = fast.predict(X[i], float(req[i]))
            if not (math.isclose(point, slow.point_log[i], abs_tol=1e-6) and
                    math.isclose(scale, slow.scale[i], rel_tol=1e-6, abs_tol=1e-9)):
                log.warning("fast run-time walk disagrees with the predictor; using its own predict")
                return None
        return fast
    except Exception:  # the shared predictor's internals changed shape: its own predict is always right
        log.warning("fast run-time walk unavailable; using the predictor's own predict", exc_info=True)
        return None


def _fit_memory(frame: sh.HistoryFrame, users: Codes, clusters: Codes, templates: Codes):
    used = frame["used_mem"]
    ok = np.flatnonzero(used > 0)
    if len(ok) < MEMORY_MODEL_MIN:
        return None, 0
    X = np.array([_memory_row(frame["req_mem"][i], frame["cpus"][i], frame["nodes"][i], frame["req_time"][i],
                              clusters.get(frame.cluster[i]), templates.get(frame.template[i]),
                              users.get(frame.user[i])) for i in ok])
    y = np.log(used[ok])  # peak memory is per node already (MaxRSS of a node's task)
    model = _fit_hgb(X, y, loss="quantile", quantile=MEMORY_QUANTILE, max_iter=60)
    forest = FlatForest.from_models([model])
    if not np.isclose(forest.predict_row(X[0])[0], model.predict(X[:1])[0], atol=1e-6):
        return None, 0
    return forest, len(ok)


# --- the registry -----------------------------------------------------------------------------------------
class Registry:
    """Models per (database, organization); builds, staleness checks and refits as described above."""

    def __init__(self):
        self._models: dict[tuple[str, str], OrgModels] = {}
        self._checked: dict[tuple[str, str], float] = {}
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heroes-decision-fit")

    @staticmethod
    def key(session: Session, organization: str) -> tuple[str, str]:
        bind = session.get_bind()
        return (str(bind.url), organization)

    def get(self, session: Session, organization: str) -> OrgModels:
        """The organization's models; the first call builds the unfitted ones here and schedules the fit."""
        key = self.key(session, organization)
        models = self._models.get(key)
        if models is None:
            with self._lock:
                key_lock = self._key_locks.setdefault(key, threading.Lock())
            with key_lock:
                models = self._models.get(key)
                if models is None:
                    models = build_light(session, organization)
                    self._models[key] = models
                    self._checked[key] = time.monotonic()
                    self._schedule(key, session.get_bind(), fit_only=models)
            return models
        if time.monotonic() - self._checked.get(key, 0.0) > CHECK_EVERY_S:
            self._checked[key] = time.monotonic()
            self._schedule(key, session.get_bind())
        return models

    def warm(self, bind, organizations: list[str]) -> None:
        """Build (and fit) the models of ``organizations`` in the background, e.g. when the service starts,
        so that no first request pays for reading the history."""
        for organization in organizations:
            key = (str(bind.url), organization)
            if key not in self._models:
                self._checked[key] = time.monotonic()
                self._schedule(key, bind, force=True)

    def peek(self, session: Session, organization: str) -> OrgModels | None:
        return self._models.get(self.key(session, organization))

    def refresh(self, session: Session, organization: str) -> None:
        """History changed (an import): look at it now rather than at the next periodic check."""
        key = self.key(session, organization)
        self._checked[key] = time.monotonic()
        self._schedule(key, session.get_bind(), force=True)

    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Block until no build is pending (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return True
            time.sleep(0.05)
        return False

    def _schedule(self, key, bind, fit_only: OrgModels | None = None, force: bool = False) -> None:
        with self._lock:
            self._pending.add(key)
        self._executor.submit(self._work, key, bind, fit_only, force)

    def _work(self, key, bind, fit_only: OrgModels | None, force: bool) -> None:
        try:
            if fit_only is not None:
                self._models[key] = fit(fit_only)
                return
            with Session(bind=bind) as session:
                current = self._models.get(key)
                now = sh.counts(session, key[1])
                if not force and current is not None and now == current.counts:
                    return  # nothing new
                codes = (current.users, current.clusters, current.templates) if current is not None else None
                light = build_light(session, key[1], codes)
            if current is None or not current.fitted:
                light.version = current.version + 1 if current is not None else 0
                self._models[key] = light  # answer from the new history while fitting
                self._models[key] = fit(light)
            elif _stale(current.fit_counts or current.counts, now, time.monotonic() - current.fitted_at):
                light.version = current.version + 1
                self._models[key] = carry_over(current, light)  # new history at once...
                self._models[key] = fit(light)                  # ...and the refit replaces it when done
            else:
                self._models[key] = carry_over(current, light)
        except Exception:
            log.exception("decision models for %s could not be rebuilt; the previous ones stay", key[1])
        finally:
            with self._lock:
                self._pending.discard(key)

    def forget_organization(self, organization: str) -> None:
        """Drop an organization's models (it was deleted: its history is gone with it)."""
        with self._lock:
            for key in [k for k in self._models if k[1] == organization]:
                self._models.pop(key, None)
                self._checked.pop(key, None)

    def forget(self) -> None:
        with self._lock:
            self._models.clear()
            self._checked.clear()


def _stale(fitted: sh.HistoryCounts, now: sh.HistoryCounts, fitted_age_s: float = 0.0) -> bool:
    """Whether to refit: the jobs (or the measured-energy records) grew by REFIT_GROWTH since the last fit, some
    were deleted, or anything changed and the fit is older than REFIT_EVERY_S (a big organization's slow
    trickle of finished steps still reaches the models, without a refit per step)."""
    if now.imported < fitted.imported or now.steps < fitted.steps or now.energy < fitted.energy:
        return True
    if now.total - fitted.total >= max(1.0, REFIT_GROWTH * fitted.total):
        return True
    if now.energy - fitted.energy >= max(1.0, REFIT_GROWTH * fitted.energy):
        return True
    return now != fitted and fitted_age_s >= REFIT_EVERY_S


REGISTRY = Registry()
