"""Run-time prediction: which of the obvious guesses fits this job?

Simple history guesses are strong on real traces: the last run of the user's same-shaped job, the median of
the user's recent runs, their usual run/request ratio applied to this request, the request itself... No
single one wins everywhere, and the metric we care about, accuracy = min(P/R, R/P) = exp(-|log P - log R|),
rewards hitting one exactly rather than averaging them. So for every candidate guess a gradient-boosted
regressor learns the accuracy that candidate will have for a job with these features, and the predictor
answers with the candidate of highest expected accuracy. Learning "how good is each guess" is generic: it
adapts to whatever habits a trace's users have. Once the outcome distribution
(:mod:`.ratio_distribution`) is fitted, each candidate's score is the 2:1 mean of its regressor's estimate
and the expected accuracy the distribution implies for that guess (two models of one quantity), and the
prediction carries the limit options the distribution gives; :mod:`.time_limits` picks among them online.

The outcome distribution's and the limit choosers' names are re-exported here, where callers of the
predictor have always imported them.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from .features import FEATURE_NAMES
from .ratio_distribution import BIN_SAMPLES, FINE_GRID, LAMBDAS, OFFSET_GRID, RATIO_EDGES, RatioDistribution
from .time_limits import LimitCalibrator, LimitChooser

__all__ = ["BIN_SAMPLES", "CANDIDATES", "FINE_GRID", "LAMBDAS", "N_CANDIDATES", "OFFSET_GRID", "RATIO_EDGES",
           "LimitCalibrator", "LimitChooser", "Prediction", "RatioDistribution", "RuntimePredictor",
           "candidate_matrix", "candidate_spread", "log_request"]

_F = {name: i for i, name in enumerate(FEATURE_NAMES)}

# The guesses the predictor chooses among (log run times: feature columns, or simple combinations of them
# in DERIVED); the request is the last.
CANDIDATES = ("s_last1", "s_med", "s_max", "u_last1", "u_last2", "u_mean2", "u_med", "u_ratio_pred", "u_max",
              "e_last1", "g_med", "gl_med", "r_last1", "r_med", "p_last1", "p_med", "u_last1_scaled",
              "u_last3", "u_min", "u_geo2", "gl_ratio_pred")
DERIVED = {
    "u_geo2": lambda X, req_log: 0.5 * (X[:, _F["u_last1"]] + X[:, _F["u_last2"]]),   # geometric mean of last 2
    "gl_ratio_pred": lambda X, req_log: X[:, _F["gl_ratio_med"]] + req_log,   # everyone's recent ratio
}
N_CANDIDATES = len(CANDIDATES) + 1
SCALE_FLOOR = 0.05  # log units: even a perfectly regular job gets a few percent of margin

RARE_CANDIDATE = 0.01   # known for fewer than 1 % of the training jobs: not worth a model
NEVER = -1.0            # the score of a candidate that is never chosen (real scores are accuracies >= 0)


def log_request(req_time: np.ndarray) -> np.ndarray:
    """log of the requested time, NaN where unknown or non-positive."""
    req = np.asarray(req_time, dtype=np.float64)
    out = np.full(req.shape, np.nan)
    ok = req > 0
    out[ok] = np.log(req[ok])
    return out


def candidate_guesses(X: np.ndarray, req_log: np.ndarray) -> list[np.ndarray]:
    """Each candidate's raw guess (log s; NaN where the history does not provide it), in CANDIDATES order."""
    return [DERIVED[name](X, req_log) if name in DERIVED else X[:, _F[name]] for name in CANDIDATES]


def candidate_matrix(X: np.ndarray, req_log: np.ndarray) -> np.ndarray:
    """(n, N_CANDIDATES) log run-time guesses, each capped at the request.

    A guess that is unknown (no history of that kind yet) falls back to the request; where the request is
    unknown too, to the global recent median, and failing all history to one hour (a neutral default only
    used for the very first jobs of an empty history).
    """
    C = np.stack(candidate_guesses(X, req_log) + [req_log], axis=1)
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
        known = ~np.isnan(X[:, _F[CANDIDATES[k]]])   # these three are plain feature columns
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
    limit_offsets: np.ndarray | None = None   # (n, len(LAMBDAS)) log(limit/request) per kill price; NaN rows
                                              # where the request is unknown (see :class:`LimitChooser`)

    @property
    def point_s(self) -> np.ndarray:
        return np.exp(self.point_log)


