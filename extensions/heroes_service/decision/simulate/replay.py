"""``heroes decision replay``: what right-sized time limits do to everyone's wait.

The trace is replayed through the EASY simulation of its own machine (:mod:`.easy`) three times:

* ``requests``: the scheduler sees the users' requested times (what happened);
* ``recommended``: it sees the limits the service would have recommended online (:func:`..evaluate.run_online`:
  each job's limit from models and kill price learnt only from jobs finished before its submission). A job
  whose limit is below both its run time and its request is killed at its limit, its processor-seconds are
  lost, and it is resubmitted at once with its own request;
* ``oracle``: it sees the exact run times (the best any limit could do for the schedule).

A job's real run time is the trace's in all three (a job that ran past its request in the trace ran so here
too). The goal: the recommended limits capture at least half of the oracle's gain in mean bounded slowdown
over the requests, losing at most 2 % of the core-hours to kills.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..evaluate import EvalConfig, OnlineRun, _cap_log, _procs, run_online
from ..history import Trace
from .easy import BOUNDED_SLOWDOWN_TAU_S, machine_size, simulate

GOAL_GAIN_CAPTURED = 0.5
GOAL_LOST_SHARE = 0.02


@dataclass
class ReplayJobs:
    """The jobs a simulation can run (known run time >= 0 and processor count > 0), as arrays."""

    index: np.ndarray      # positions in the trace
    submit: np.ndarray
    procs: np.ndarray
    run: np.ndarray
    request: np.ndarray    # the user's request; where unknown, the queue's cap, else the run time


def replay_jobs(trace: Trace) -> ReplayJobs:
    procs = _procs(trace)
    run = trace["run"]
    usable = (run >= 0) & (procs > 0)
    index = np.flatnonzero(usable)
    req = trace["req_time"][index]
    cap = np.exp(_cap_log(trace))[index]
    fallback = np.where(np.isnan(cap), run[index], np.maximum(cap, run[index]))
    request = np.where(req > 0, req, fallback)
    return ReplayJobs(index, trace["submit"][index].astype(float), procs[index], run[index].astype(float), request)


def recommended_limits(jobs: ReplayJobs, online: OnlineRun) -> np.ndarray:
    """The online limit of each job, the request where none was recommended (never above the request)."""
    limit = online.limit[jobs.index]
    return np.where(np.isfinite(limit) & (limit > 0), np.minimum(limit, jobs.request), jobs.request)


def replay(trace: Trace, config: EvalConfig | None = None, online: OnlineRun | None = None) -> dict:
    """The three simulations' metrics and how much of the oracle's gain the recommendation captures."""
    began = time.perf_counter()
    config = config or EvalConfig()
    if online is None:
        online = run_online(trace, config)
    predicted = time.perf_counter() - began
    jobs = replay_jobs(trace)
    size = machine_size(trace.header, jobs.procs)
    limit = recommended_limits(jobs, online)
    stopped = (limit < jobs.run) & (limit < jobs.request)
    runs = {
        "requests": simulate(jobs.submit, jobs.procs, jobs.run, jobs.request, size),
        "recommended": simulate(jobs.submit, jobs.procs, jobs.run, limit, size, kill=stopped,
                                retry_estimate=jobs.request),
        "oracle": simulate(jobs.submit, jobs.procs, jobs.run, jobs.run, size),
    }
    out: dict = {"jobs": int(len(jobs.index)), "machine_procs": size}
    for name, schedule in runs.items():
        out[name] = schedule.metrics(jobs.submit, jobs.run, jobs.procs)
    base = out["requests"]["mean_bounded_slowdown"]
    best = out["oracle"]["mean_bounded_slowdown"]
    ours = out["recommended"]["mean_bounded_slowdown"]
    gain = base - best
    captured = (base - ours) / gain if gain > 0 else None
    out["gain_captured"] = captured
    out["goal"] = {
        "gain_captured_at_least": GOAL_GAIN_CAPTURED,
        "lost_core_hours_share_at_most": GOAL_LOST_SHARE,
        "met": bool(captured is not None and captured >= GOAL_GAIN_CAPTURED
                    and out["recommended"]["lost_core_hours_share"] <= GOAL_LOST_SHARE),
    }
    out["protocol"] = {
        "scheduler": "EASY backfilling, first come first served, reservations from the limits the scheduler sees",
        "bounded_slowdown_tau_s": BOUNDED_SLOWDOWN_TAU_S,
        "machine": "the header's MaxProcs (else MaxNodes), never below the widest job",
        "kills": "a job whose recommended limit is below its run time and its request is killed at the limit "
                 "and resubmitted at once with its request",
        "excluded_jobs": int(len(trace) - len(jobs.index)),
    }
    out["timing"] = {"predict_s": round(predicted, 2), "total_s": round(time.perf_counter() - began, 2)}
    return _finite(out)


def _finite(value):
    """The same structure with every non-finite float as None (JSON without NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
