"""Benchmark of the decision module's prediction core (run: .venv/bin/python tests/bench/bench_decision.py [trace]).

Prints: training time on 30,000 jobs (candidate regressors + the outcome distribution behind the limit), the
full online evaluate wall time and its metrics, and the p99 latency of predicting one job (features from the live
history state + the model + the limit choice), as the service does per request.

``--synthetic PATH`` first writes a synthetic SWF trace with user habits unlike KTH's (exact requesters, padders,
queue-maximum requesters, users who often fail at once, drifting and noisy users) and evaluates it too, and
``--halves`` evaluates each half of the trace on its own: the predictor must not be tuned to one trace.

``--simulate OUT.json [--synthetic PATH]`` runs the online predictor ONCE per trace (the trace, its two halves
and, when asked, the synthetic trace) and writes ``heroes decision evaluate``, ``replay`` and ``placement``'s
JSON for each from that one run, with their goals' verdicts printed (the three commands each run it again).
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
from heroes_service.decision.predictor import LAMBDAS, LimitChooser, RuntimePredictor

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


def report(name: str, trace: Trace) -> dict:
    """Evaluate one trace and print the goals' numbers."""
    began = time.perf_counter()
    out = evaluate(trace)
    p, base = out["predictor"], out["baselines"]
    print(f"evaluate {name} ({out['jobs']} jobs, {out['protocol']['retrains']} retrains): "
          f"{time.perf_counter() - began:.1f} s wall ({out['timing']['fit_s']:.1f} s fitting)")
    print(f"  point accuracy {p['point']['mean_accuracy']:.3f} (request {base['user_request']['mean_accuracy']:.3f}, "
          f"last two {base['last_two']['mean_accuracy']:.3f}); limit kill {p['limit']['kill_share']:.3f} "
          f"(requests alone {base['user_request']['kill_share']:.3f}), accuracy {p['limit']['mean_accuracy']:.3f} "
          f"= {p['limit']['accuracy_vs_request']:.2f}x the request's")
    return out


def halves(trace: Trace) -> tuple[Trace, Trace]:
    """The first and second half of a trace by submit order, each a trace of its own (the second starts empty)."""
    mid = len(trace) // 2
    first = trace.head(mid)
    second = Trace({k: v[mid:].copy() for k, v in trace.columns.items()}, dict(trace.header))
    return first, second


def synthetic_swf(path: str, n_jobs: int = 24000, n_users: int = 120, seed: int = 7,
                  max_runtime: int = 172800) -> str:
    """Write an SWF trace whose users behave unlike KTH's (see the module doc); returns ``path``."""
    rng = np.random.default_rng(seed)
    queue_limits = np.array([1800, 4 * 3600, 12 * 3600, 48 * 3600])
    users = []
    for _ in range(n_users):
        kind = str(rng.choice(["exact", "padded", "max_queue", "failing", "drifting", "noisy"],
                              p=[0.15, 0.25, 0.2, 0.15, 0.1, 0.15]))
        apps = [[float(np.exp(rng.uniform(np.log(30), np.log(100000)))), int(2 ** rng.integers(0, 9))]
                for _ in range(int(rng.integers(1, 6)))]
        sigma = {"exact": rng.uniform(0.005, 0.03), "noisy": rng.uniform(0.4, 0.8)}.get(kind, rng.uniform(0.02, 0.3))
        users.append(dict(kind=kind, apps=apps, sigma=float(sigma), pad=float(rng.uniform(1.6, 5)),
                          fail=float(rng.uniform(0.02, 0.6) if kind == "failing" else rng.uniform(0, 0.1)),
                          rate=float(rng.lognormal(0, 1))))
    rates = np.array([u["rate"] for u in users])
    rates /= rates.sum()
    t, lines = 0.0, []
    for job in range(1, n_jobs + 1):
        t += float(rng.exponential(900))
        ui = int(rng.choice(n_users, p=rates))
        u = users[ui]
        ai = int(rng.integers(len(u["apps"])))
        base, procs = u["apps"][ai]
        if u["kind"] == "drifting":
            u["apps"][ai][0] = base = base * float(np.exp(rng.normal(0.01, 0.05)))
        run = base * float(np.exp(rng.normal(0, u["sigma"])))
        if u["kind"] == "exact":
            req = base * 1.15
        elif u["kind"] == "max_queue":
            req = float(queue_limits[min(np.searchsorted(queue_limits, base * 1.5), len(queue_limits) - 1)])
        else:
            req = base * u["pad"]
        req = float(min(max(60.0, round(req / 60) * 60), max_runtime))
        status = 1
        if rng.random() < u["fail"]:
            run, status = float(rng.uniform(1, min(120.0, req / 2))), 0
        if run > req:   # killed at its limit, after a grace period
            run, status = req + float(rng.uniform(0, 60)), 0
        wait = round(float(rng.lognormal(np.log(60 + procs * 20), 1.5)))
        lines.append(f"{job} {int(t)} {wait} {int(round(run))} {procs} -1 -1 {procs} {int(req)} -1 {status} {ui + 1} "
                     f"{ui % 7 + 1} -1 1 -1 -1 -1")
    with open(path, "w") as handle:
        handle.write(f"; Version: 2.2\n; Computer: synthetic\n; MaxRuntime: {max_runtime}\n; MaxJobs: {n_jobs}\n")
        handle.write("\n".join(lines) + "\n")
    return path


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

    report(path.rsplit("/", 1)[-1], trace)

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
    chooser = LimitChooser()
    rng = np.random.default_rng(0)
    options = np.log(np.linspace(0.05, 1.0, len(LAMBDAS)))
    for _ in range(500):
        chooser.observe(options, float(rng.normal(-1.5, 1.2)))
    times = []
    for i in rng.integers(0, len(trace), 1000):
        job = job_view(trace, int(i))
        t0 = time.perf_counter()
        row = np.array([state.features(job)])
        pred = loaded.predict(row, np.array([job.req_time]))
        chooser.choose(pred.limit_offsets[0])
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    print(f"single prediction (features + {len(loaded.models)} models + limit): p50 {np.percentile(ms, 50):.2f} ms, "
          f"p99 {np.percentile(ms, 99):.2f} ms")


