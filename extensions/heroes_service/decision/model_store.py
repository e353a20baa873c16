"""Save and load fitted predictors without pickle.

A pickle file executes code when loaded, so a model file that anyone but us could have written must never
be unpickled. We store a fitted :class:`~.predictor.RuntimePredictor` as one ``.npz`` archive holding only
plain numeric arrays (each tree's nodes: feature, threshold, missing-goes-left, children, leaf values) and a
JSON document of parameters, and read it back with ``allow_pickle=False``. Loaded models predict with our own
tree walk (:class:`PortableEnsemble`), so loading needs neither pickle nor scikit-learn's private classes.
"""
from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from .predictor import BIN_SAMPLES, N_CANDIDATES, RatioDistribution, RuntimePredictor

FORMAT = "heroes-runtime-predictor"
VERSION = 2   # 2: more candidate guesses, and the outcome distribution behind the time limit (retrain v1 files)


class ModelStoreError(Exception):
    """The file is not a model this module wrote (or it is damaged); nothing in it was executed."""


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


def save_predictor(predictor: RuntimePredictor, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``predictor`` to ``path`` (.npz) with numeric arrays and a JSON header only."""
    path = Path(path)
    meta = {
        "format": FORMAT, "version": VERSION, "n_train": predictor.n_train,
        "params": {k: getattr(predictor, k) for k in ("max_iter", "learning_rate", "max_leaf_nodes",
                                                      "min_samples_leaf", "min_train", "max_train", "seed",
                                                      "n_threads", "dist_iter", "dist_learning_rate",
                                                      "dist_leaf_nodes", "dist_min_leaf")},
        "models": [], "extra": extra or {}, "distribution": None,
    }
    arrays: dict[str, np.ndarray] = {"columns": predictor.columns.astype(np.int64)}
    for k, model in enumerate(predictor.models):
        if isinstance(model, float):
            meta["models"].append({"kind": "constant", "value": model})
            continue
        ensemble = model if isinstance(model, PortableEnsemble) else PortableEnsemble.from_sklearn(model)
        meta["models"].append({"kind": "trees", "baseline": ensemble.baseline})
        arrays.update(ensemble.arrays(f"m{k}_"))
    if predictor.distribution is not None:
        meta["distribution"] = _distribution_parts(predictor.distribution, arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def load_predictor(path: str | Path) -> tuple[RuntimePredictor, dict]:
    """Read a predictor written by :func:`save_predictor`. Anything else (a pickle above all) is refused.

    Returns the predictor and the ``extra`` dict stored with it.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ModelStoreError(f"{path} is not a model archive (refusing to read it; pickles are never loaded)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ModelStoreError(f"{path}: unreadable model archive ({exc})") from exc
    try:
        meta = json.loads(bytes(data["meta"].astype(np.uint8)).decode())
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ModelStoreError(f"{path}: missing or damaged header") from exc
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ModelStoreError(f"{path}: not a {FORMAT} v{VERSION} file (older versions must be retrained)")
    if len(meta.get("models", [])) not in (0, N_CANDIDATES):
        raise ModelStoreError(f"{path}: expected {N_CANDIDATES} candidate models")
    known = set(RuntimePredictor().__dict__)
    predictor = RuntimePredictor(**{k: v for k, v in meta["params"].items() if k in known})
    predictor.n_train = int(meta["n_train"])
    predictor.columns = data["columns"].astype(np.int64)
    models: list = []
    for k, spec in enumerate(meta["models"]):
        if spec["kind"] == "constant":
            value = float(spec["value"])
            if not math.isfinite(value):
                raise ModelStoreError(f"{path}: non-finite constant model")
            models.append(value)
            continue
        try:
            fields = {f: data[f"m{k}_{f}"] for f in PortableEnsemble.FIELDS}
            models.append(PortableEnsemble(spec["baseline"], data[f"m{k}_roots"], **fields))
        except KeyError as exc:
            raise ModelStoreError(f"{path}: model {k} is incomplete") from exc
    predictor.models = models
    if meta.get("distribution"):
        predictor.distribution = _load_distribution(meta["distribution"], data, path)
    return predictor, meta.get("extra", {})


def _distribution_parts(dist: RatioDistribution, arrays: dict) -> dict:
    """JSON description of the outcome distribution; its tree and sample arrays go into ``arrays``."""
    arrays["d_edges"] = dist.edges.astype(np.float64)
    arrays["d_samples"] = dist.samples.astype(np.float64)
    bins = []
    for b, model in enumerate(dist.class_models):
        if isinstance(model, float):
            bins.append({"kind": "absent"} if model == -math.inf else {"kind": "constant", "value": model})
            continue
        bins.append({"kind": "trees", "baseline": model.baseline})
        arrays.update(model.arrays(f"d{b}_"))
    params = {k: getattr(dist, k) for k in ("max_iter", "learning_rate", "max_leaf_nodes", "min_samples_leaf",
                                            "seed")}
    return {"bins": bins, "params": params}


def _load_distribution(spec: dict, data: dict, path: Path) -> RatioDistribution:
    try:
        edges, samples = data["d_edges"].astype(np.float64), data["d_samples"].astype(np.float64)
    except KeyError as exc:
        raise ModelStoreError(f"{path}: outcome distribution is incomplete") from exc
    bins = spec.get("bins", [])
    if (edges.ndim != 1 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0)
            or samples.shape != (len(edges) + 1, BIN_SAMPLES) or not np.all(np.isfinite(samples))
            or len(bins) != len(edges) + 1):
        raise ModelStoreError(f"{path}: outcome distribution has inconsistent shapes")
    dist = RatioDistribution(edges, **spec.get("params", {}))
    dist.samples = samples
    models: list = []
    for b, part in enumerate(bins):
        if part["kind"] == "absent":
            models.append(-math.inf)
        elif part["kind"] == "constant":
            value = float(part["value"])
            if not math.isfinite(value):
                raise ModelStoreError(f"{path}: non-finite constant in the outcome distribution")
            models.append(value)
        else:
            try:
                fields = {f: data[f"d{b}_{f}"] for f in PortableEnsemble.FIELDS}
                models.append(PortableEnsemble(part["baseline"], data[f"d{b}_roots"], **fields))
            except KeyError as exc:
                raise ModelStoreError(f"{path}: outcome bin {b} is incomplete") from exc
    if all(m == -math.inf for m in models if isinstance(m, float)) and not any(
            not isinstance(m, float) for m in models):
        raise ModelStoreError(f"{path}: outcome distribution has no bin")
    dist.class_models = models
    return dist
