"""Save and load fitted predictors without pickle.

A pickle file executes code when loaded, so a model file that anyone but us could have written must never
be unpickled. We store a fitted :class:`~.predictor.RuntimePredictor` as one ``.npz`` archive holding only
plain numeric arrays (each tree's nodes: feature, threshold, missing-goes-left, children, leaf values) and a
JSON document of parameters, and read it back with ``allow_pickle=False``. Loaded models predict with our own
tree walk (:class:`~.trees.PortableEnsemble`), so loading needs neither pickle nor scikit-learn's private classes.
"""
from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from .predictor import N_CANDIDATES, RuntimePredictor
from .ratio_distribution import BIN_SAMPLES, RatioDistribution
from .trees import ModelStoreError, PortableEnsemble

FORMAT = "heroes-runtime-predictor"
VERSION = 2   # 2: more candidate guesses, and the outcome distribution behind the time limit (retrain v1 files)


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
