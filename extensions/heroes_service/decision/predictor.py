"""Run-time prediction and time-limit recommendation.

Point prediction ("which of the obvious guesses fits this job?"). Simple history guesses are strong on real
traces: the last run of the user's same-shaped job, the median of the user's recent runs, their usual
run/request ratio applied to this request, the request itself... No single one wins everywhere, and the metric
we care about, accuracy = min(P/R, R/P) = exp(-|log P - log R|), rewards hitting one exactly rather than
averaging them. So for every candidate guess a gradient-boosted regressor learns the accuracy that candidate
will have for a job with these features, and the predictor answers with the candidate of highest expected
accuracy. Learning "how good is each guess" is generic: it adapts to whatever habits a trace's users have.

Time limit (a calibrated upper quantile). The limit is ``point * exp(t * scale)``: ``scale`` is this job's
uncertainty (how much the candidates disagree, weighted by their expected accuracy) and ``t`` is set online
by split-conformal calibration on the most recent finished jobs so that the share of jobs the limit would
have killed stays at the target. The default limit is never above the job's request (what a scheduler
accepts); the unclipped variant is computed too, for clusters that allow extending a request.
"""
from __future__ import annotations

import math
import warnings
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from .features import FEATURE_NAMES

_F = {name: i for i, name in enumerate(FEATURE_NAMES)}

# The guesses the predictor chooses among (feature columns holding a log run time); the request is the last.
CANDIDATES = ("s_last1", "s_med", "s_max", "u_last1", "u_last2", "u_mean2", "u_med", "u_ratio_pred", "u_max",
              "e_last1", "g_med", "gl_med", "r_last1", "r_med", "p_last1", "p_med", "u_last1_scaled")
N_CANDIDATES = len(CANDIDATES) + 1
SCALE_FLOOR = 0.05  # log units: even a perfectly regular job gets a few percent of margin


def log_request(req_time: np.ndarray) -> np.ndarray:
    """log of the requested time, NaN where unknown or non-positive."""
    req = np.asarray(req_time, dtype=np.float64)
    out = np.full(req.shape, np.nan)
    ok = req > 0
    out[ok] = np.log(req[ok])
    return out


def candidate_matrix(X: np.ndarray, req_log: np.ndarray) -> np.ndarray:
    """(n, N_CANDIDATES) log run-time guesses, each capped at the request.

    A guess that is unknown (no history of that kind yet) falls back to the request; where the request is
    unknown too, to the global recent median, and failing all history to one hour (a neutral default only
    used for the very first jobs of an empty history).
    """
    cols = [X[:, _F[name]] for name in CANDIDATES]
    C = np.stack(cols + [req_log], axis=1)
    fallback = np.where(np.isnan(req_log), X[:, _F["gl_med"]], req_log)
    fallback = np.where(np.isnan(fallback), math.log(3600.0), fallback)
    C = np.where(np.isnan(C), fallback[:, None], C)
    capped = np.minimum(C, req_log[:, None])
    return np.where(np.isnan(capped), C, capped)


