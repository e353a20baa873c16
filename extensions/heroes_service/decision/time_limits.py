"""Time limits chosen online from what recently finished jobs really did.

``lambda`` prices a kill in :class:`~.ratio_distribution.RatioDistribution`'s choice of limit;
:class:`LimitChooser` sets it from the realised outcomes of recently finished jobs (for each lambda of a grid
it knows which limit each job would have received and whether that limit would have killed it), taking the
most accurate lambda whose realised kill share stays at the target. Only kills the limit adds count (a job
that outran its own request was killed by the scheduler whatever we chose), and the core-hours the kills
throw away may be capped too; a killed job still scores limit/run. :class:`LimitCalibrator` (a conformal
margin ``point * exp(t * scale)``) is kept for the unclipped limit and for callers that only hold a point and
a scale.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from .ratio_distribution import LAMBDAS


class LimitChooser:
    """Online choice of the kill price ``lambda`` from what recently finished jobs really did.

    For every finished job we know the limit each lambda would have given it (computed at its submission)
    and its real run time, so for every lambda we know, on the last ``window`` jobs, the share of jobs it
    would have killed, its mean accuracy and the core-hours its kills would have thrown away. The chosen
    lambda is the most accurate one within both targets; when none is, the request (infinite price). No
    probability needs to be calibrated for this: only realised outcomes count, so a model that is
    over-confident on one trace just gets a higher price.

    Only kills the limit *adds* count against ``target_kill``: a job that ran past its own request was killed
    by the scheduler at its request whatever we recommended (counting it would make a trace where 10 % of the
    jobs outrun their requests fall back to the request everywhere). The lost work counts every job stopped
    below its request, and is the share of the window's useful processor-seconds that the killed attempts
    held (``procs`` x limit), which is what a kill costs the machine: ``target_lost`` keeps a price that
    kills few but long, wide jobs from passing on job counts alone. Jobs observed without a size count for
    the kill share and accuracy only.
    """

    def __init__(self, target_kill: float = 0.04, window: int = 3000, min_points: int = 200, refresh: int = 25,
                 target_lost: float | None = None):
        self.target_kill = target_kill
        self.target_lost = target_lost
        self.window = window
        self.min_points = min_points
        self.refresh = refresh
        self._killed = np.zeros((window, len(LAMBDAS)))
        self._accuracy = np.zeros((window, len(LAMBDAS)))
        self._lost = np.zeros((window, len(LAMBDAS)))    # processor-seconds of the killed attempt
        self._useful = np.zeros(window)                  # processor-seconds of the job's real run
        self._n = 0          # jobs observed in all
        self._since = 0
        self._index = len(LAMBDAS) - 1

    @property
    def size(self) -> int:
        return min(self._n, self.window)

    def observe(self, offsets: np.ndarray | None, ratio: float, request_s: float = math.nan,
                procs: float = math.nan) -> None:
        """A job finished: ``offsets`` are its per-lambda limits (log of limit/request) from its submission,
        ``ratio`` = log(run / request); ``request_s`` and ``procs`` size its lost work when it is killed."""
        if offsets is None or ratio != ratio or np.isnan(offsets).any():
            return
        slot = self._n % self.window
        stopped = ratio > offsets + 1e-12
        self._killed[slot] = stopped & (ratio <= 1e-12)
        self._accuracy[slot] = np.exp(-np.abs(offsets - ratio))
        sized = request_s > 0 and procs > 0
        below_request = offsets < -1e-12
        self._lost[slot] = np.where(stopped & below_request, request_s * np.exp(offsets) * procs, 0.0) if sized \
            else 0.0
        self._useful[slot] = request_s * math.exp(ratio) * procs if sized else 0.0
        self._n += 1
        self._since += 1

    def realised(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per lambda, over the window: added-kill share, mean accuracy, lost share of useful work."""
        n = self.size
        useful = self._useful[:n].sum()
        lost = self._lost[:n].sum(axis=0) / useful if useful > 0 else np.zeros(len(LAMBDAS))
        return self._killed[:n].mean(axis=0), self._accuracy[:n].mean(axis=0), lost

    def lambda_index(self) -> int:
        """Index into :data:`LAMBDAS` in force now (the last, the request, until enough jobs finished)."""
        if self.size < self.min_points:
            return len(LAMBDAS) - 1
        if self._since >= self.refresh or self._n == self.min_points:
            self._since = 0
            kill, accuracy, lost = self.realised()
            within = kill <= self.target_kill
            if self.target_lost is not None:
                within &= lost <= self.target_lost
            within[-1] = True
            self._index = int(np.argmax(np.where(within, accuracy, -np.inf)))
        return self._index

    def choose(self, offsets: np.ndarray | None) -> float:
        """log(limit / request) for a job; NaN when there is no choice to make (no options or no data yet)."""
        if offsets is None or self.size < self.min_points:
            return math.nan
        value = float(offsets[self.lambda_index()])
        return value


