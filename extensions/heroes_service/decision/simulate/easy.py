"""An EASY-backfilling scheduler simulation: what a job's time limit does to everyone's wait.

EASY (Lifka's "aggressive" backfilling, the default shape of Slurm's backfill and of the published trace
studies): jobs start in submit order while they fit. When the first waiting job does not fit, it gets a
reservation at the *shadow time*, the moment the running jobs' *estimated* ends (start + the limit the
scheduler was told) free enough processors for it; a later job may jump ahead ("backfill") when it fits now
and either ends, by its own estimate, before the shadow time, or uses only the *extra* processors that the
first job will not need then. Only estimates steer the schedule; actual run times decide when processors
really come back, so a tighter limit lets more jobs backfill, and an estimate below the actual run time
kills the job at its limit (when the caller says the limit is enforced).

A killed job loses the processors x time it held and is resubmitted once, at its kill time, with its
``retry_estimate`` (the user's own request); its wait and slowdown count from its first submission.

This is an evaluation tool (``heroes decision replay``, ``heroes decision placement``), not the service's
queue model: the service asks Slurm itself (``wait.py``). Everything is plain Python lists on purpose: one
scheduling pass touches a few dozen jobs, where numpy's per-element overhead would dominate.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

BOUNDED_SLOWDOWN_TAU_S = 10.0   # the customary bound: jobs shorter than 10 s count as 10 s long


@dataclass
class Schedule:
    """The simulated outcome, per job (arrays in the input order) and in total."""

    start: np.ndarray          # start of the job's last (successful) attempt
    finish: np.ndarray
    killed: np.ndarray         # bool: the first attempt was killed at its limit and resubmitted
    lost_core_s: float         # processor-seconds held by killed attempts
    machine_procs: int

    def metrics(self, submit: np.ndarray, run: np.ndarray, procs: np.ndarray,
                tau_s: float = BOUNDED_SLOWDOWN_TAU_S) -> dict:
        """Mean wait, mean bounded slowdown, utilization and the share of core-hours lost to kills.

        ``wait`` = start of the last attempt - first submit (a killed job's lost attempt counts as waiting);
        bounded slowdown = max(1, response / max(run, tau)); utilization = useful processor-seconds over the
        machine's capacity from the first submit to the last finish; lost share = killed attempts'
        processor-seconds over the useful ones.
        """
        if len(submit) == 0:
            return {"mean_wait_s": 0.0, "mean_bounded_slowdown": 1.0, "utilization": 0.0,
                    "lost_core_hours_share": 0.0, "killed_jobs": 0, "lost_core_hours": 0.0}
        response = self.finish - submit
        wait = self.start - submit
        bsld = np.maximum(response / np.maximum(run, tau_s), 1.0)
        useful = float(np.sum(run * procs))
        span = float(self.finish.max() - submit.min())
        capacity = self.machine_procs * span
        return {
            "mean_wait_s": float(wait.mean()),
            "mean_bounded_slowdown": float(bsld.mean()),
            "utilization": useful / capacity if capacity > 0 else 0.0,
            "lost_core_hours_share": self.lost_core_s / useful if useful > 0 else 0.0,
            "killed_jobs": int(self.killed.sum()),
            "lost_core_hours": self.lost_core_s / 3600.0,
        }


class EasyMachine:
    """One machine's EASY state: free processors, running jobs (actual and estimated ends) and the queue.

    ``procs``, ``duration`` (actual), ``estimate`` (what the scheduler is told) are per-job lists shared with
    the caller; ``estimate`` may be changed by the caller before a job is queued (a resubmission).
    """

    def __init__(self, size: int, procs: list, duration: list, estimate: list):
        self.size = int(size)
        self.free = int(size)
        self.procs, self.duration, self.estimate = procs, duration, estimate
        self.ends: list = []          # heap of (actual end, job)
        self.est_end: dict = {}       # running job -> (estimated end, procs)
        self.queue: list = []         # job ids, first come first served

    def next_end(self) -> float:
        return self.ends[0][0] if self.ends else math.inf

    def pop_ended(self, now: float) -> list:
        """Jobs whose actual end is <= now, their processors returned."""
        out = []
        while self.ends and self.ends[0][0] <= now:
            _, job = heapq.heappop(self.ends)
            _, p = self.est_end.pop(job)
            self.free += p
            out.append(job)
        return out

    def _start(self, job: int, now: float, started: list) -> None:
        p = self.procs[job]
        self.free -= p
        heapq.heappush(self.ends, (now + self.duration[job], job))
        self.est_end[job] = (now + self.estimate[job], p)
        started.append(job)

    def schedule(self, now: float) -> list:
        """One EASY pass at ``now``; the jobs it started, in start order."""
        started: list = []
        queue = self.queue
        procs = self.procs
        while queue and procs[queue[0]] <= self.free:
            self._start(queue.pop(0), now, started)
        if len(queue) < 2 or self.free == 0:
            return started
        shadow, extra = self._reservation(now, procs[queue[0]])
        estimate = self.estimate
        k = 1
        while k < len(queue) and self.free > 0:
            job = queue[k]
            p = procs[job]
            if p <= self.free and (now + estimate[job] <= shadow or p <= extra):
                if now + estimate[job] > shadow:
                    extra -= p
                queue.pop(k)
                self._start(job, now, started)
            else:
                k += 1
        return started

    def _reservation(self, now: float, need: int) -> tuple[float, int]:
        """(shadow time, extra processors) for a first job needing ``need`` processors.

        A running job past its estimated end (it ran longer than the scheduler was told) is expected to end
        now: the scheduler has no better guess.
        """
        avail = self.free
        for end, p in sorted((max(e, now), p) for e, p in self.est_end.values()):
            avail += p
            if avail >= need:
                return end, avail - need
        return math.inf, 0


def simulate(submit, procs, run, estimate, machine_procs: int, kill=None, retry_estimate=None) -> Schedule:
    """Run EASY over a whole trace.

    ``estimate``: the limit the scheduler sees per job; ``kill`` (bool per job): the limit is enforced, so a
    job whose ``run`` exceeds its ``estimate`` is killed at it and resubmitted with ``retry_estimate`` (it
    then runs its full ``run``); without ``kill`` every job runs its ``run`` whatever its estimate (the trace's
    own jobs that ran past their request did so). Processor counts above the machine are clamped to it.
    """
    n = len(submit)
    sub = [float(x) for x in submit]
    p_list = [min(max(int(x), 1), int(machine_procs)) for x in procs]
    run_l = [max(float(x), 0.0) for x in run]
    est = [max(float(x), 0.0) for x in estimate]
    kill_l = [False] * n if kill is None else [bool(x) for x in kill]
    retry = list(est) if retry_estimate is None else [float(x) for x in retry_estimate]
    will_kill = [k and r > e for r, e, k in zip(run_l, est, kill_l)]
    killed = np.array(will_kill, dtype=bool)
    duration = [e if k else r for r, e, k in zip(run_l, est, will_kill)]
    machine = EasyMachine(machine_procs, p_list, duration, est)
    start = [math.nan] * n
    finish = [math.nan] * n
    order = sorted(range(n), key=lambda j: (sub[j], j))
    lost = 0.0
    i = 0
    while i < n or machine.ends or machine.queue:
        now = min(sub[order[i]] if i < n else math.inf, machine.next_end())
        if now == math.inf:
            raise RuntimeError("EASY simulation stalled: a queued job can never start")
        for job in machine.pop_ended(now):
            if will_kill[job]:
                will_kill[job] = False
                lost += duration[job] * p_list[job]
                duration[job] = run_l[job]
                est[job] = retry[job]
                machine.queue.append(job)
            else:
                finish[job] = now
        while i < n and sub[order[i]] <= now:
            machine.queue.append(order[i])
            i += 1
        for job in machine.schedule(now):
            start[job] = now
    return Schedule(np.array(start), np.array(finish), killed, lost, int(machine_procs))


def machine_size(header: dict, procs: np.ndarray) -> int:
    """The trace's machine: the header's ``MaxProcs`` (else ``MaxNodes``), never below the widest job."""
    widest = int(np.nanmax(procs)) if len(procs) and np.any(~np.isnan(procs)) else 1
    for key in ("MaxProcs", "MaxNodes"):
        try:
            value = int(float(str(header.get(key, "")).split()[0]))
        except (ValueError, IndexError):
            continue
        if value > 0:
            return max(value, widest)
    return max(widest, 1)
