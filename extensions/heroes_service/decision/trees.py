"""Boosted regression trees as plain arrays, walked by our own code.

Why: a model file that anyone but us could have written must never be unpickled, so saved predictors hold only
numeric arrays (:mod:`.model_store`); and scikit-learn's per-call overhead (input validation, OpenMP thread
pools) costs milliseconds for one row, so the service walks the fitted trees itself (:class:`FlatForest`: every
tree of every model at once, one vectorised step per depth level). Both walks follow scikit-learn's histogram
trees exactly (missing values go where ``missing_left`` says; otherwise ``x <= threshold`` goes left).
"""
from __future__ import annotations

import numpy as np


class ModelStoreError(Exception):
    """The file is not a model :mod:`.model_store` wrote (or it is damaged); nothing in it was executed."""


class PortableEnsemble:
    """A boosted regression-tree ensemble as flat arrays: ``baseline + sum of the trees' leaf values``.

    Nodes of all trees are concatenated; ``roots`` holds each tree's first node. Missing values (NaN) follow
    ``missing_left`` exactly as scikit-learn's histogram trees do; otherwise ``x <= threshold`` goes left.
    """

    FIELDS = ("feature", "threshold", "missing_left", "left", "right", "is_leaf", "value")

    def __init__(self, baseline: float, roots: np.ndarray, feature: np.ndarray, threshold: np.ndarray,
                 missing_left: np.ndarray, left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray,
                 value: np.ndarray):
        self.baseline = float(baseline)
        self.roots = roots.astype(np.int64)
        self.feature = feature.astype(np.int64)
        self.threshold = threshold.astype(np.float64)
        self.missing_left = missing_left.astype(bool)
        self.left = left.astype(np.int64)
        self.right = right.astype(np.int64)
        self.is_leaf = is_leaf.astype(bool)
        self.value = value.astype(np.float64)
        self._check()

    def _check(self) -> None:
        n = len(self.feature)
        if not all(len(getattr(self, f)) == n for f in self.FIELDS):
            raise ModelStoreError("tree arrays of different lengths")
        inner = ~self.is_leaf
        for name in ("left", "right"):
            child = getattr(self, name)[inner]
            if child.size and (child.min() < 0 or child.max() >= n):
                raise ModelStoreError("a tree node points outside the tree")
        if self.roots.size and (self.roots.min() < 0 or self.roots.max() >= n):
            raise ModelStoreError("a tree root points outside the tree")

    @classmethod
    def from_sklearn(cls, model, output: int | None = None) -> "PortableEnsemble":
        """Flatten a fitted histogram gradient-boosting model (numeric features only).

        ``output=None``: a single-output model (a regressor). ``output=k``: the raw score of the k-th tree of
        every iteration, i.e. one class of a multiclass classifier (or the logit of a binary one, k=0).
        """
        parts, roots, offset = [], [], 0
        for iteration in model._predictors:
            for tree in (iteration if output is None else [iteration[output]]):
                nodes = tree.nodes
                if np.any(nodes["is_categorical"]):
                    raise ModelStoreError("categorical splits are not supported by the portable format")
                roots.append(offset)
                leaf = nodes["is_leaf"].astype(bool)
                left = np.where(leaf, 0, nodes["left"].astype(np.int64) + offset)
                right = np.where(leaf, 0, nodes["right"].astype(np.int64) + offset)
                feature = np.where(leaf, 0, nodes["feature_idx"].astype(np.int64))
                parts.append((feature, nodes["num_threshold"], nodes["missing_go_to_left"],
                              left, right, leaf, nodes["value"]))
                offset += len(nodes)
        arrays = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(7)]
        baseline = float(np.ravel(model._baseline_prediction)[0 if output is None else output])
        return cls(baseline, np.array(roots, dtype=np.int64), *arrays)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Walk every tree for every row at once (depth-many vectorised steps)."""
        X = np.atleast_2d(X)
        if not len(self.roots):
            return np.full(len(X), self.baseline)
        idx = np.broadcast_to(self.roots, (len(X), len(self.roots))).copy()
        rows = np.arange(len(X))[:, None]
        while True:
            inner = ~self.is_leaf[idx]
            if not inner.any():
                break
            x = X[rows, self.feature[idx]]
            go_left = np.where(np.isnan(x), self.missing_left[idx], x <= self.threshold[idx])
            nxt = np.where(go_left, self.left[idx], self.right[idx])
            idx = np.where(inner, nxt, idx)
        return self.baseline + self.value[idx].sum(axis=1)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}roots": self.roots}
        out.update({f"{prefix}{f}": getattr(self, f) for f in self.FIELDS})
        return out


class FlatForest:
    """Several boosted-tree models evaluated together on one row (see module doc for why)."""

    def __init__(self, ensembles: list[PortableEnsemble]):
        parts, roots, starts, offset, trees = [], [], [], 0, 0
        for ens in ensembles:
            starts.append(trees)
            roots.append(ens.roots + offset)
            parts.append(ens)
            trees += len(ens.roots)
            offset += len(ens.feature)
        cat = (lambda name: np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0))
        self.feature, self.threshold = cat("feature"), cat("threshold")
        self.missing_left, self.is_leaf = cat("missing_left").astype(bool), cat("is_leaf").astype(bool)
        shift = np.concatenate([np.full(len(p.feature), sum(len(q.feature) for q in parts[:k]))
                                for k, p in enumerate(parts)]) if parts else np.zeros(0, dtype=np.int64)
        self.left = np.where(self.is_leaf, 0, cat("left") + shift).astype(np.int64) if parts else np.zeros(0, int)
        self.right = np.where(self.is_leaf, 0, cat("right") + shift).astype(np.int64) if parts else np.zeros(0, int)
        # from_sklearn already offsets children within one ensemble; shift moves them past earlier ensembles
        self.value = cat("value")
        self.roots = np.concatenate(roots).astype(np.int64) if roots else np.zeros(0, dtype=np.int64)
        self.starts = np.array(starts, dtype=np.int64)
        self.baselines = np.array([e.baseline for e in ensembles], dtype=np.float64)
        self.empty = np.array([len(e.roots) == 0 for e in ensembles], dtype=bool)

    @classmethod
    def from_models(cls, models: list) -> "FlatForest":
        return cls([m if isinstance(m, PortableEnsemble) else PortableEnsemble.from_sklearn(m) for m in models])

    def predict_row(self, x: np.ndarray) -> np.ndarray:
        """One output per model for the single feature row ``x``."""
        if not len(self.roots):
            return self.baselines.copy()
        idx = self.roots.copy()
        while True:
            inner = ~self.is_leaf[idx]
            if not inner.any():
                break
            v = x[self.feature[idx]]
            go_left = np.where(np.isnan(v), self.missing_left[idx], v <= self.threshold[idx])
            idx = np.where(inner, np.where(go_left, self.left[idx], self.right[idx]), idx)
        sums = np.add.reduceat(self.value[idx], self.starts) if len(self.starts) else np.zeros(0)
        sums = np.where(self.empty, 0.0, sums)
        return self.baselines + sums