def _heuristic_choice(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Before any model exists: same-shape last run, else ratio-to-request guess, else the user's last run."""
    order = [CANDIDATES.index(n) for n in ("s_last1", "u_ratio_pred", "u_last1")]
    out = C[:, -1].copy()
    for k in reversed(order):
        known = ~np.isnan(X[:, _F[CANDIDATES[k]]])
        out = np.where(known, C[:, k], out)
    return out


@contextmanager
def _quiet_threads(n_threads: int):
    """Cap OpenMP threads while fitting/predicting.

    On a small shared machine OpenMP workers that busy-wait for each other make histogram boosting 40x
    slower as soon as another process wants the cores; one or two threads are predictable. The warning
    filtered here is scikit-learn's notice about its thread pool configuration, not about our data.
    """
    with threadpool_limits(limits=n_threads, user_api="openmp"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*sklearn.utils.parallel.delayed.*")
        yield


def usable_columns(X: np.ndarray) -> np.ndarray:
    """Columns with at least two distinct known values (others carry no information, and all-NaN columns
    break the histogram binning)."""
    keep = []
    for j in range(X.shape[1]):
        col = X[:, j]
        col = col[~np.isnan(col)]
        if col.size and col.min() != col.max():
            keep.append(j)
    return np.array(keep, dtype=np.int64)


@dataclass
class Prediction:
    """Per-job outputs in log seconds (``point_log``) and seconds (``point_s``), plus the uncertainty scale."""

    point_log: np.ndarray
    scale: np.ndarray
    scores: np.ndarray | None = None

    @property
    def point_s(self) -> np.ndarray:
        return np.exp(self.point_log)


class RuntimePredictor:
    """Chooses, per job, the history-based guess with the highest expected accuracy (see module doc)."""

    def __init__(self, max_iter: int = 60, learning_rate: float = 0.15, max_leaf_nodes: int = 31,
                 min_samples_leaf: int = 20, min_train: int = 200, max_train: int = 60000, seed: int = 0, n_threads: int = 1):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.min_train = min_train
        self.max_train = max_train
        self.seed = seed
        self.n_threads = n_threads
        self.models: list = []          # one regressor (or portable ensemble) per candidate, or a constant
        self.columns = np.zeros(0, dtype=np.int64)
        self.n_train = 0

    @property
    def fitted(self) -> bool:
        return bool(self.models)

    @staticmethod
    def design(X: np.ndarray, C: np.ndarray, req_log: np.ndarray) -> np.ndarray:
        """Model input: the features plus every candidate relative to the request (how tight each guess is)."""
        rel = C - np.where(np.isnan(req_log), C[:, -1], req_log)[:, None]
        return np.hstack([X, rel])

    def fit(self, X: np.ndarray, req_time: np.ndarray, run: np.ndarray) -> "RuntimePredictor":
        """Learn each candidate's accuracy from finished jobs (rows with a known run time > 0)."""
        run = np.asarray(run, dtype=np.float64)
        ok = run > 0
        X, req_time, run = X[ok], np.asarray(req_time)[ok], run[ok]
        if len(run) > self.max_train:  # the most recent jobs describe current habits best
            X, req_time, run = X[-self.max_train:], req_time[-self.max_train:], run[-self.max_train:]
        self.n_train = len(run)
        self.models = []
        if self.n_train < self.min_train:
            return self
        req_log = log_request(req_time)
        C = candidate_matrix(X, req_log)
        D = self.design(X, C, req_log)
        self.columns = usable_columns(D)
        Dc = D[:, self.columns]
        acc = np.exp(-np.abs(C - np.log(np.maximum(run, 1.0))[:, None]))
        with _quiet_threads(self.n_threads):
            self._fit_candidates(Dc, acc)
        return self

    def _fit_candidates(self, Dc: np.ndarray, acc: np.ndarray) -> None:
        for k in range(N_CANDIDATES):
            target = acc[:, k]
            if target.min() == target.max():
                self.models.append(float(target[0]))
                continue
            model = HistGradientBoostingRegressor(
                loss="squared_error", max_iter=self.max_iter, learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes, min_samples_leaf=self.min_samples_leaf,
                early_stopping=False, random_state=self.seed)
            self.models.append(model.fit(Dc, target))

    def scores(self, D: np.ndarray) -> np.ndarray:
        """Expected accuracy of every candidate, (n, N_CANDIDATES)."""
        Dc = D[:, self.columns]
        out = np.empty((len(D), N_CANDIDATES))
        with _quiet_threads(self.n_threads):
            for k, model in enumerate(self.models):
                out[:, k] = model if isinstance(model, float) else model.predict(Dc)
        return out

    def predict(self, X: np.ndarray, req_time: np.ndarray) -> Prediction:
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        req_log = log_request(np.atleast_1d(req_time))
        C = candidate_matrix(X, req_log)
        if not self.fitted:
            point = _heuristic_choice(X, C)
            spread = np.nanstd(C, axis=1)
            return Prediction(point, np.maximum(spread, SCALE_FLOOR), None)
        S = self.scores(self.design(X, C, req_log))
        point = C[np.arange(len(C)), S.argmax(axis=1)]
        return Prediction(point, candidate_spread(C, S), S)


def candidate_spread(C: np.ndarray, S: np.ndarray) -> np.ndarray:
    """How much the candidates disagree, weighting each by its expected accuracy (log units, floored)."""
    w = np.clip(S, 0.0, None)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / C.shape[1])
    mu = (w * C).sum(axis=1)
    sd = np.sqrt((w * (C - mu[:, None]) ** 2).sum(axis=1))
    return np.maximum(sd, SCALE_FLOOR)


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
