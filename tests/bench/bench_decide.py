"""Benchmark (not a test): ``POST /organization/decision/decide`` latency with 3 clusters and a 30,000-job history.

    .venv/bin/python tests/bench/bench_decide.py [--requests 1000] [--clients 1] [--history 30000]

Starts its own service process (uvicorn, fresh SQLite, own user CA, reconciler off) on the embedded stack and:

1. enrolls three clusters for acme as alice: alpha and beta (on-premises price models) and ``alpha-cloud``
   (alpha's login node again, priced as a cloud of c5.xlarge instances from the shipped catalog);
2. imports a 30,000-job history through the history API: the KTH SP2 trace (``../shared/data``), spread over
   the three clusters, its first jobs repeated after its end (with new job ids) to reach the count;
3. warms up (the models fit in the background; Slurm's ``sbatch --test-only`` plans are cached), then times
   ``--requests`` decide calls by bob through HTTP, ``--clients`` at a time, and prints p50/p99 (goal p99 <= 50 ms).

In steady state the queue wait comes from the service's cache (refreshed behind the requests every 30 s), so
the timings are the service's own work: authentication, template and clusters from the database, three
estimates, three costs and the policy.
"""
from __future__ import annotations

import argparse
import os
import statistics
from collections import Counter
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import psutil  # noqa: E402

from heroes_dev import settings as settings_module  # noqa: E402
from heroes_dev.components import keycloak as kc  # noqa: E402
from heroes_dev.components.jupyterhub import admin_token  # noqa: E402
from heroes_dev.components.login import host_key_fingerprint, ssh_port  # noqa: E402
from heroes_dev.settings import shared_data_dir  # noqa: E402
from cluster_testing import free_port, isolated_secrets  # noqa: E402
from service_support import hub_api  # noqa: E402
from test_workflows_restart import Service, login  # noqa: E402

CLUSTERS = {
    "alpha": {"login": "alpha", "price_model": {"currency": "EUR", "per_core_hour": 0.05, "per_kwh": 0.25},
              "energy_profile": {"idle_watts_per_node": 60, "watts_per_core": 12, "pue": 1.3}, "relative_speed": 1.0},
    "beta": {"login": "beta", "price_model": {"currency": "EUR", "per_core_hour": 0.02, "per_kwh": 0.20},
             "energy_profile": {"idle_watts_per_node": 40, "watts_per_core": 10, "pue": 1.2}, "relative_speed": 1.6},
    "alpha-cloud": {"login": "alpha", "price_model": {"kind": "cloud", "instance_type": "c5.xlarge",
                                                      "region": "eu-west-1"},
                    "energy_profile": {"idle_watts_per_node": 50, "watts_per_core": 8, "pue": 1.1},
                    "relative_speed": 1.2},
}
TEMPLATE = {"name": "bench-decide", "container": {"runtime": "none"},
            "parameters": [{"name": "cpus", "type": "int", "default": 1, "min": 1, "max": 2}],
            "steps": [{"name": "run", "command": ["true"],
                       "resources": {"cpus_per_task": "{cpus}", "memory_mb": 256, "time_minutes": 30}}]}


