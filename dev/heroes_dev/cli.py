"""The ``heroes`` command line: ``heroes dev up | down | status | logs | test``.

Later capabilities add their own sub-commands (``heroes decision ...``, ``heroes bench ...``) here.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from heroes_sdk.cli import register as register_user_commands

from . import settings as settings_module
from .cli_decision import register as register_decision
from .install import InstallError, ensure_debs
from .procs import tail
from .stack import Stack, StackError


BROWSER_DEBS = ("chromium", "fonts-liberation")


def _stack() -> Stack:
    return Stack(settings_module.load())


def cmd_up(args: argparse.Namespace) -> int:
    began = time.monotonic()
    stack = _stack()
    try:
        report = stack.up(args.components or None)
    except StackError as exc:
        print(f"\nheroes dev up failed: {exc}", file=sys.stderr)
        return 1
    took = time.monotonic() - began
    if report.started:
        print(f"\nstarted {', '.join(report.started)} in {took:.0f}s")
    else:
        print("\neverything was already running; nothing changed")
    _print_urls(stack)
    return 0


def _print_urls(stack: Stack) -> None:
    ports = stack.settings.ports
    print(f"  JupyterHub     http://127.0.0.1:{ports.hub}/  (users: alice, bob, carol, dave, root; password = user name + '-pass')")
    print(f"  Keycloak       http://127.0.0.1:{ports.keycloak}/  (realm heroes; admin console user 'admin')")
    print(f"  S3             http://127.0.0.1:{ports.s3}/")
    print(f"  cluster alpha  ssh -p {ports.alpha_ssh} bob@127.0.0.1   cluster beta  ssh -p {ports.beta_ssh} bob@127.0.0.1")


def cmd_down(args: argparse.Namespace) -> int:
    try:
        stopped = _stack().down(args.components or None)
    except StackError as exc:
        print(f"heroes dev down failed: {exc}", file=sys.stderr)
        return 1
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    rows = _stack().status_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        widths = {k: max([len(k)] + [len(r[k]) for r in rows]) for k in ("component", "state", "ports", "pids", "rss_mb")}
        header = "  ".join(k.upper().ljust(widths[k]) for k in widths) + "  DETAIL"
        print(header)
        for row in rows:
            print("  ".join(row[k].ljust(widths[k]) for k in widths) + "  " + row["detail"])
        total = sum(float(r["rss_mb"]) for r in rows if r["rss_mb"])
        print(f"total resident memory of the stack: {total:.0f} MiB")
    return 0 if all(r["state"] in ("healthy", "stopped") for r in rows) else 1


def cmd_logs(args: argparse.Namespace) -> int:
    stack = _stack()
    targets = stack.select([args.component] if args.component else None, with_deps=False)
    for component in targets:
        for path in component.log_paths():
            if path.exists():
                print(f"==> {path} <==")
                print(tail(path, args.lines))
    if args.follow:
        paths = [str(p) for c in targets for p in c.log_paths() if p.exists()]
        if paths:
            return subprocess.call(["tail", "-n", "0", "-F", *paths])
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Start what is missing, run the whole suite, stop only what this command started."""
    stack = _stack()
    began = time.monotonic()
    try:
        ensure_debs("browser", BROWSER_DEBS)  # the e2e tests drive Debian's Chromium, never a downloaded one
        report = stack.up(None)
    except (StackError, InstallError) as exc:
        print(f"\nheroes dev test: the stack did not come up: {exc}", file=sys.stderr)
        stack.down(None)
        return 1
    print(f"stack ready in {time.monotonic() - began:.0f}s (started: {', '.join(report.started) or 'none'})",
          flush=True)
    try:
        # one retry for a test that loses a race with the loaded machine (real daemons on 2 cores); a test must
        # still pass on its own, and every rerun is listed at the end with its first attempt's failure
        # (tests/conftest.py), so a flake can be fixed rather than carried
        argv = [sys.executable, "-m", "pytest", "-ra", "--reruns", "1", "--reruns-delay", "5",
                *(args.pytest_args or ["tests"])]
        rc = subprocess.call(argv, cwd=stack.settings.repo, env={**os.environ, "HEROES_STACK_UP": "1"})
    finally:
        if report.started and not args.keep:
            stack.down(report.started)
    if rc == 5:
        print("pytest collected no tests: that is a failure, not a pass", file=sys.stderr)
        return 1
    return rc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heroes", description="HEROES gateway command line")
    groups = parser.add_subparsers(dest="group", required=True)
    register_decision(groups)
    register_user_commands(groups)  # login, submit, status, data ... (heroes_sdk.cli)
    dev = groups.add_parser("dev", help="the embedded stack of real services on this machine")
    sub = dev.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="install what is missing and start the stack (or the named components)")
    up.add_argument("components", nargs="*")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop what 'up' started (or the named components)")
    down.add_argument("components", nargs="*")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="each component with its ports, pids and health")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    logs = sub.add_parser("logs", help="the tail of the stack's logs")
    logs.add_argument("component", nargs="?")
    logs.add_argument("-n", "--lines", type=int, default=40)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(func=cmd_logs)

    test = sub.add_parser("test", help="start what is missing, run all tests, stop what was started")
    test.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    test.set_defaults(func=cmd_test)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