class LimitCalibrator:
    """Online split-conformal calibration of the time-limit margin.

    Each finished job contributes its normalised residual ``(log run - point_log) / scale`` (computed from the
    prediction made at its submission, so it is out of sample). The margin ``t`` is the smallest value for
    which the recent window would have seen at most ``target_kill`` of jobs killed. For the clipped limit,
    jobs that ran past their own request are killed whatever we do; they use up part of the budget first.
    """

    def __init__(self, target_kill: float = 0.04, window: int = 3000, min_points: int = 200, refresh: int = 25):
        self.target_kill = target_kill
        self.window = window
        self.min_points = min_points
        self.refresh = refresh
        self.residuals: deque[float] = deque(maxlen=window)
        self.over_request: deque[bool] = deque(maxlen=window)
        self._since = 0
        self._t_clip = math.inf
        self._t_free = math.inf

    def observe(self, point_log: float, scale: float, req_log: float, run: float) -> None:
        """A job finished: remember how far above (or below) its prediction it ran."""
        if not (run > 0) or point_log != point_log:
            return
        lr = math.log(max(run, 1.0))
        self.residuals.append((lr - point_log) / scale)
        self.over_request.append(bool(req_log == req_log and lr > req_log))
        self._since += 1

    def _refresh(self) -> None:
        if self._since < self.refresh and self._t_clip != math.inf:
            return
        self._since = 0
        n = len(self.residuals)
        if n < self.min_points:
            self._t_clip = self._t_free = math.inf
            return
        r = np.fromiter(self.residuals, dtype=np.float64, count=n)
        over = np.fromiter(self.over_request, dtype=bool, count=n)
        self._t_free = _margin(r, self.target_kill)
        budget = max(self.target_kill - over.mean(), 0.0)
        rest = r[~over]
        self._t_clip = _margin(rest, budget * n / max(len(rest), 1)) if len(rest) else math.inf

    def thresholds(self) -> tuple[float, float]:
        self._refresh()
        return self._t_clip, self._t_free

    def limit(self, point_log: float, scale: float, req_log: float, cap_log: float = math.nan) -> tuple[float, float]:
        """(clipped, unclipped) limits in seconds. Clipped: never above the request nor the queue cap;
        unclipped: may exceed the request, never the queue cap (the longest limit the cluster grants).

        Without enough calibration data the clipped limit is the request (the safe answer) and the unclipped
        one is NaN where no request is known.
        """
        t_clip, t_free = self.thresholds()
        ceiling = min(req_log if req_log == req_log else math.inf, cap_log if cap_log == cap_log else math.inf)
        free = point_log + t_free * scale if t_free != math.inf else (req_log if req_log == req_log else math.nan)
        if cap_log == cap_log:
            free = min(free, cap_log)
        clipped = point_log + t_clip * scale if t_clip != math.inf else math.inf
        clipped = min(clipped, ceiling)
        if clipped == math.inf:
            clipped = free
        return math.exp(clipped) if clipped == clipped else math.nan, math.exp(free) if free == free else math.nan


def _margin(residuals: np.ndarray, kill_share: float) -> float:
    """Smallest t with share(residual > t) <= kill_share."""
    if kill_share <= 0:
        return float(residuals.max())
    return float(np.quantile(residuals, 1.0 - min(kill_share, 1.0), method="higher"))
