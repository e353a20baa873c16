"""The outcome distribution a time limit is chosen from: P(log(run / request) in each bin | job).

A point prediction is wrong half the time, so the limit needs a picture of the whole outcome:
:class:`RatioDistribution` learns, per job, the probability that the run ends in each bin of
log(run / request) (a multiclass boosted classifier; each bin keeps the residuals it saw, so the distribution
inside a bin is the empirical one). For every candidate limit ``request * exp(c)`` (``c <= 0``, a fine grid,
the request itself included) that gives the expected accuracy ``E[min(L/R, R/L)]`` and the probability of
killing the job ``P(R > L)``. The limit maximises ``E[accuracy] - lambda * P(kill)``: a job that usually fails
at once but sometimes runs long keeps its request, a job that reliably repeats gets a tight limit. ``lambda``
prices a kill; which price is in force is chosen online from realised outcomes (``time_limits.LimitChooser``),
so this module gives one limit per price of :data:`LAMBDAS`.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from .trees import PortableEnsemble

# Bins of log(run / request) for the outcome distribution: finer near 0 (jobs that use their whole request)
# and wide in the early-failure tail; the last bin holds the jobs that outran their request.
RATIO_EDGES = np.array([-6.0, -4.5, -3.5, -2.5, -1.8, -1.2, -0.8, -0.5, -0.3, -0.15, -0.05, 0.02])
BIN_SAMPLES = 200   # quantiles kept per bin: the empirical shape of the outcome inside a bin
# Candidate limits as log(limit / request): a 5 % grid below the request (the request itself is always added).
OFFSET_GRID = np.round(np.arange(-12.0, -0.0249, 0.05), 10)
FINE_GRID = np.round(np.arange(-14.0, 2.0001, 0.01), 10)   # for the expected accuracy of a point guess
# Prices of a kill, in units of accuracy; the last (infinite) one always answers the request.
LAMBDAS = np.concatenate([np.geomspace(0.1, 200.0, 28), [np.inf]])


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
