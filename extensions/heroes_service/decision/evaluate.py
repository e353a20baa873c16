"""Online, chronological evaluation of the run-time predictor and the time-limit recommender on a trace.

Protocol (what a live service would have known):
- jobs are visited in submit order; before a job is predicted, every job that FINISHED strictly before its
  submit time (submit + wait + run; submit + run when the trace has no wait times) enters the history;
- the features of a job come only from that history (see :mod:`.features`);
- the model is retrained periodically on the jobs finished before the retraining moment: early on whenever
  the history has grown by half, later every ``retrain_every`` submissions;
- the limit's kill price is recalibrated from the finished jobs' realised outcomes: each finished job tells,
  for every price, whether the limit it got offered at its submission would have killed it.

Metrics cover jobs with a known run time > 0 and a known request > 0 (others are predicted but excluded and
counted). Accuracy per job is min(P/R, R/P); the limit "kills" a job when it is below the real run time.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .features import sweep
from .history import Trace, read_swf
from .predictor import RuntimePredictor, log_request
from .ratio_distribution import LAMBDAS
from .time_limits import LimitCalibrator, LimitChooser


@dataclass
class EvalConfig:
    retrain_every: int = 2000
    target_kill: float = 0.045          # share of jobs the limit may kill that their request would not have
    target_lost: float | None = 0.015   # share of useful core-hours the limit's kills may throw away
    calibration_window: int = 3000
    predictor: dict = field(default_factory=dict)


def accuracy(pred: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Tsafrir accuracy: 1 when equal, else the smaller over the larger."""
    pred = np.asarray(pred, dtype=np.float64)
    run = np.asarray(run, dtype=np.float64)
    return np.minimum(pred, run) / np.maximum(pred, run)


def point_metrics(pred: np.ndarray, run: np.ndarray) -> dict | None:
    """Mean accuracy, mean absolute error (s), share under-predicted (pred < run); None without jobs."""
    if len(run) == 0:
        return None
    return {
        "mean_accuracy": float(np.mean(accuracy(pred, run))),
        "mae_s": float(np.mean(np.abs(pred - run))),
        "under_share": float(np.mean(pred < run)),
    }


def limit_metrics(limit: np.ndarray, run: np.ndarray, request: np.ndarray, procs: np.ndarray | None = None
                  ) -> dict | None:
    """Kill share (limit < run), the kills the limit adds (run <= request and limit < run: the others ran
    past their own request and were killed at it whatever the limit), mean accuracy of the limit, mean
    limit / request, and (with ``procs``) the processor-seconds that stopping jobs below their request throws
    away, over the useful ones; None without jobs."""
    if len(run) == 0:
        return None
    out = {
        "kill_share": float(np.mean(limit < run)),
        "added_kill_share": float(np.mean((run <= request) & (limit < run))),
        "mean_accuracy": float(np.mean(accuracy(limit, run))),
        "limit_over_request": float(np.mean(limit / request)),
    }
    if procs is not None:
        sized = procs > 0
        stopped = sized & (limit < run) & (limit < request)
        useful = float(np.sum(run[sized] * procs[sized]))
        out["lost_core_hours_share"] = float(np.sum(limit[stopped] * procs[stopped])) / useful if useful else 0.0
    return out


@dataclass
class OnlineRun:
    """Per-job outputs of the online protocol, plus its audit trail."""

    point: np.ndarray
    limit: np.ndarray
    limit_free: np.ndarray
    last_two: np.ndarray
    fits: list = field(default_factory=list)   # (job index, retrain time, n_train, latest finish used, fit s)
    seen_until: np.ndarray | None = None       # latest finish in the features' history, per job
    observed_at: np.ndarray | None = None      # job index at whose submission the calibrator learnt each job
    fit_s: float = 0.0
    kill_price: np.ndarray | None = None       # the lambda in force for each job's limit (NaN: fallback limit)
    point_log: np.ndarray | None = None        # the model's outputs at each submission, kept so the limit can
    scale: np.ndarray | None = None            # be recalibrated without refitting (see :func:`calibrate`)
    offsets: np.ndarray | None = None


