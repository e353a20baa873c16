"""``heroes decision placement``: is the chosen cluster the right one? A trace routed over simulated clusters.

The trace's machine is split into clusters of different sizes and speeds (:data:`.clusters.DEFAULT_CLUSTERS`; a job
runs ``run / speed`` on a cluster, and each cluster's scheduler is EASY with the users' requests, see
:mod:`.easy`). Every job is routed at its submit time, by each router in its own simulation:

* ``decision``: the service's performance policy (:func:`..policies.scores` with the ``performance``
  weights, ties to the earlier finish): finish = predicted start + predicted run / speed. The start comes
  from playing the cluster's EASY queue forward with what the service would know: running jobs end at
  their start + predicted run (at their limit once that has passed), queued jobs run their prediction, no
  more arrivals. The predictions are the online ones of ``heroes decision evaluate``;
* ``oracle``: the same forward play with the true run times, choosing the truly earliest finish given the
  queues at submission (it cannot know later arrivals: a greedy, clairvoyant router);
* ``round_robin``, ``least_work`` (least requested processor-seconds queued or still running, per
  processor) and ``fastest`` (the fastest cluster the job fits).

Regret of a router = (sum of its jobs' response times, finish - submit) / (the oracle's sum) - 1.
Jobs wider than every cluster are left out (counted).
"""
from __future__ import annotations

import heapq
import math
import time
import numpy as np

from ..evaluate import EvalConfig, OnlineRun, run_online
from ..history import Trace
from ..policies import POLICIES, scores
from .clusters import DEFAULT_CLUSTERS
from .easy import EasyMachine, machine_size
from .replay import replay_jobs

GOAL_REGRET = 0.10
ROUTERS = ("decision", "oracle", "round_robin", "least_work", "fastest")


class Federation:
    """The clusters' EASY states for one router's simulation.

    Per-job lists are shared by all clusters (a job lives on one); one extra slot at the end holds the job
    a router is asking about.
    """

    def __init__(self, specs, sizes, procs, request):
        n = len(procs)
        self.specs, self.sizes = specs, sizes
        self.procs = [int(p) for p in procs] + [0]
        self.request = [float(r) for r in request] + [0.0]
        self.duration = [0.0] * (n + 1)
        self.start_time = [math.nan] * n
        self.finish = [math.nan] * n
        self.on = [-1] * n
        self.machines = [EasyMachine(size, self.procs, self.duration, self.request) for size in sizes]

    def advance(self, now: float) -> None:
        """Play every cluster up to ``now`` (ends at or before it, and their scheduling passes)."""
        for machine in self.machines:
            while machine.next_end() <= now and machine.next_end() < math.inf:
                t = machine.next_end()
                for job in machine.pop_ended(t):
                    self.finish[job] = t
                self._started(machine.schedule(t), t)

    def submit(self, job: int, c: int, now: float, duration: float) -> None:
        self.duration[job] = duration
        self.on[job] = c
        self.machines[c].queue.append(job)
        self._started(self.machines[c].schedule(now), now)

    def _started(self, jobs, t):
        for job in jobs:
            self.start_time[job] = t

    def drain(self) -> None:
        self.advance(math.inf)

    def forward_start(self, c: int, now: float, procs: int, request: float, belief: list, running_end) -> float:
        """When a new job of ``procs`` asking ``request`` would start on cluster ``c`` if nothing else
        arrived, with ``belief[j]`` the duration believed for queued job j on ``c`` (its last slot: the new
        job's) and ``running_end(j, start, est_end)`` the end believed for a running one."""
        machine = self.machines[c]
        if not machine.queue and procs <= machine.free:
            return now
        new = len(self.procs) - 1
        self.procs[new], self.request[new] = procs, request
        copy = EasyMachine(machine.size, self.procs, belief, self.request)
        copy.free = machine.free
        copy.est_end = dict(machine.est_end)
        copy.ends = [(running_end(job, self.start_time[job], est), job) for job, (est, _) in machine.est_end.items()]
        heapq.heapify(copy.ends)
        copy.queue = machine.queue + [new]
        t = now
        while True:
            if new in copy.schedule(t):
                return t
            t = copy.next_end()
            if t == math.inf:
                return math.inf
            copy.pop_ended(t)


def route(specs, sizes, jobs, point, router: str) -> Federation:
    """Simulate one router over the jobs (``jobs``: :class:`.replay.ReplayJobs` of the routable jobs, in
    submit order; ``point``: the online predicted run time of each)."""
    n = len(jobs.submit)
    fed = Federation(specs, sizes, jobs.procs, jobs.request)
    speeds = [s.speed for s in specs]
    run = jobs.run.tolist()
    true_on = [[r / sp for r in run] + [0.0] for sp in speeds]
    believed_on = [[min(p, q) / sp for p, q in zip(point.tolist(), jobs.request.tolist())] + [0.0] for sp in speeds]
    weights = POLICIES["performance"].weights
    turn = 0
    submit = jobs.submit.tolist()
    procs = [int(p) for p in jobs.procs]
    for j in range(n):
        now = submit[j]
        fed.advance(now)
        fits = [c for c, size in enumerate(sizes) if procs[j] <= size]
        if router == "round_robin":
            c = fits[turn % len(fits)]
            turn += 1
        elif router == "fastest":
            c = max(fits, key=lambda k: (speeds[k], sizes[k]))
        elif router == "least_work":
            c = min(fits, key=lambda k: (_queued_work(fed, k, now) / sizes[k], -speeds[k]))
        elif router == "oracle":
            c = _earliest(fed, fits, j, now, procs[j], true_on, lambda job, start, est: start + true_on[fed.on[job]][job])
        else:
            c = _by_policy(fed, fits, j, now, procs[j], believed_on, speeds, weights)
        fed.submit(j, c, now, true_on[c][j])
    fed.drain()
    return fed


