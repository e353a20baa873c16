"""Benchmark of the decision module's prediction core (run: .venv/bin/python tests/bench/bench_decision.py [trace]).

Prints: training time on 30,000 jobs, the full online evaluate wall time, and the p99 latency of predicting
one job (features from the live history state + the model), as the service does per request.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from heroes_dev.settings import shared_data_dir
from heroes_service.decision.evaluate import evaluate
from heroes_service.decision.features import HistoryState, job_view, sweep
from heroes_service.decision.history import Trace, read_swf
from heroes_service.decision.model_store import load_predictor, save_predictor
from heroes_service.decision.predictor import LimitCalibrator, RuntimePredictor, log_request

TRACE = str(shared_data_dir() / "KTH-SP2-1996.swf")
N_TRAIN = 30000


def thirty_thousand(trace: Trace) -> Trace:
    """KTH has 28,489 jobs: repeat its start, shifted after its end, to reach 30,000 distinct jobs."""
    if len(trace) >= N_TRAIN:
        return trace.head(N_TRAIN)
    extra = trace.head(N_TRAIN - len(trace))
    span = float(trace["submit"][-1] - trace["submit"][0] + 1)
    cols = {k: np.concatenate([trace.columns[k], extra.columns[k] + (span if k == "submit" else 0)])
            for k in trace.columns}
    cols["user"] = np.concatenate([trace["user"], extra["user"] + 100000])  # new users, not duplicates
    return Trace(cols, dict(trace.header))


def main(path: str = TRACE) -> None:
    trace = read_swf(path)
    big = thirty_thousand(trace)
    began = time.perf_counter()
    X = sweep(big).X
    featurise = time.perf_counter() - began
    began = time.perf_counter()
    model = RuntimePredictor().fit(X, big["req_time"], big["run"])
    train = time.perf_counter() - began
    print(f"features for {len(big)} jobs: {featurise:.2f} s")
    print(f"training on {model.n_train} jobs: {train:.2f} s  (goal <= 30 s)")

    began = time.perf_counter()
    out = evaluate(trace)
    print(f"evaluate {path.rsplit('/', 1)[-1]} ({out['jobs']} jobs, {out['protocol']['retrains']} retrains): "
          f"{time.perf_counter() - began:.1f} s wall ({out['timing']['fit_s']:.1f} s fitting)")

    # single predictions through a loaded (pickle-free) model, with the history state of the whole trace
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        loaded, _ = load_predictor(save_predictor(model, f"{tmp}/m.npz"))
    state = HistoryState(trace.unix_start() + trace.time_zone_offset())
    finish = trace.finish
    for j in np.argsort(finish):
        if finish[j] == finish[j]:
            state.add_finished(job_view(trace, j), float(trace["run"][j]), float(trace["status"][j]),
                               float(finish[j]), was_submitted=False)
    calibrator = LimitCalibrator()
    rng = np.random.default_rng(0)
    for _ in range(500):
        calibrator.observe(float(rng.normal(7, 1)), 0.5, 9.0, float(np.exp(rng.normal(7, 1.2))))
    times = []
    for i in rng.integers(0, len(trace), 1000):
        job = job_view(trace, int(i))
        t0 = time.perf_counter()
        row = np.array([state.features(job)])
        pred = loaded.predict(row, np.array([job.req_time]))
        calibrator.limit(float(pred.point_log[0]), float(pred.scale[0]), float(log_request(np.array([job.req_time]))[0]))
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    print(f"single prediction (features + {len(loaded.models)} models + limit): p50 {np.percentile(ms, 50):.2f} ms, "
          f"p99 {np.percentile(ms, 99):.2f} ms")


if __name__ == "__main__":
    main(*sys.argv[1:])