def _next_retrain(i: int, n_train: int, every: int, min_train: int) -> int:
    """Retrain early when the history grows by half (models improve fast), then every ``every`` jobs."""
    step = max(min(every, max(n_train // 2, min_train)), 1)
    return i + step


def run_online(trace: Trace, config: EvalConfig | None = None) -> OnlineRun:
    """Predict every job of ``trace`` as a live service would have, in submit order.

    Two passes: the models (point, scale and the per-price limit options of each job, from the models
    trained on what had finished before its submission), then :func:`calibrate`, which replays the finishes
    to choose each job's kill price from the jobs finished before it. The second pass only reads what the
    first computed at each job's submission, so splitting them changes nothing that a live service would
    have known.
    """
    config = config or EvalConfig()
    n = len(trace)
    sw = sweep(trace)
    X = sw.X
    submit, run, req = trace["submit"], trace["run"], trace["req_time"]
    finish = trace.finish
    predictor = RuntimePredictor(**config.predictor)
    offsets = np.full((n, len(LAMBDAS)), np.nan)
    point_log = np.full(n, np.nan)
    scale = np.full(n, np.nan)
    fits: list = []
    fit_s = 0.0
    by_finish = np.argsort(np.where(np.isnan(finish), np.inf, finish), kind="stable")
    fin_sorted = finish[by_finish]
    n_known = int(np.sum(~np.isnan(finish)))
    cap_log = _cap_log(trace)
    predicted_to = 0
    next_fit = 0
    for i in range(n):
        now = submit[i]
        if i >= next_fit:
            k = int(np.searchsorted(fin_sorted[:n_known], now, side="left"))  # finished strictly before now
            train = np.sort(by_finish[:k])
            began = time.perf_counter()
            if len(train):
                predictor.fit(X[train], req[train], run[train])
            took = time.perf_counter() - began
            fit_s += took
            latest = float(finish[train].max()) if len(train) else -math.inf
            fits.append((i, float(now), predictor.n_train, latest, took))
            next_fit = n if not predictor.fitted and k >= n_known else _next_retrain(
                i, predictor.n_train, config.retrain_every, predictor.min_train)
            if not predictor.fitted:
                next_fit = min(next_fit, i + max(predictor.min_train // 4, 1))
            predicted_to = i
        if i >= predicted_to:
            end = min(next_fit, n)
            pred = predictor.predict(X[i:end], req[i:end], np.exp(cap_log[i:end]))
            point_log[i:end], scale[i:end] = pred.point_log, pred.scale
            if pred.limit_offsets is not None:
                offsets[i:end] = pred.limit_offsets
            predicted_to = end
    out = OnlineRun(np.exp(point_log), np.full(n, np.nan), np.full(n, np.nan), sw.last_two, fits, sw.seen_until,
                    None, fit_s, None, point_log, scale, offsets)
    return calibrate(trace, out, config)


def _cap_log(trace: Trace) -> np.ndarray:
    """The queue's cap on limits (log s): the header's MaxRuntime when stated, else the longest request seen
    so far; NaN before any request."""
    req_log = log_request(trace["req_time"])
    header_cap = _header_max_runtime(trace)
    seen_cap = np.fmax.accumulate(np.where(np.isnan(req_log), -np.inf, req_log))
    cap_log = np.minimum(seen_cap, header_cap) if header_cap == header_cap else seen_cap
    return np.where(np.isfinite(cap_log), cap_log, np.nan)


def calibrate(trace: Trace, result: OnlineRun, config: EvalConfig) -> OnlineRun:
    """Each job's limits from the model outputs in ``result``, with the kill price and the conformal margin
    learnt from the jobs that finished strictly before its submission (fills ``limit``, ``limit_free``,
    ``kill_price`` and ``observed_at``)."""
    n = len(trace)
    submit, run, req = trace["submit"], trace["run"], trace["req_time"]
    procs = _procs(trace)
    finish = trace.finish
    req_log = log_request(req)
    cap_log = _cap_log(trace)
    point_log, scale, offsets = result.point_log, result.scale, result.offsets
    calibrator = LimitCalibrator(config.target_kill, config.calibration_window)
    chooser = LimitChooser(config.target_kill, config.calibration_window, target_lost=config.target_lost)
    by_finish = np.argsort(np.where(np.isnan(finish), np.inf, finish), kind="stable")
    fin_sorted = finish[by_finish]
    n_known = int(np.sum(~np.isnan(finish)))
    limit = np.full(n, np.nan)
    limit_free = np.full(n, np.nan)
    kill_price = np.full(n, np.nan)
    observed_at = np.full(n, -1, dtype=np.int64)
    observed = 0
    for i in range(n):
        now = submit[i]
        while observed < n_known and fin_sorted[observed] < now:
            j = by_finish[observed]
            calibrator.observe(point_log[j], scale[j], req_log[j], run[j])
            if run[j] > 0:
                chooser.observe(offsets[j], math.log(run[j]) - req_log[j], req[j], procs[j])
            observed_at[j] = i
            observed += 1
        limit[i], limit_free[i] = calibrator.limit(point_log[i], scale[i], req_log[i], cap_log[i])
        chosen = chooser.choose(offsets[i])
        if chosen == chosen:
            limit[i] = _limit_seconds(chosen, req[i], cap_log[i])
            kill_price[i] = LAMBDAS[chooser.lambda_index()]
    result.limit, result.limit_free, result.kill_price, result.observed_at = limit, limit_free, kill_price, observed_at
    return result


def _procs(trace: Trace) -> np.ndarray:
    """Processors per job: allocated, else requested; NaN when the trace states neither."""
    alloc = trace["alloc_procs"]
    return np.where(alloc > 0, alloc, trace["req_procs"])


def _limit_seconds(offset: float, request: float, cap_log: float) -> float:
    """request * exp(offset), and exactly the ceiling (request or queue cap) when the offset reaches it, so a
    job that runs precisely its request is not counted killed by a rounding error."""
    ceiling = min(request, math.exp(cap_log)) if cap_log == cap_log else request
    return min(request * math.exp(offset), ceiling)


def _header_max_runtime(trace: Trace) -> float:
    """log of the SWF header's ``MaxRuntime`` (the system's longest allowed run), NaN when absent."""
    try:
        value = float(trace.header.get("MaxRuntime", "nan").split()[0])
    except (ValueError, IndexError):
        return math.nan
    return math.log(value) if value > 0 else math.nan


def evaluate(trace: Trace, config: EvalConfig | None = None, online: OnlineRun | None = None) -> dict:
    """Run the online protocol and compute the metrics for the predictor and the two baselines.

    Jobs count when their run time and request are known (> 0), as in the published baselines. A trace that
    states no request at all (some public SWF traces do not) is still scored on its point predictions over
    the jobs with a known run time; what needs a request (the user-request baseline, the limit) is null,
    and ``not_applicable`` says why. The output is plain JSON: no NaN anywhere. ``online``: a run of
    :func:`run_online` on the same trace and config already made (replay and placement share one).
    """
    config = config or EvalConfig()
    began = time.perf_counter()
    result = online if online is not None else run_online(trace, config)
    run, req = trace["run"], trace["req_time"]
    unknown_run = ~(run > 0)
    unknown_req = ~(req > 0)
    usable = ~unknown_run & ~unknown_req
    no_requests = not usable.any()
    if no_requests:
        usable = ~unknown_run
    r, q = run[usable], req[usable]
    procs = _procs(trace)[usable]
    out = {
        "jobs": int(usable.sum()),
        "predictor": {
            "point": point_metrics(result.point[usable], r),
            "limit": None if no_requests else limit_metrics(result.limit[usable], r, q, procs),
            "limit_unclipped": None if no_requests else limit_metrics(result.limit_free[usable], r, q, procs),
        },
        "baselines": {
            "user_request": None if no_requests else {**point_metrics(q, r), "kill_share": float(np.mean(q < r))},
            "last_two": point_metrics(result.last_two[usable], r),
        },
        "excluded": {
            "total_in_trace": len(trace),
            "unknown_or_zero_run_time": int(unknown_run.sum()),
            "unknown_request_time": 0 if no_requests else int((unknown_req & ~unknown_run).sum()),
            "malformed_lines_skipped": trace.skipped,
        },
        "protocol": {
            "history": "jobs finished (submit+wait+run) strictly before each submit",
            "retrains": len(result.fits),
            "retrain_every_jobs": config.retrain_every,
            "target_kill_share": config.target_kill,
            "target_kill_counts": "added kills only: jobs with run <= request stopped by a lower limit",
            "target_lost_core_hours_share": config.target_lost,
            "limit_default": "clipped: never above the job's request; per job, the candidate limit maximising "
                             "expected accuracy - lambda * P(kill), lambda set online from finished jobs",
            "limit_unclipped": "may exceed the request, capped at MaxRuntime or the longest request seen so far",
        },
        "timing": {
            "total_s": round(time.perf_counter() - began, 2),
            "fit_s": round(result.fit_s, 2),
            "largest_fit_jobs": max((f[2] for f in result.fits), default=0),
        },
    }
    if no_requests:
        out["not_applicable"] = ("the trace states no requested time for any job with a known run time: the "
                                 "user-request baseline and the time limit need one")
        out["protocol"]["limit_kill_price_median"] = None
        out["protocol"]["limit_by_fallback_share"] = None
        return out
    priced = result.kill_price[usable]
    priced = priced[~np.isnan(priced)]
    median_price = float(np.median(priced)) if len(priced) else math.nan
    out["protocol"]["limit_kill_price_median"] = median_price if math.isfinite(median_price) else None
    out["protocol"]["limit_by_fallback_share"] = float(np.mean(np.isnan(result.kill_price[usable])))
    base = out["baselines"]["user_request"]["mean_accuracy"]
    out["predictor"]["limit"]["accuracy_vs_request"] = out["predictor"]["limit"]["mean_accuracy"] / base if base else None
    return out


def evaluate_file(path: str | Path, limit: int | None = None, config: EvalConfig | None = None) -> dict:
    """Evaluate an SWF file (optionally only its first ``limit`` jobs by submit time)."""
    trace = read_swf(path)
    if limit:
        trace = trace.head(limit)
    out = evaluate(trace, config)
    out["trace"] = Path(path).name
    return out
