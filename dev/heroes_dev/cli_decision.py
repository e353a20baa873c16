"""``heroes decision evaluate``: the run-time predictor and time-limit recommender, replayed on a trace.

Kept apart from cli.py so the decision module's heavy imports (scikit-learn) load only for this command.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def cmd_evaluate(args: argparse.Namespace) -> int:
    from heroes_service.decision.evaluate import EvalConfig, evaluate_file

    config = EvalConfig(retrain_every=args.retrain_every, target_kill=args.target_kill,
                        predictor={"n_threads": args.threads})
    try:
        result = evaluate_file(args.trace, limit=args.limit, config=config)
    except (OSError, ValueError) as exc:
        print(f"heroes decision evaluate: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print(render(result))
    return 0


def _row(name: str, m: dict | None) -> str:
    if m is None:
        return f"  {name:<22} n/a"
    return f"  {name:<22} accuracy {m['mean_accuracy']:.3f}   MAE {m['mae_s']:>8.0f} s   under-predicted {m['under_share']:6.1%}"


def _price(value) -> str:
    return "request only" if value is None else f"{value:.2f}"


def render(result: dict) -> str:
    """Human-readable summary of :func:`evaluate` output."""
    p = result["predictor"]
    ex = result["excluded"]
    head = [
        f"trace {result.get('trace', '?')}: {result['jobs']} jobs evaluated "
        f"(excluded: {ex['unknown_or_zero_run_time']} unknown/zero run time, "
        f"{ex['unknown_request_time']} unknown request; {ex['malformed_lines_skipped']} malformed lines)",
        "run-time point prediction (online, chronological):",
        _row("predictor", p["point"]),
        _row("user request", result["baselines"]["user_request"]),
        _row("last two (Tsafrir)", result["baselines"]["last_two"]),
    ]
    timing = (f"time: {result['timing']['total_s']:.1f} s total, {result['timing']['fit_s']:.1f} s fitting "
              f"({result['protocol']['retrains']} retrains)")
    lim, free = p["limit"], p["limit_unclipped"]
    if lim is None:
        return "\n".join(head + [f"recommended time limit: n/a ({result.get('not_applicable', 'no requests')})",
                                 timing])
    lines = head + [
        "recommended time limit:",
        f"  clipped to request      kill {lim['kill_share']:6.1%}   accuracy {lim['mean_accuracy']:.3f} "
        f"({lim['accuracy_vs_request']:.2f}x the request's)   limit/request {lim['limit_over_request']:.3f}",
        f"  unclipped               kill {free['kill_share']:6.1%}   accuracy {free['mean_accuracy']:.3f}   "
        f"limit/request {free['limit_over_request']:.3f}",
        f"  (the user's requests themselves kill {result['baselines']['user_request']['kill_share']:.1%}; "
        f"median kill price {_price(result['protocol'].get('limit_kill_price_median'))}, "
        f"{result['protocol'].get('limit_by_fallback_share', 0):.1%} of limits from the warm-up margin)",
        timing,
    ]
    return "\n".join(lines)


def register(subparsers) -> None:
    """Add ``decision evaluate`` to the top-level ``heroes`` sub-command parsers."""
    decision = subparsers.add_parser("decision", help="run-time prediction and placement decisions")
    sub = decision.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="replay an SWF trace online and compare the predictor with baselines")
    ev.add_argument("--trace", required=True, help="SWF file (.swf or .swf.gz)")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument("--limit", type=int, default=None, help="only the first N jobs by submit time")
    ev.add_argument("--retrain-every", type=int, default=2000, help="retrain after this many submissions")
    ev.add_argument("--target-kill", type=float, default=0.045,
                    help="share of jobs the recommended limit may kill (calibrated online)")
    ev.add_argument("--threads", type=_at_least_one, default=default_threads(),
                    help="OpenMP threads for fitting and predicting (default: the CPUs this process may use, "
                         "at most 4; the metrics do not depend on it)")
    ev.set_defaults(func=cmd_evaluate)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def default_threads() -> int:
    """The CPUs this process may run on, at most 4 (histogram boosting gains little beyond that on one
    trace's few tens of thousands of jobs, and an evaluation should not take a whole shared machine)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="heroes")
    register(parser.add_subparsers(dest="group", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