def simulate_all(out_path: str, traces: dict) -> None:
    """evaluate + replay + placement of each trace from one online run; JSON to ``out_path``."""
    import json
    import os
    import pickle

    from heroes_service.decision.evaluate import EvalConfig, run_online
    from heroes_service.decision.simulate.replay import replay
    from heroes_service.decision.simulate.routing import placement

    results = {}
    for name, trace in traces.items():
        config = EvalConfig(predictor={"n_threads": 1})   # 1: OpenMP spinning on a busy machine costs 40x
        began = time.perf_counter()
        online = run_online(trace, config)
        took = time.perf_counter() - began
        if os.environ.get("BENCH_KEEP_ONLINE"):   # for recalibration experiments without refitting
            with open(os.path.join(os.environ["BENCH_KEEP_ONLINE"], f"{name.replace(' ', '_')}.pkl"), "wb") as h:
                pickle.dump(online, h)
        ev = evaluate(trace, config, online=online)
        rp = replay(trace, config, online=online)
        pl = placement(trace, config, online=online)
        results[name] = {"online_s": round(took, 1), "evaluate": ev, "replay": rp, "placement": pl}
        p, base, lim = ev["predictor"], ev["baselines"], ev["predictor"]["limit"]
        point_ratio = p["point"]["mean_accuracy"] / base["last_two"]["mean_accuracy"]
        print(f"{name}: {ev['jobs']} jobs, online run {took:.0f} s")
        print(f"  evaluate: point {p['point']['mean_accuracy']:.3f} = {point_ratio:.3f}x last-two (goal 1.2x); "
              f"limit added kills {lim['added_kill_share']:.3f} (goal <= 0.05), accuracy "
              f"{lim['accuracy_vs_request']:.3f}x the requests' (goal 1.2x), lost core-hours {lim['lost_core_hours_share']:.3f}")
        print(f"  replay: bsld requests {rp['requests']['mean_bounded_slowdown']:.2f}, recommended "
              f"{rp['recommended']['mean_bounded_slowdown']:.2f}, oracle {rp['oracle']['mean_bounded_slowdown']:.2f}; "
              f"captured {rp['gain_captured']} (goal 0.5), lost {rp['recommended']['lost_core_hours_share']:.4f} "
              f"(goal 0.02), {rp['timing']['total_s'] - rp['timing']['predict_s']:.1f} s of simulation")
        print("  placement: " + ", ".join(f"{k} {v['regret']:+.3f}" for k, v in pl["routers"].items())
              + f"; goal met: {pl['goal']['met']}, {pl['timing']['total_s'] - pl['timing']['predict_s']:.1f} s")
        with open(out_path, "w") as handle:
            json.dump(results, handle, indent=1, allow_nan=False)


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--simulate" in args:
        out = args[args.index("--simulate") + 1]
        args = [a for a in args if a not in ("--simulate", out)]
        synthetic = None
        if "--synthetic" in args:
            target = args[args.index("--synthetic") + 1]
            args = [a for a in args if a not in ("--synthetic", target)]
            synthetic = read_swf(synthetic_swf(target))
        whole = read_swf(args[0] if args else TRACE)
        traces = {"trace": whole}   # the whole traces first: the halves matter less when time is short
        if synthetic is not None:
            traces["synthetic"] = synthetic
        traces["first half"], traces["second half"] = halves(whole)
        if synthetic is not None:
            traces["synthetic first half"], traces["synthetic second half"] = halves(synthetic)
        simulate_all(out, traces)
        sys.exit(0)
    if "--synthetic" in args:
        target = args[args.index("--synthetic") + 1]
        report("synthetic", read_swf(synthetic_swf(target)))
        args = [a for a in args if a not in ("--synthetic", target)]
    if "--halves" in args:
        args.remove("--halves")
        first, second = halves(read_swf(args[0] if args else TRACE))
        report("first half", first)
        report("second half", second)
    else:
        main(*args)