def _queued_work(fed: Federation, c: int, now: float) -> float:
    """Requested processor-seconds still ahead on cluster ``c``: queued jobs' requests, running jobs' rest."""
    machine = fed.machines[c]
    work = sum(fed.procs[j] * fed.request[j] for j in machine.queue)
    return work + sum(p * max(est - now, 0.0) for est, p in machine.est_end.values())


def _earliest(fed, fits, j, now, procs, durations_on, running_end) -> int:
    """The cluster where job ``j`` truly finishes first, given the queues now (the oracle)."""
    best, best_c = math.inf, fits[0]
    for c in fits:
        belief = durations_on[c]
        belief[-1] = durations_on[c][j]
        finish = fed.forward_start(c, now, procs, fed.request[j], belief, running_end) + durations_on[c][j]
        if finish < best:
            best, best_c = finish, c
    return best_c


def _by_policy(fed, fits, j, now, procs, believed_on, speeds, weights) -> int:
    """The service's performance choice: predicted wait from the queue as the service knows it + predicted
    run, ranked by the policy's scores (ties: earlier finish, then the order of the clusters)."""
    def running_end(job, start, est):
        guess = start + believed_on[fed.on[job]][job]
        return guess if guess > now else max(est, now)

    values, finishes = [], []
    for c in fits:
        belief = believed_on[c]
        belief[-1] = believed_on[c][j]
        start = fed.forward_start(c, now, procs, fed.request[j], belief, running_end)
        finish = start - now + believed_on[c][j]
        finishes.append(finish)
        values.append({"time": finish, "energy": None, "cost": None})
    ranked = sorted(zip(scores(values, weights), finishes, range(len(fits))), key=lambda t: (-t[0], t[1], t[2]))
    return fits[ranked[0][2]]


def placement(trace: Trace, config: EvalConfig | None = None, clusters=DEFAULT_CLUSTERS,
              online: OnlineRun | None = None, routers=ROUTERS) -> dict:
    """Every router's mean response time and regret against the oracle on ``trace``."""
    began = time.perf_counter()
    config = config or EvalConfig()
    if online is None:
        online = run_online(trace, config)
    predicted = time.perf_counter() - began
    jobs = replay_jobs(trace)
    total = machine_size(trace.header, jobs.procs)
    sizes = [max(1, int(round(spec.share * total))) for spec in clusters]
    routable = jobs.procs <= max(sizes)
    keep = np.flatnonzero(routable)
    sub = type(jobs)(*(getattr(jobs, f)[keep] for f in ("index", "submit", "procs", "run", "request")))
    point = online.point[sub.index]
    point = np.where(np.isfinite(point) & (point > 0), point, sub.request)
    out: dict = {"jobs": int(len(keep)), "machine_procs": total,
                 "clusters": [{"name": s.name, "procs": size, "speed": s.speed,
                               "price_per_core_hour": s.price_per_core_hour} for s, size in zip(clusters, sizes)],
                 "routers": {}}
    timing = {"predict_s": round(predicted, 2)}
    responses = {}
    for name in routers:
        t0 = time.perf_counter()
        fed = route(clusters, sizes, sub, point, name)
        finish = np.array(fed.finish)
        responses[name] = finish - sub.submit
        chosen = np.bincount(np.array(fed.on), minlength=len(clusters))
        out["routers"][name] = {
            "mean_response_s": float(responses[name].mean()) if len(keep) else 0.0,
            "mean_wait_s": float((np.array(fed.start_time) - sub.submit).mean()) if len(keep) else 0.0,
            "share_per_cluster": {s.name: float(k / max(len(keep), 1)) for s, k in zip(clusters, chosen)},
        }
        timing[f"{name}_s"] = round(time.perf_counter() - t0, 2)
    oracle = float(responses["oracle"].sum()) if "oracle" in responses else math.nan
    for name, row in out["routers"].items():
        row["regret"] = float(responses[name].sum()) / oracle - 1.0 if oracle > 0 else None
    simple = [r for r in ("round_robin", "least_work", "fastest") if r in out["routers"]]
    ours = out["routers"].get("decision", {}).get("regret")
    out["goal"] = {
        "regret_at_most": GOAL_REGRET,
        "met": bool(ours is not None and ours <= GOAL_REGRET
                    and all(ours < out["routers"][r]["regret"] for r in simple)),
    }
    out["protocol"] = {
        "scheduler": "EASY backfilling per cluster, estimates = the users' requests; run time = run / speed",
        "decision": "performance policy: predicted start (the queue played forward with the online point "
                    "predictions) + predicted run / speed",
        "oracle": "the earliest true finish given the queues at submission (true run times, no later arrivals)",
        "excluded_too_wide": int(len(jobs.index) - len(keep)),
        "excluded_unknown": int(len(trace) - len(jobs.index)),
    }
    timing["total_s"] = round(time.perf_counter() - began, 2)
    out["timing"] = timing
    return out
