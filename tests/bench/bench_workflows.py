"""Benchmark (not a test) of workflow submission and tracking against the embedded stack.

    .venv/bin/python tests/bench/bench_workflows.py [--latency-rounds 20] [--live 200] [--burst 500]

Starts its own service process (uvicorn, fresh SQLite, own user CA, reconciler OFF so that this process
drives the cycles it counts) and measures, in the same run:

1. median submit latency, API -> job id (POST /submit with wait=true, one-step template, alpha), against a
   fresh ``ssh -p <alpha> bob@host sbatch --parsable`` (new connection each time, as a script would do);
   ratio goal <= 1.0;
2. Slurm commands per reconcile cycle with ``--live`` instances live on alpha (counted at the connector:
   every remote command whose argv[0] is a Slurm client), goal <= 2 per cluster;
3. ``--burst`` submissions from 16 concurrent clients: elapsed time and errors (goal: 500 in 60 s, 0 errors).

Every job it made is cancelled at the end (scancel by job id, as root, on alpha's controller).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import requests  # noqa: E402

from heroes_dev import settings as settings_module  # noqa: E402
from heroes_dev.components import keycloak as kc  # noqa: E402
from heroes_dev.components.jupyterhub import admin_token  # noqa: E402
from heroes_dev.components.login import host_key_fingerprint, known_hosts_line, ssh_port, user_key_path  # noqa: E402
from heroes_dev.components.slurm import slurm_conf_path  # noqa: E402
from cluster_testing import free_port, isolated_secrets  # noqa: E402
from service_support import hub_api  # noqa: E402
from test_workflows_restart import Service, login  # noqa: E402

SLURM = {"sbatch", "squeue", "sacct", "scancel", "sinfo", "scontrol"}
BENCH = {"name": "bench-one", "steps": [{"name": "run", "command": ["true"],
                                         "resources": {"memory_mb": 16, "time_minutes": 2}}]}
HOLD = {"name": "bench-hold", "steps": [{"name": "run", "command": ["sleep", "1"],
                                         "resources": {"memory_mb": 16, "time_minutes": 2, "partition": "compute"}}]}


def fresh_ssh_sbatch(stack, known_hosts: str) -> tuple[float, str]:
    key = user_key_path(stack, "bob")
    start = time.perf_counter()
    out = subprocess.run(["ssh", "-p", str(ssh_port(stack, "alpha")), "-i", str(key), "-o", "BatchMode=yes",
                          "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                          f"bob@{stack.host}", "sbatch", "--parsable", "--job-name=heroes.bench.ssh", "--mem=16M",
                          "--time=2", "--output=/dev/null"],
                         input="#!/bin/sh\ntrue\n", capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0 and out.stdout.strip().split(";")[0].isdigit(), out.stderr
    return elapsed, out.stdout.strip().split(";")[0]


def cancel_all(stack, job_ids: list[str]) -> None:
    """scancel (as root, on alpha) every job this run submitted, by id."""
    env = dict(os.environ, SLURM_CONF=str(slurm_conf_path(stack, "alpha")))
    ids = [j for j in job_ids if j]
    for i in range(0, len(ids), 200):
        subprocess.run(["scancel", *ids[i:i + 200]], env=env, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-rounds", type=int, default=20)
    parser.add_argument("--live", type=int, default=200)
    parser.add_argument("--burst", type=int, default=500)
    args = parser.parse_args()
    stack = settings_module.load()
    tmp = Path(tempfile.mkdtemp(prefix="heroes-bench-wf-"))
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text(known_hosts_line(stack, "alpha") + "\n")
    job_ids: list[str] = []  # job ids, cancelled at the end
    with isolated_secrets():
        db = tmp / "heroes.db"
        env = dict(os.environ, HEROES_STATE_DIR=str(stack.state), HEROES_SERVICE_PORT=str(free_port()),
                   HEROES_SERVICE_DATABASE_URL=f"sqlite:///{db}", HEROES_SERVICE_KEYCLOAK_URL=kc.base_url(stack),
                   HEROES_SERVICE_HUB_API_URL=hub_api(stack), HEROES_SERVICE_HUB_API_TOKEN=admin_token(stack),
                   HEROES_SERVICE_WORKFLOWS_RECONCILER="false", HEROES_SERVICE_WORKFLOWS_DRIVERS="16")
        service = Service(env, str(tmp / "service.log"))
        service.start()
        try:
            alice, bob = login(service, "alice"), login(service, "bob")
            r = alice.post(service.url("/organization/admin/cluster/"), timeout=60, json={
                "name": "alpha", "host": stack.host, "port": ssh_port(stack, "alpha"),
                "host_key_fingerprint": host_key_fingerprint(stack, "alpha"), "work_dir": "heroes-work/{login}",
                "container_runtime": "none"})
            assert r.status_code == 201, r.text
            cluster_id = r.json()["id"]
            for template in (BENCH, HOLD):
                r = alice.post(service.url("/organization/admin/workflow/template"), json={"template": template})
                assert r.status_code == 201, r.text

            def submit(template: str = "bench-one") -> tuple[float, str, int]:
                start = time.perf_counter()
                r = bob.post(service.url("/organization/workflow/submit"), timeout=120,
                             json={"template": template, "cluster": "alpha"})
                elapsed = time.perf_counter() - start
                if r.status_code != 201 or not r.json()["steps"][0]["job_id"]:
                    return elapsed, "", r.status_code
                return elapsed, r.json()["steps"][0]["job_id"], 201

            # 1. latency, interleaved so that both see the same controller load
            submit()  # warm the pool (first certificate + connection)
            api_t, ssh_t = [], []
            for _ in range(args.latency_rounds):
                elapsed, name, status = submit()
                assert status == 201
                api_t.append(elapsed)
                job_ids.append(name)
                elapsed, job_id = fresh_ssh_sbatch(stack, str(known_hosts))
                ssh_t.append(elapsed)
                job_ids.append(job_id)
            api_med, ssh_med = statistics.median(api_t), statistics.median(ssh_t)
            print(f"submit latency (API -> job id), median of {args.latency_rounds}: {api_med * 1000:.0f} ms; "
                  f"fresh ssh sbatch: {ssh_med * 1000:.0f} ms; ratio {api_med / ssh_med:.2f} (goal <= 1.0)")

            # 2. commands per reconcile cycle with N live instances
            with ThreadPoolExecutor(16) as pool:
                results = list(pool.map(lambda _: submit("bench-hold"), range(args.live)))
            job_ids += [n for _, n, _ in results if n]
            commands_per_cycle = count_cycle_commands(db, cluster_id, stack)
            print(f"reconcile cycle with {args.live} live instances on alpha: {commands_per_cycle} Slurm command(s) "
                  f"per cycle (goal <= 2)")

            # 3. burst
            start = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                results = list(pool.map(lambda _: submit(), range(args.burst)))
            elapsed = time.perf_counter() - start
            job_ids += [n for _, n, _ in results if n]
            errors = Counter(s for _, _, s in results if s != 201)
            lat = sorted(t for t, _, _ in results)
            print(f"{args.burst} submissions by 16 clients in {elapsed:.1f} s ({args.burst / elapsed:.1f}/s), "
                  f"errors {sum(errors.values())} {dict(errors)}; p50 {lat[len(lat) // 2] * 1000:.0f} ms, "
                  f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.0f} ms")
            alice.delete(service.url(f"/organization/admin/cluster/{cluster_id}"), timeout=60)
        finally:
            service.stop()
            cancel_all(stack, job_ids)


def count_cycle_commands(db: Path, cluster_id: str, stack) -> list[int]:
    """Run reconcile cycles in this process on the service's database, counting Slurm commands sent."""
    from heroes_service.clusters.connector import ClusterConnector
    from heroes_service.store import make_engine, session_factory
    from heroes_service.workflows.config import WorkflowSettings
    from heroes_service.workflows.engine import WorkflowEngine

    sent: list[str] = []
    original = ClusterConnector.run

    def counting(self, argv, **kwargs):
        if argv and argv[0] in SLURM:
            sent.append(argv[0])
        return original(self, argv, **kwargs)

    ClusterConnector.run = counting
    try:
        engine = WorkflowEngine(session_factory(make_engine(f"sqlite:///{db}")), WorkflowSettings(reconciler=False),
                                lambda: None, stack.state)
        counts = []
        for _ in range(3):
            sent.clear()
            stats = engine.reconcile(cluster_id)
            counts.append(len(sent))
            print(f"  cycle: tracked {stats.tracked} steps, {len(sent)} Slurm commands {Counter(sent)}, "
                  f"{stats.transitions} transitions")
        engine.pool.shutdown(wait=True)
        return counts
    finally:
        ClusterConnector.run = original


if __name__ == "__main__":
    main()
