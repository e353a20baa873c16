"""Benchmark (not a test): 100 concurrent clients on ``me`` and the org admin list routes for 60 s.

    .venv/bin/python tests/bench/bench_service.py [--clients 100] [--seconds 60] [--direct]

Runs against the running service (through the hub's proxy, or straight to uvicorn with ``--direct``)
with alice's Keycloak bearer token and a JupyterHub token of hers, half the clients each. Prints, per
route: requests, errors (must be 0), p50 and p99 latency, and the service process's RSS before and after.
Needs ``heroes dev up`` (keycloak, jupyterhub).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import httpx  # noqa: E402
import psutil  # noqa: E402

from heroes_dev import settings as settings_module  # noqa: E402
from service_support import PREFIX, hub_public, hub_user_token  # noqa: E402

ROUTES = ("/organization/auth/me", "/organization/admin/users/", "/organization/admin/groups/",
          "/organization/admin/roles/")


def service_rss(port: int) -> float:
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return psutil.Process(conn.pid).memory_info().rss / 2**20
    return float("nan")


async def client(n: int, base: str, auth: str, until: float, results: dict) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": auth}, timeout=30) as http:
        i = n
        while time.monotonic() < until:
            route = ROUTES[i % len(ROUTES)]
            i += 1
            began = time.perf_counter()
            try:
                response = await http.get(PREFIX + route)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            results[route].append((time.perf_counter() - began, ok))


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def run(args) -> None:
    settings = settings_module.load()
    base = f"http://127.0.0.1:{settings.ports.heroes_service}" if args.direct else hub_public(settings)
    login = httpx.post(base + PREFIX + "/organization/auth/login", json={"username": "alice", "password": "alice-pass"})
    login.raise_for_status()
    auths = [f"Bearer {login.json()['access_token']}",
             f"token {hub_user_token(settings, 'alice', 'alice-pass')}"]
    rss_before = service_rss(settings.ports.heroes_service)
    results: dict[str, list] = defaultdict(list)
    until = time.monotonic() + args.seconds
    began = time.monotonic()
    await asyncio.gather(*(client(n, base, auths[n % 2], until, results) for n in range(args.clients)))
    elapsed = time.monotonic() - began
    rss_after = service_rss(settings.ports.heroes_service)
    total = sum(len(v) for v in results.values())
    errors = sum(1 for v in results.values() for _, ok in v if not ok)
    print(f"{args.clients} clients, {elapsed:.0f} s, {'direct' if args.direct else 'through the proxy'}: "
          f"{total} requests ({total / elapsed:.0f}/s), errors {errors}")
    print(f"{'route':34} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for route in ROUTES:
        samples = results[route]
        latencies = [t * 1000 for t, _ in samples]
        print(f"{route:34} {len(samples):9d} {sum(1 for _, ok in samples if not ok):7d} "
              f"{statistics.median(latencies):8.1f} {percentile(latencies, 0.99):8.1f}")
    print(f"service RSS: {rss_before:.0f} MiB before, {rss_after:.0f} MiB after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--direct", action="store_true", help="straight to uvicorn, not through the proxy")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
