"""Run-time prediction and time-limit recommendation.

Point prediction ("which of the obvious guesses fits this job?"). Simple history guesses are strong on real
traces: the last run of the user's same-shaped job, the median of the user's recent runs, their usual
run/request ratio applied to this request, the request itself... No single one wins everywhere, and the metric
we care about, accuracy = min(P/R, R/P) = exp(-|log P - log R|), rewards hitting one exactly rather than
averaging them. So for every candidate guess a gradient-boosted regressor learns the accuracy that candidate
will have for a job with these features, and the predictor answers with the candidate of highest expected
accuracy. Learning "how good is each guess" is generic: it adapts to whatever habits a trace's users have.
Once the outcome distribution below is fitted, each candidate's score is the 2:1 mean of its regressor's
estimate and the expected accuracy the distribution implies for that guess (two models of one quantity).

Time limit (a per-job risk choice). A point prediction is wrong half the time, so the limit needs a picture
of the whole outcome: :class:`RatioDistribution` learns, per job, the probability that the run ends in each
bin of log(run / request) (a multiclass boosted classifier; each bin keeps the residuals it saw, so the
distribution inside a bin is the empirical one). For every candidate limit ``request * exp(c)`` (``c <= 0``,
a fine grid, the request itself included) that gives the expected accuracy ``E[min(L/R, R/L)]`` and the
probability of killing the job ``P(R > L)``. The limit maximises ``E[accuracy] - lambda * P(kill)``: a job
that usually fails at once but sometimes runs long keeps its request, a job that reliably repeats gets a
tight limit. ``lambda`` prices a kill; :class:`LimitChooser` sets it online from the realised outcomes of
recently finished jobs (for each lambda of a grid it knows which limit each job would have received and
whether that limit would have killed it), taking the most accurate lambda whose realised kill share stays at
the target. Only kills the limit adds count (a job that outran its own request was killed by the scheduler
whatever we chose), and the core-hours the kills throw away may be capped too; a killed job still scores
limit/run. :class:`LimitCalibrator` (a conformal margin ``point * exp(t * scale)``) is
kept for the unclipped limit and for callers that only hold a point and a scale.
"""
from __future__ import annotations

import math
import warnings
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from .features import FEATURE_NAMES
from .trees import PortableEnsemble

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

# Bins of log(run / request) for the outcome distribution: finer near 0 (jobs that use their whole request)
# and wide in the early-failure tail; the last bin holds the jobs that outran their request.
RATIO_EDGES = np.array([-6.0, -4.5, -3.5, -2.5, -1.8, -1.2, -0.8, -0.5, -0.3, -0.15, -0.05, 0.02])
BIN_SAMPLES = 200   # quantiles kept per bin: the empirical shape of the outcome inside a bin
# Candidate limits as log(limit / request): a 5 % grid below the request (the request itself is always added).
OFFSET_GRID = np.round(np.arange(-12.0, -0.0249, 0.05), 10)
FINE_GRID = np.round(np.arange(-14.0, 2.0001, 0.01), 10)   # for the expected accuracy of a point guess
# Prices of a kill, in units of accuracy; the last (infinite) one always answers the request.
LAMBDAS = np.concatenate([np.geomspace(0.1, 200.0, 28), [np.inf]])


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


