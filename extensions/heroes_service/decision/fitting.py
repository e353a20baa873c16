"""Fitting the per-organization decision models (see :mod:`.service_models` for when): the template steps' own
regressions with a split-conformal margin, the organization-wide run-time predictor and its calibrated limit,
and the peak-memory and power-per-node models. Every fitted tree model is checked against scikit-learn's own
prediction before its flat walk (:class:`~.trees.FlatForest`) is used."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.orm import Session

from . import service_history as sh
from .encoding import (Codes, StepModel, StepRuns, as_number, as_trace, energy_row, measured_by_cluster, memory_row,
                       step_runs)
from .features import HistoryState, JobView, sweep
from .predictor import RuntimePredictor, candidate_matrix, candidate_spread, log_request
from .time_limits import LimitCalibrator
from .trees import FlatForest

log = logging.getLogger("heroes_service.decision")

TEMPLATE_MODEL_MIN = 30      # runs of one template step before it gets its own regression model
MEMORY_MODEL_MIN = 50        # jobs with a measured peak memory before the memory model is fitted
ENERGY_MODEL_MIN = 20        # jobs with measured energy before the power model is fitted
ENERGY_CLUSTER_MIN = 5       # measured jobs on a cluster before its learnt power replaces the profile
TARGET_KILL = 0.05           # the time limit's calibrated miss rate
MEMORY_QUANTILE = 0.95
HOLDOUT = 0.2                # chronological share of the history that calibrates the run-time limit


def fit_hgb(X: np.ndarray, y: np.ndarray, **params):
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


def _fit_step_model(runs: StepRuns) -> StepModel | None:
    names = sorted({k for p in runs.params for k, v in (p or {}).items() if not math.isnan(as_number(v))})
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
        model = fit_hgb(X[train], y[train], max_iter=60)
        residuals.append(y[fold] - model.predict(X[fold]))
    final = fit_hgb(X, y, max_iter=60)
    margin = conformal_margin(np.concatenate(residuals), TARGET_KILL) if residuals else math.inf
    forest = FlatForest.from_models([final])
    if not np.allclose(forest.predict_row(X[0])[0], final.predict(X[:1])[0], atol=1e-6):
        return None  # the flat walk disagrees with scikit-learn (format change): keep the statistics only
    return StepModel(names, clusters, forest, max(margin, 0.05), len(y))


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
        row = memory_row(req_mem, cpus, nodes, req_time, self.clusters.get(cluster), self.templates.get(template),
                          self.users.get(user))
        return float(math.exp(self.memory.predict_row(row)[0]))

    def learnt_power(self, cluster: str, template: str, user: str, cpus: float, nodes: float) -> float | None:
        """Power per node (W) from the organization's measured jobs on ``cluster``; None without enough."""
        if self.energy is None or self.measured_by_cluster.get(cluster, 0) < ENERGY_CLUSTER_MIN:
            return None
        row = energy_row(self.clusters.get(cluster), self.templates.get(template), self.users.get(user), cpus, nodes)
        return float(math.exp(self.energy.predict_row(row)[0]))


def _fit_energy(frame: sh.HistoryFrame, users: Codes, clusters: Codes, templates: Codes):
    """log power per node (W) of measured jobs: cluster, template, user, cores per node, nodes."""
    run, energy = frame["run"], frame["energy_j"]
    nodes = np.where(frame["nodes"] > 0, frame["nodes"], 1.0)
    ok = np.flatnonzero((energy > 0) & (run > 0))
    if len(ok) < ENERGY_MODEL_MIN:
        return None, 0
    X = np.array([energy_row(clusters.get(frame.cluster[i]), templates.get(frame.template[i]),
                              users.get(frame.user[i]), frame["cpus"][i], frame["nodes"][i]) for i in ok])
    y = np.log(energy[ok] / run[ok] / nodes[ok])
    model = fit_hgb(X, y, loss="absolute_error", max_iter=60)
    forest = FlatForest.from_models([model])
    if not np.isclose(forest.predict_row(X[0])[0], model.predict(X[:1])[0], atol=1e-6):
        return None, 0
    return forest, len(ok)


def _fit_memory(frame: sh.HistoryFrame, users: Codes, clusters: Codes, templates: Codes):
    used = frame["used_mem"]
    ok = np.flatnonzero(used > 0)
    if len(ok) < MEMORY_MODEL_MIN:
        return None, 0
    X = np.array([memory_row(frame["req_mem"][i], frame["cpus"][i], frame["nodes"][i], frame["req_time"][i],
                              clusters.get(frame.cluster[i]), templates.get(frame.template[i]),
                              users.get(frame.user[i])) for i in ok])
    y = np.log(used[ok])  # peak memory is per node already (MaxRSS of a node's task)
    model = fit_hgb(X, y, loss="quantile", quantile=MEMORY_QUANTILE, max_iter=60)
    forest = FlatForest.from_models([model])
    if not np.isclose(forest.predict_row(X[0])[0], model.predict(X[:1])[0], atol=1e-6):
        return None, 0
    return forest, len(ok)


def checked_fast(runtime: RuntimePredictor, X: np.ndarray, req: np.ndarray) -> FastRuntime | None:
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
                     steps=step_runs(frame), runtime=RuntimePredictor(), fast=None,
                     calibrator=LimitCalibrator(TARGET_KILL), speeds=speeds,
                     measured_by_cluster=measured_by_cluster(frame))


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
            fast = checked_fast(runtime, X[-50:], req[-50:])
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
