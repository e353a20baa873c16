"""``heroes decision evaluate|replay|placement``: the predictor, the recommended limits and the placement
measured on an SWF trace (accuracy; EASY-backfilling waits; routing regret against an oracle).

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
                        target_lost=args.target_lost, predictor={"n_threads": args.threads})
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


def cmd_replay(args: argparse.Namespace) -> int:
    from heroes_service.decision.simulate.replay import replay

    def run(trace):
        return replay(trace, _config(args))
    return _simulation(args, "replay", run, render_replay)


def cmd_placement(args: argparse.Namespace) -> int:
    from heroes_service.decision.simulate.clusters import parse_clusters
    from heroes_service.decision.simulate.routing import placement

    try:
        clusters = parse_clusters(args.clusters)
    except ValueError as exc:
        print(f"heroes decision placement: {exc}", file=sys.stderr)
        return 2

    def run(trace):
        return placement(trace, _config(args), clusters)
    return _simulation(args, "placement", run, render_placement)


def _config(args: argparse.Namespace):
    from heroes_service.decision.evaluate import EvalConfig

    return EvalConfig(target_kill=args.target_kill, target_lost=args.target_lost, predictor={"n_threads": args.threads})


def _simulation(args: argparse.Namespace, name: str, run, render_text) -> int:
    from heroes_service.decision.history import read_swf

    try:
        trace = read_swf(args.trace)
        if args.limit:
            trace = trace.head(args.limit)
        result = run(trace)
    except (OSError, ValueError) as exc:
        print(f"heroes decision {name}: {exc}", file=sys.stderr)
        return 1
    result["trace"] = os.path.basename(args.trace)
    print(json.dumps(result, indent=2, allow_nan=False) if args.json else render_text(result))
    return 0


def render_replay(result: dict) -> str:
    lines = [f"trace {result['trace']}: {result['jobs']} jobs on {result['machine_procs']} processors (EASY backfilling)"]
    for name in ("requests", "recommended", "oracle"):
        m = result[name]
        lines.append(f"  {name:<12} wait {m['mean_wait_s']:>9.0f} s   bounded slowdown {m['mean_bounded_slowdown']:7.2f}   "
                     f"utilization {m['utilization']:.3f}   core-hours lost to kills {m['lost_core_hours_share']:.2%}")
    captured = result["gain_captured"]
    lines.append("  recommended limits capture " + ("n/a (the oracle gains nothing)" if captured is None else
                 f"{captured:.0%}") + " of the oracle's bounded-slowdown gain"
                 + (" (goal met)" if result["goal"]["met"] else " (goal NOT met)"))
    return "\n".join(lines)


def render_placement(result: dict) -> str:
    clusters = ", ".join(f"{c['name']} {c['procs']} procs x{c['speed']:g}" for c in result["clusters"])
    lines = [f"trace {result['trace']}: {result['jobs']} jobs routed over {clusters}"]
    for name, row in result["routers"].items():
        lines.append(f"  {name:<12} mean response {row['mean_response_s']:>9.0f} s   regret {row['regret']:+.1%}")
    lines.append("  goal " + ("met" if result["goal"]["met"] else "NOT met") +
                 f": decision regret <= {result['goal']['regret_at_most']:.0%} and below every simple router")
    return "\n".join(lines)


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
                    help="share of jobs the recommended limit may kill that their own request would not have "
                         "(calibrated online)")
    ev.add_argument("--target-lost", type=float, default=0.015,
                    help="share of the useful core-hours the limit's kills may throw away (calibrated online)")
    ev.add_argument("--threads", type=_at_least_one, default=default_threads(),
                    help="OpenMP threads for fitting and predicting (default: the CPUs this process may use, "
                         "at most 4; the metrics do not depend on it)")
    ev.set_defaults(func=cmd_evaluate)
    from heroes_service.decision.simulate.clusters import DEFAULT_CLUSTERS

    default_clusters = ",".join(f"{c.name}:{c.share:g}:{c.speed:g}:{c.price_per_core_hour:g}" for c in DEFAULT_CLUSTERS)
    rp = sub.add_parser("replay", help="replay an SWF trace through EASY backfilling with the users' requests, "
                                       "the recommended limits and the exact run times")
    pl = sub.add_parser("placement", help="route an SWF trace's jobs over simulated clusters: the service's "
                                          "performance choice against an oracle and simple routers")
    pl.add_argument("--clusters", default=default_clusters,
                    help="2 or 3 clusters as name:share-of-the-machine:speed:price-per-core-hour, comma-separated "
                         f"(default {default_clusters})")
    for parser, func in ((rp, cmd_replay), (pl, cmd_placement)):
        parser.add_argument("--trace", required=True, help="SWF file (.swf or .swf.gz)")
        parser.add_argument("--json", action="store_true", help="print the results as JSON")
        parser.add_argument("--limit", type=int, default=None, help="only the first N jobs by submit time")
        parser.add_argument("--target-kill", type=float, default=0.045,
                            help="share of jobs the recommended limit may kill that their request would not")
        parser.add_argument("--target-lost", type=float, default=0.015,
                            help="share of the useful core-hours the limit's kills may throw away")
        parser.add_argument("--threads", type=_at_least_one, default=default_threads(),
                            help="OpenMP threads for the predictor (default: the CPUs available, at most 4)")
        parser.set_defaults(func=func)


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
