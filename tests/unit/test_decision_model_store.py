"""Model files: a fitted predictor round-trips through the pickle-free format; pickles are refused unread."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from heroes_dev.settings import shared_data_dir
from heroes_service.decision.features import sweep
from heroes_service.decision.model_store import ModelStoreError, load_predictor, save_predictor
from heroes_service.decision.predictor import RuntimePredictor
from heroes_service.decision.history import read_swf


@pytest.fixture(scope="module")
def fitted():
    trace = read_swf(str(shared_data_dir() / "KTH-SP2-1996.swf")).head(3000)
    X = sweep(trace).X
    model = RuntimePredictor(max_iter=20, dist_iter=10).fit(X[:2500], trace["req_time"][:2500], trace["run"][:2500])
    assert model.fitted
    return model, X[2500:], trace["req_time"][2500:]


def test_round_trip_predicts_the_same(fitted, tmp_path):
    model, X, req = fitted
    path = save_predictor(model, tmp_path / "runtime.npz", extra={"trained_on": "KTH head"})
    loaded, extra = load_predictor(path)
    assert extra == {"trained_on": "KTH head"}
    assert loaded.n_train == model.n_train
    a, b = model.predict(X, req), loaded.predict(X, req)
    np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(b.point_log, a.point_log)
    np.testing.assert_allclose(b.scale, a.scale, atol=1e-9)
    one = loaded.predict(X[:1], req[:1])  # a single job, as the service asks
    assert one.point_log[0] == a.point_log[0]
    # the time-limit options (outcome distribution) survive the round trip too
    assert model.distribution is not None and loaded.distribution is not None
    np.testing.assert_allclose(loaded.distribution.proba(_design(loaded, X[:5], req[:5])),
                               model.distribution.proba(_design(model, X[:5], req[:5])), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(b.limit_offsets, a.limit_offsets)
    capped = loaded.predict(X, req, cap_time=1800.0).limit_offsets
    assert (capped <= np.minimum(0.0, np.log(1800.0) - np.log(req))[:, None] + 1e-12).all()


def _design(model, X, req):
    from heroes_service.decision.predictor import candidate_matrix, log_request

    req_log = log_request(req)
    return model.design(X, candidate_matrix(X, req_log), req_log)[:, model.columns]


def test_version_one_files_are_refused(fitted, tmp_path):
    """Version 1 had fewer candidates and no outcome distribution: such a file must be retrained, not guessed at."""
    path = save_predictor(fitted[0], tmp_path / "new.npz")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["version"] = 1
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    with pytest.raises(ModelStoreError, match="retrained"):
        load_predictor(old)


class _Boom:
    """Unpickling this would create a marker file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "runtime.npz"
    evil.write_bytes(pickle.dumps(_Boom(str(marker))))
    with pytest.raises(ModelStoreError):
        load_predictor(evil)
    assert not marker.exists()


def test_npz_with_pickled_object_array_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "obj.npz"
    np.savez(evil, meta=np.array([_Boom(str(marker))], dtype=object))
    with pytest.raises(ModelStoreError):
        load_predictor(evil)
    assert not marker.exists()


def test_foreign_or_damaged_archive_is_refused(fitted, tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.frombuffer(b'{"format": "something-else"}', dtype=np.uint8))
    with pytest.raises(ModelStoreError):
        load_predictor(other)
    model = fitted[0]
    good = save_predictor(model, tmp_path / "good.npz")
    with np.load(good, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    broken = dict(arrays, m0_left=arrays["m0_left"] + 10 ** 9)  # children pointing outside the tree
    bad = tmp_path / "bad.npz"
    np.savez(bad, **broken)
    with pytest.raises(ModelStoreError):
        load_predictor(bad)
    short = dict(arrays, d_samples=arrays["d_samples"][:, :5])  # outcome samples of the wrong shape
    np.savez(bad, **short)
    with pytest.raises(ModelStoreError):
        load_predictor(bad)
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ModelStoreError):
        load_predictor(truncated)