class RuntimePredictor:
    """Chooses, per job, the history-based guess with the highest expected accuracy (see module doc)."""

    def __init__(self, max_iter: int = 60, learning_rate: float = 0.15, max_leaf_nodes: int = 15,
                 min_samples_leaf: int = 50, min_train: int = 200, max_train: int = 60000, seed: int = 0,
                 n_threads: int = 1, dist_iter: int = 40, dist_learning_rate: float = 0.15,
                 dist_leaf_nodes: int = 15, dist_min_leaf: int = 40):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.min_train = min_train
        self.max_train = max_train
        self.seed = seed
        self.n_threads = n_threads
        self.dist_iter = dist_iter
        self.dist_learning_rate = dist_learning_rate
        self.dist_leaf_nodes = dist_leaf_nodes
        self.dist_min_leaf = dist_min_leaf
        self.distribution: RatioDistribution | None = None   # outcome model for the time limit
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
        self.distribution = None
        if self.n_train < self.min_train:
            return self
        req_log = log_request(req_time)
        C = candidate_matrix(X, req_log)
        D = self.design(X, C, req_log)
        self.columns = usable_columns(D)
        Dc = D[:, self.columns]
        acc = np.exp(-np.abs(C - np.log(np.maximum(run, 1.0))[:, None]))
        rare = [k for k, guess in enumerate(candidate_guesses(X, req_log)) if np.mean(~np.isnan(guess)) < RARE_CANDIDATE]
        with _quiet_threads(self.n_threads):
            self._fit_candidates(Dc, acc, skip=rare)
            ratio = np.log(np.maximum(run, 1.0)) - req_log
            known = ~np.isnan(ratio)
            if known.sum() >= self.min_train:
                self.distribution = RatioDistribution(
                    max_iter=self.dist_iter, learning_rate=self.dist_learning_rate,
                    max_leaf_nodes=self.dist_leaf_nodes, min_samples_leaf=self.dist_min_leaf,
                    seed=self.seed).fit(Dc[known], ratio[known])
        return self

    def _fit_candidates(self, Dc: np.ndarray, acc: np.ndarray, skip=()) -> None:
        """One accuracy regressor per candidate. A candidate the history almost never provides (say, no
        executable ids in the trace) would only repeat its fallback, the request: it gets a constant score
        below any real one instead of a model, so it is never chosen and costs no fitting time."""
        for k in range(N_CANDIDATES):
            if k in skip:
                self.models.append(NEVER)
                continue
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

    def predict(self, X: np.ndarray, req_time: np.ndarray, cap_time: np.ndarray | float | None = None) -> Prediction:
        """Point, scale and (once fitted with enough jobs) the per-job limit options.

        ``cap_time``: the longest limit the queue grants (seconds); limits never exceed it nor the request.
        """
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        req_log = log_request(np.atleast_1d(req_time))
        C = candidate_matrix(X, req_log)
        if not self.fitted:
            point = _heuristic_choice(X, C)
            spread = np.nanstd(C, axis=1)
            return Prediction(point, np.maximum(spread, SCALE_FLOOR), None)
        D = self.design(X, C, req_log)
        S = self.scores(D)
        offsets = None
        if self.distribution is not None:
            cap_log = np.full(len(X), np.nan) if cap_time is None else log_request(
                np.broadcast_to(np.asarray(cap_time, dtype=np.float64), (len(X),)))
            ceiling = np.minimum(np.where(np.isnan(cap_log), 0.0, cap_log - req_log), 0.0)
            ceiling = np.where(np.isnan(req_log), np.nan, ceiling)
            with _quiet_threads(self.n_threads):
                P = self.distribution.proba(D[:, self.columns])
            offsets = self.distribution.limit_offsets_from(P, ceiling)
            S = self._blend(S, P, C, req_log)
        point = C[np.arange(len(C)), S.argmax(axis=1)]
        return Prediction(point, candidate_spread(C, S), S, offsets)

    def _blend(self, S: np.ndarray, P: np.ndarray, C: np.ndarray, req_log: np.ndarray) -> np.ndarray:
        """Average the regressors' accuracy estimate of each candidate with the one the outcome distribution
        implies (two different models of the same quantity: their mean errs less than either). Weights 2:1,
        the regressors being specific to each candidate; rows without a request keep the regressors' scores."""
        known = ~np.isnan(req_log)
        if not known.any():
            return S
        implied = self.distribution.expected_accuracy(P[known], C[known] - req_log[known, None])
        out = S.copy()
        blended = (2.0 * S[known] + implied) / 3.0
        never = np.array([isinstance(m, float) and m == NEVER for m in self.models])
        blended[:, never] = NEVER
        out[known] = blended
        return out


def candidate_spread(C: np.ndarray, S: np.ndarray) -> np.ndarray:
    """How much the candidates disagree, weighting each by its expected accuracy (log units, floored)."""
    w = np.clip(S, 0.0, None)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / C.shape[1])
    mu = (w * C).sum(axis=1)
    sd = np.sqrt((w * (C - mu[:, None]) ** 2).sum(axis=1))
    return np.maximum(sd, SCALE_FLOOR)