def history_files(total: int, parts: int) -> list[str]:
    """``parts`` SWF texts with ``total`` jobs together: KTH SP2, its start repeated after its end if needed."""
    header, jobs = [], []
    for line in open(shared_data_dir() / "KTH-SP2-1996.swf"):
        (header if line.startswith(";") or not line.strip() else jobs).append(line.rstrip("\n"))
    span = max(float(j.split()[1]) for j in jobs) + 86400
    out, n = [], 0
    while len(out) < total:
        fields = jobs[n % len(jobs)].split()
        rounds = n // len(jobs)
        fields[0] = str(n + 1)
        fields[1] = str(int(float(fields[1]) + rounds * span))
        out.append(" ".join(fields))
        n += 1
    size = -(-total // parts)
    return ["\n".join(header + out[i:i + size]) + "\n" for i in range(0, total, size)]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--history", type=int, default=30000)
    args = parser.parse_args()
    stack = settings_module.load()
    tmp = Path(tempfile.mkdtemp(prefix="heroes-bench-decide-"))
    with isolated_secrets():
        env = dict(os.environ, HEROES_STATE_DIR=str(stack.state), HEROES_SERVICE_PORT=str(free_port()),
                   HEROES_SERVICE_DATABASE_URL=f"sqlite:///{tmp / 'heroes.db'}",
                   HEROES_SERVICE_KEYCLOAK_URL=kc.base_url(stack), HEROES_SERVICE_HUB_API_URL=hub_api(stack),
                   HEROES_SERVICE_HUB_API_TOKEN=admin_token(stack), HEROES_SERVICE_WORKFLOWS_RECONCILER="false")
        service = Service(env, str(tmp / "service.log"))
        service.start()
        try:
            alice, bob = login(service, "alice"), login(service, "bob")
            for name, spec in CLUSTERS.items():
                r = alice.post(service.url("/organization/admin/cluster/"), timeout=120, json={
                    "name": name, "host": stack.host, "port": ssh_port(stack, spec["login"]),
                    "host_key_fingerprint": host_key_fingerprint(stack, spec["login"]),
                    "work_dir": "heroes-work/{login}", "container_runtime": "none",
                    **{k: v for k, v in spec.items() if k != "login"}})
                assert r.status_code == 201, r.text
            r = alice.post(service.url("/organization/admin/workflow/template"), json={"template": TEMPLATE}, timeout=30)
            assert r.status_code == 201, r.text
            began = time.perf_counter()
            stored = 0
            for cluster, text in zip(CLUSTERS, history_files(args.history, len(CLUSTERS))):
                r = alice.post(service.url("/organization/admin/decision/history"), timeout=600,
                               params={"format": "swf", "cluster": cluster}, data=text.encode())
                assert r.status_code == 201, r.text[:500]
                stored += r.json()["imported"]
            print(f"history: {stored} jobs imported over {len(CLUSTERS)} clusters in "
                  f"{time.perf_counter() - began:.1f} s")

            body = {"template": TEMPLATE["name"], "policy": "balanced"}
            began, first = time.perf_counter(), None
            while time.perf_counter() - began < 300:
                r = bob.post(service.url("/organization/decision/decide"), json=body, timeout=120)
                assert r.status_code == 200, r.text
                first = first or (time.perf_counter() - began)
                if r.json()["history"]["basis"] == "history":
                    break
                time.sleep(1)
            decision = r.json()
            print(f"first decide (3 x sbatch --test-only, cold) {first * 1000:.0f} ms; models ready after "
                  f"{time.perf_counter() - began:.1f} s: basis {decision['history']['basis']}, "
                  f"{decision['history']['jobs']} jobs; choice {decision['choice']} ({decision['reason'][:120]})")
            for c in decision["candidates"]:
                print(f"  {c['cluster']:12s} wait {c['wait_s']:>7} s run {c['run_s']:>8} s "
                      f"{c['energy_kwh']:.4f} kWh {c['cost']} {c['currency']} score {c['score']}")
            for _ in range(20):  # warm the connection pools and caches
                bob.post(service.url("/organization/decision/decide"), json=body, timeout=60)

            def one(i: int) -> tuple[float, int]:
                payload = dict(body, policy=("performance", "energy", "cost", "balanced")[i % 4])
                start = time.perf_counter()
                r = sessions[i % len(sessions)].post(service.url("/organization/decision/decide"), json=payload,
                                                     timeout=60)
                return time.perf_counter() - start, r.status_code

            server = psutil.Process(service.proc.pid)
            settle = time.perf_counter()
            while True:  # steady state: the models' background fit on the imported history has finished
                idle_before = sum(server.cpu_times()[:2])
                time.sleep(5)
                idle_ms = (sum(server.cpu_times()[:2]) - idle_before) * 1000 / 5
                if idle_ms < 50 or time.perf_counter() - settle > 300:
                    break
            print(f"service CPU while idle: {idle_ms:.0f} ms/s after {time.perf_counter() - settle:.0f} s "
                  "(background model fits done)")
            # fresh logins: on a loaded machine the settling above can outlast the access tokens (every timed
            # call then answered 401, counted as errors)
            alice = login(service, "alice")
            sessions = [login(service, "bob") for _ in range(args.clients)]
            for session in sessions:   # warm each new connection once
                session.post(service.url("/organization/decision/decide"), json=body, timeout=60)
            cpu_before = sum(server.cpu_times()[:2])
            began = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(one, range(args.requests)))
            elapsed = time.perf_counter() - began
            cpu_ms = (sum(server.cpu_times()[:2]) - cpu_before) * 1000 / args.requests
            latencies = [t for t, _ in results]
            errors = sum(1 for _, s in results if s != 200)
            if errors:
                print(f"status codes of the timed calls: {sorted(Counter(s for _, s in results).items())}")
            print(f"decide x {args.requests} ({args.clients} client(s), 3 clusters, {stored}-job history) in "
                  f"{elapsed:.1f} s: p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
                  f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms (goal <= 50 ms), "
                  f"mean {statistics.mean(latencies) * 1000:.1f} ms, errors {errors}; machine load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; service CPU {cpu_ms:.1f} ms per decide")
            for name in CLUSTERS:
                cid = next(c["id"] for c in alice.get(service.url("/organization/admin/cluster/"), timeout=30).json()
                           if c["name"] == name)
                alice.delete(service.url(f"/organization/admin/cluster/{cid}"), timeout=60)
        finally:
            service.stop()


if __name__ == "__main__":
    main()