class RatioDistribution:
    """P(log(run / request) falls in each bin | job features), and the limit options that follow from it.

    A multiclass boosted classifier gives the bin probabilities; each bin keeps :data:`BIN_SAMPLES`
    quantiles of the ratios it saw in training, so expected accuracy and kill probability of a candidate
    limit are exact mixtures of empirical shapes (a bin that mostly holds exact repeats of the request is
    not smeared over its width). The classifier is converted to flat tree arrays right after fitting, so a
    saved and loaded model computes with the very same code.
    """

    def __init__(self, edges: np.ndarray = RATIO_EDGES, max_iter: int = 40, learning_rate: float = 0.15,
                 max_leaf_nodes: int = 15, min_samples_leaf: int = 40, seed: int = 0):
        self.edges = np.asarray(edges, dtype=np.float64)
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed
        self.class_models: list = []   # per bin: a PortableEnsemble (raw score) or a float constant
        self.samples = np.zeros((self.n_bins, BIN_SAMPLES))
        self._curves: tuple[np.ndarray, np.ndarray] | None = None
        self._fine: np.ndarray | None = None

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def bins(self, ratio: np.ndarray) -> np.ndarray:
        """Bin index of each log ratio: bin b holds edges[b-1] < r <= edges[b]."""
        return np.searchsorted(self.edges, ratio, side="left")

    def fit(self, D: np.ndarray, ratio: np.ndarray) -> "RatioDistribution":
        y = self.bins(ratio)
        self.samples = self._bin_samples(ratio, y)
        self._curves = self._fine = None
        present = np.unique(y)
        models: list = [-math.inf] * self.n_bins   # never seen: probability 0
        if len(present) == 1:
            models[int(present[0])] = 0.0
        else:
            model = HistGradientBoostingClassifier(
                max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf, early_stopping=False, random_state=self.seed).fit(D, y)
            if len(present) == 2:   # one logistic tree per iteration: softmax([0, raw]) is the same sigmoid
                models[int(model.classes_[0])] = 0.0
                models[int(model.classes_[1])] = PortableEnsemble.from_sklearn(model, 0)
            else:
                for k, cls in enumerate(model.classes_):
                    models[int(cls)] = PortableEnsemble.from_sklearn(model, k)
        self.class_models = models
        return self

    def _bin_samples(self, ratio: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.empty((self.n_bins, BIN_SAMPLES))
        levels = np.linspace(0.0, 1.0, BIN_SAMPLES)
        for b in range(self.n_bins):
            seen = ratio[y == b]
            if len(seen):
                out[b] = np.quantile(seen, levels)
            else:   # a bin no job fell in (its probability is 0): its middle, for a well-defined curve
                lo = self.edges[b - 1] if b > 0 else self.edges[0] - 1.0
                hi = self.edges[b] if b < len(self.edges) else self.edges[-1] + 1.0
                out[b] = 0.5 * (lo + hi)
        return out

    def proba(self, D: np.ndarray) -> np.ndarray:
        """(n, n_bins) bin probabilities."""
        raw = np.empty((len(D), self.n_bins))
        for b, model in enumerate(self.class_models):
            raw[:, b] = model if isinstance(model, float) else model.predict(D)
        raw -= raw.max(axis=1, keepdims=True)
        e = np.exp(raw)
        return e / e.sum(axis=1, keepdims=True)

    def curves(self) -> tuple[np.ndarray, np.ndarray]:
        """Per bin, on :data:`OFFSET_GRID`: expected accuracy of that limit and probability it kills."""
        if self._curves is None:
            diff = OFFSET_GRID[None, :, None] - self.samples[:, None, :]
            accuracy = np.exp(-np.abs(diff)).mean(axis=2)
            kill = (diff < 0).mean(axis=2)
            self._curves = (accuracy, kill)
        return self._curves

    def _at(self, P: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected accuracy and kill probability of one limit per job (any offset, not only the grid)."""
        diff = offset[:, None, None] - self.samples[None, :, :]
        accuracy = (P * np.exp(-np.abs(diff)).mean(axis=2)).sum(axis=1)
        kill = (P * (diff < 0).mean(axis=2)).sum(axis=1)
        return accuracy, kill

    def limit_offsets(self, D: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
        """(n, len(LAMBDAS)) chosen log(limit/request) for every kill price; the limit never passes ``ceiling``
        (0 = the request, less when the queue's cap is lower). NaN rows where ``ceiling`` is NaN."""
        return self.limit_offsets_from(self.proba(D), ceiling)

    def limit_offsets_from(self, P: np.ndarray, ceiling: np.ndarray, block: int = 1024) -> np.ndarray:
        """:meth:`limit_offsets` from bin probabilities already computed."""
        out = np.full((len(P), len(LAMBDAS)), np.nan)
        rows = np.flatnonzero(~np.isnan(ceiling))
        for start in range(0, len(rows), block):   # blocks bound the (rows x bins x samples) temporaries
            part = rows[start:start + block]
            out[part] = self._choose(P[part], ceiling[part])
        return out

    def expected_accuracy(self, P: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """E[min(G/R, R/G)] of guesses ``request * exp(offsets)`` (any shape (n, k)), from a fine curve per bin."""
        if self._fine is None:
            diff = FINE_GRID[None, :, None] - self.samples[:, None, :]
            self._fine = np.exp(-np.abs(diff)).mean(axis=2)
        out = np.zeros(offsets.shape)
        for b in range(self.n_bins):
            out += P[:, b:b + 1] * np.interp(offsets, FINE_GRID, self._fine[b])
        return out

    def _choose(self, P: np.ndarray, top: np.ndarray) -> np.ndarray:
        grid_acc, grid_kill = self.curves()
        acc = P @ grid_acc
        kill = P @ grid_kill
        acc = np.where(OFFSET_GRID[None, :] < top[:, None] - 1e-9, acc, -np.inf)   # above the ceiling: not allowed
        top_acc, top_kill = self._at(P, top)
        acc = np.hstack([acc, top_acc[:, None]])
        kill = np.hstack([kill, top_kill[:, None]])
        offsets = np.append(OFFSET_GRID, np.nan)
        chosen = np.empty((len(P), len(LAMBDAS)))
        for j, lam in enumerate(LAMBDAS):
            if lam == np.inf:
                chosen[:, j] = top
                continue
            k = np.argmax(acc - lam * kill, axis=1)
            chosen[:, j] = np.where(k == len(OFFSET_GRID), top, offsets[np.minimum(k, len(OFFSET_GRID) - 1)])
        return chosen


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
