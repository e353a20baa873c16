"""Benchmark (not a test) of the one way to the clusters, against the embedded stack.

    .venv/bin/python tests/bench/bench_cluster_jobs.py [--rounds 15] [--spawns 2] [--no-spares]

1. Median API -> job id for each job kind, in the same run and interleaved with the floor: ``sbatch
   --parsable`` of the same kind of script over an ALREADY-OPEN SSH connection of bob's - the service's own
   connector (pooled, the same per-user certificate), and for reference a plain paramiko client with bob's
   key (one connection for the whole run). Kinds: a workflow step (POST /organization/workflow/submit, wait=true, as
   bob, with the energy hook the embedded stack sets, so the step runs under the staged collector), a cluster
   JupyterLab server and a remote kernel (POST /heroes/hub/cluster-jobs/, with the hub's service token, acting
   for bob). Goal: ratio <= 1.5 for each. Printed: the ratio of the medians, and the median of each sample's
   ratio to the floor run right after it (steadier on a shared, noisy machine), with an authenticated GET's
   round trip for reference (what any API call costs before it does anything). Its own service process
   (uvicorn with the hub's options for it, fresh SQLite, own user CA, the reconciler running as in
   production). The jobs it submits are cancelled at once (the servers' and kernels' through the API, as the
   hub would). Every measured call
   starts after a pause of SETTLE_S, so no measurement shares the host with the work the previous one left
   behind (the reconciler's wake-up, the next spare submitter starting on the login node): neither side gets
   the other's leftovers. ``--no-spares`` turns the spare submitters off (``warm_exec_idle_s=0``): then every
   submission starts sbatch on the login node itself, overlapped only with the service's own work.
2. A cluster JupyterLab server's time from spawn to ready against the job's own start, through the RUNNING
   hub and service (POST /hub/api/users/bob/server): spawn -> sbatch, the queue wait, the job's start ->
   Jupyter listening on the node (Jupyter's own start), Jupyter listening -> the hub says ready (the
   gateway's overhead: port report, the reconciler's RUNNING, proxy route), and ready - job start.
   Goal: ready - Jupyter listening <= 3 s.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import paramiko  # noqa: E402
import requests  # noqa: E402

from heroes_dev import settings as settings_module  # noqa: E402
from heroes_dev.components import keycloak as kc  # noqa: E402
from heroes_dev.components.jupyterhub import admin_token  # noqa: E402
from heroes_dev.components.login import host_key_fingerprint, known_hosts_line, ssh_port, user_key_path  # noqa: E402
from heroes_dev.components.slurm import slurm_conf_path  # noqa: E402
from heroes_service.workflows.config import STAGED_COLLECTOR_COMMAND  # noqa: E402
from cluster_testing import free_port, isolated_secrets  # noqa: E402
from service_support import hub_api  # noqa: E402
from spawner_support import hub_service_token  # noqa: E402
from test_workflows_restart import Service, login  # noqa: E402

BENCH = {"name": "bench-one", "steps": [{"name": "run", "command": ["true"],
                                         "resources": {"memory_mb": 64, "time_minutes": 2}}]}
RESOURCES = {"cores": 1, "memory_mb": 64, "minutes": 2}
SETTLE_S = 0.05
#: uvicorn's options as the hub starts the service (hub_config/jupyterhub_config.py): no access log line per call
AS_THE_HUB_STARTS_IT = ("--no-access-log", "--ws-per-message-deflate", "false")
LAB_ENV = {"JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api", "JUPYTERHUB_API_TOKEN": "bench",
           "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:9/user/bob/"}


class OpenSsh:
    """One SSH connection of bob's to alpha's login node, kept open: the floor of any submission."""

    def __init__(self, stack):
        self.client = paramiko.SSHClient()
        self.client.load_host_keys(os.devnull)
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        self.client.connect(stack.host, port=ssh_port(stack, "alpha"), username="bob",
                            key_filename=str(user_key_path(stack, "bob")), look_for_keys=False, allow_agent=False)

    def sbatch(self, script: str, options: list[str]) -> tuple[float, str]:
        time.sleep(SETTLE_S)
        start = time.perf_counter()
        stdin, stdout, stderr = self.client.exec_command(" ".join(["sbatch", "--parsable", *options]))
        stdin.write(script)
        stdin.channel.shutdown_write()
        out = stdout.read().decode()
        elapsed = time.perf_counter() - start
        assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
        return elapsed, out.strip().split(";")[0]


def open_connector(stack):
    """The service's connector for bob on alpha (same CA as the service process: the secrets dir is shared)."""
    from types import SimpleNamespace

    from heroes_service.clusters.identity import PER_USER, connector_as

    _, key_type, key_b64 = known_hosts_line(stack, "alpha").split()[:3]
    cluster = SimpleNamespace(id="bench-floor", name="alpha", organization="acme", host=stack.host,
                              port=ssh_port(stack, "alpha"), host_key_type=key_type, host_key_b64=key_b64,
                              identity_mode=PER_USER, service_login="heroes", service_key_enc=None)
    return connector_as(cluster, "bob", mode=PER_USER, acting_for="bob@acme")


class StepScript:
    """The bench step's own batch script and sbatch options, for a second floor: what sbatch itself takes for
    that job (a larger script, --chdir, --output) without anything of the gateway's."""

    def __init__(self, conn):
        from heroes_service.workflows.render import Context, render
        from heroes_service.workflows.templates import parse_template, resolve_parameters

        self.conn, template = conn, parse_template(BENCH)
        workdir = f"heroes-work/bob/bench-floor-{uuid.uuid4().hex[:8]}"
        assert conn.run(["mkdir", "-p", f"{workdir}/logs", f"{workdir}/.heroes"], timeout=60).ok
        ctx = Context(instance_id=uuid.uuid4().hex, template_id="bench", template=template,
                      values=resolve_parameters(template, {}), workdir=workdir, user_id="", username="bob",
                      organization="acme", organization_id="", runtime="none", image_path="",
                      energy_command=tuple(STAGED_COLLECTOR_COMMAND))
        self.script, self.options = render(ctx, template.steps[0], [])

    def sbatch(self) -> tuple[float, str]:
        return timed_sbatch(self.conn, self.script, self.options)


def timed_sbatch(conn, script: str, options: list[str]) -> tuple[float, str]:
    time.sleep(SETTLE_S)
    start = time.perf_counter()
    result = conn.run(["sbatch", "--parsable", *options], stdin=script, timeout=60)
    elapsed = time.perf_counter() - start
    assert result.ok, result.stderr
    return elapsed, result.stdout.strip().split(";")[0]


def scancel(stack, job_ids: list[str]) -> None:
    env = dict(os.environ, SLURM_CONF=str(slurm_conf_path(stack, "alpha")))
    ids = [j for j in job_ids if j]
    for i in range(0, len(ids), 200):
        subprocess.run(["scancel", *ids[i:i + 200]], env=env, capture_output=True)


def submit_latency(stack, rounds: int, spares: bool = True) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="heroes-bench-cj-"))
    hub = requests.Session()
    hub.headers["Authorization"] = f"token {hub_service_token(stack)}"
    job_ids: list[str] = []
    with isolated_secrets():
        env = dict(os.environ, HEROES_STATE_DIR=str(stack.state), HEROES_SERVICE_PORT=str(free_port()),
                   HEROES_SERVICE_DATABASE_URL=f"sqlite:///{tmp / 'heroes.db'}",
                   HEROES_SERVICE_KEYCLOAK_URL=kc.base_url(stack), HEROES_SERVICE_HUB_API_URL=hub_api(stack),
                   HEROES_SERVICE_HUB_API_TOKEN=admin_token(stack),
                   # the energy hook the embedded stack sets (on by default): every step runs under the collector
                   HEROES_SERVICE_WORKFLOWS_ENERGY_COMMAND=json.dumps(list(STAGED_COLLECTOR_COMMAND)),
                   HEROES_SERVICE_CLUSTERS_WARM_EXEC_IDLE_S="60" if spares else "0")
        service = Service(env, str(tmp / "service.log"), uvicorn_options=AS_THE_HUB_STARTS_IT)
        service.start()
        ssh = OpenSsh(stack)
        try:
            alice, bob = login(service, "alice"), login(service, "bob")
            r = alice.post(service.url("/organization/admin/cluster/"), timeout=60, json={
                "name": "alpha", "host": stack.host, "port": ssh_port(stack, "alpha"),
                "host_key_fingerprint": host_key_fingerprint(stack, "alpha"), "work_dir": "heroes-work/{login}",
                "container_runtime": "none"})
            assert r.status_code == 201, r.text
            cluster_id = r.json()["id"]
            assert alice.post(service.url("/organization/admin/workflow/template"),
                              json={"template": BENCH}).status_code == 201

            def step() -> float:
                time.sleep(SETTLE_S)
                start = time.perf_counter()
                r = bob.post(service.url("/organization/workflow/submit"), timeout=120,
                             json={"template": "bench-one", "cluster": "alpha"})
                elapsed = time.perf_counter() - start
                assert r.status_code == 201 and r.json()["steps"][0]["job_id"], r.text
                job_ids.append(r.json()["steps"][0]["job_id"])
                bob.delete(service.url(f"/organization/workflow/instance/{r.json()['id']}"), timeout=60)
                return elapsed

            def cluster_job(kind: str, params: dict) -> float:
                time.sleep(SETTLE_S)
                start = time.perf_counter()
                r = hub.post(service.url("/heroes/hub/cluster-jobs/"), timeout=120, json={
                    "user": "bob", "kind": kind, "cluster": "alpha", "resources": RESOURCES, "params": params})
                elapsed = time.perf_counter() - start
                assert r.status_code == 201 and r.json()["job_id"], r.text
                job_ids.append(r.json()["job_id"])
                hub.delete(service.url(f"/heroes/hub/cluster-jobs/{r.json()['id']}"), params={"user": "bob"},
                           timeout=60)
                return elapsed

            lab = {"env": LAB_ENV, "command": ["true"], "python": "/usr/bin/python3", "bind_ip": "127.0.0.1"}
            kernel = {"key": uuid.uuid4().hex, "python": "/usr/bin/python3", "bind_ip": "127.0.0.1"}
            kinds = {"workflow step": step, "jupyterlab": lambda: cluster_job("jupyterlab", lab),
                     "kernel": lambda: cluster_job("kernel", kernel)}
            floor_options = ["--job-name=heroes.bench.floor", "--mem=64M", "--time=2", "--output=/dev/null"]
            conn = open_connector(stack)
            for run in kinds.values():  # warm: first certificate, pooled connection, token and principal caches
                run()
            job_ids.append(timed_sbatch(conn, "#!/bin/sh\ntrue\n", floor_options)[1])
            step_script = StepScript(conn)
            own: list[float] = []
            times: dict[str, list[float]] = {name: [] for name in kinds}
            paired: dict[str, list[float]] = {name: [] for name in kinds}
            floor: list[float] = []
            raw: list[float] = []
            http: list[float] = []
            for _ in range(rounds):  # interleaved: every kind and the floors see the same controller load
                for name, run in kinds.items():
                    times[name].append(run())
                    elapsed, job_id = timed_sbatch(conn, "#!/bin/sh\ntrue\n", floor_options)
                    floor.append(elapsed)
                    paired[name].append(times[name][-1] / elapsed)   # against the floor right after it
                    job_ids.append(job_id)
                    elapsed, job_id = ssh.sbatch("#!/bin/sh\ntrue\n", floor_options)
                    raw.append(elapsed)
                    job_ids.append(job_id)
                    if name == "workflow step":
                        elapsed, job_id = step_script.sbatch()
                        own.append(elapsed)
                        job_ids.append(job_id)
                time.sleep(SETTLE_S)
                start = time.perf_counter()
                assert bob.get(service.url("/organization/auth/me"), timeout=30).status_code == 200
                http.append(time.perf_counter() - start)
            floor_med = statistics.median(floor)
            print(f"sbatch --parsable over an open SSH connection (the service's connector): median "
                  f"{floor_med * 1000:.1f} ms ({len(floor)} runs); plain paramiko client: "
                  f"{statistics.median(raw) * 1000:.0f} ms; for reference, an authenticated GET of the service "
                  f"(/organization/auth/me): {statistics.median(http) * 1000:.1f} ms")
            print(f"the bench step's own script and options (rendered by workflows/render.py, energy hook on), "
                  f"sbatch'd over the same connection into a folder made beforehand: median "
                  f"{statistics.median(own) * 1000:.1f} ms (what Slurm takes for that job itself)")
            for name, values in times.items():
                med = statistics.median(values)
                print(f"API -> job id, {name}: median {med * 1000:.1f} ms of {rounds}; ratio to the floor "
                      f"{med / floor_med:.2f} (goal <= 1.5; median of the ratios to the floor run right after "
                      f"each: {statistics.median(paired[name]):.2f})")
            step_med = statistics.median(times["workflow step"])
            print(f"API -> job id, workflow step, against its own script's floor (same script and options, folder "
                  f"made beforehand): ratio {step_med / statistics.median(own):.2f}")
            alice.delete(service.url(f"/organization/admin/cluster/{cluster_id}"), timeout=60)
        finally:
            ssh.client.close()
            service.stop()
            scancel(stack, job_ids)


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace(" ", "T"))


def spawn_to_ready(stack, spawns: int) -> None:
    api = requests.Session()
    api.headers["Authorization"] = f"token {admin_token(stack)}"
    base = f"http://127.0.0.1:{stack.ports.hub_api}/hub/api"
    env = dict(os.environ, SLURM_CONF=str(slurm_conf_path(stack, "alpha")))
    overheads, totals = [], []
    for _ in range(spawns):
        api.delete(f"{base}/users/bob/server", timeout=60)
        deadline = time.monotonic() + 60
        while api.get(f"{base}/users/bob", timeout=30).json().get("servers", {}).get("") and time.monotonic() < deadline:
            time.sleep(0.5)
        spawned = datetime.now()
        r = api.post(f"{base}/users/bob/server", timeout=120, json={"user_options": {
            "target": "cluster:alpha", "cores": "1", "minutes": "10", "memory_mb": "1024"}})
        assert r.status_code in (201, 202), r.text
        server: dict = {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            server = api.get(f"{base}/users/bob", timeout=30).json().get("servers", {}).get("") or {}
            if server.get("ready"):
                break
            time.sleep(0.1)
        ready = datetime.now()
        assert server.get("ready"), server
        job_id = server["state"]["job_id"]
        row = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "Submit,Start"], env=env,
                             capture_output=True, text=True).stdout.strip().splitlines()[0].split("|")
        submitted, started = _stamp(row[0]), _stamp(row[1])
        log = Path(f"/home/bob/jupyterhub-heroes-{job_id}.log")
        listening = None
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            match = re.match(r"\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ", line)
            if match and ("is running at" in line or "Jupyter Server" in line and "running" in line):
                listening = _stamp(match.group(1))
                break
        where = (f"spawn -> sbatch {(submitted - spawned).total_seconds():.1f} s, queue "
                 f"{(started - submitted).total_seconds():.0f} s, job start -> ready "
                 f"{(ready - started).total_seconds():.1f} s")
        totals.append((ready - started).total_seconds())
        if listening is not None:
            overhead = (ready - listening).total_seconds()
            overheads.append(overhead)
            where += (f" (Jupyter's own start {(listening - started).total_seconds():.1f} s, then the gateway "
                      f"{overhead:.2f} s)")
        print(f"cluster JupyterLab of bob, job {job_id}: {where}")
        api.delete(f"{base}/users/bob/server", timeout=60)
    if overheads:
        print(f"gateway overhead, Jupyter listening -> hub ready: median {statistics.median(overheads):.2f} s "
              f"(goal <= 3 s); job start -> ready: median {statistics.median(totals):.1f} s "
              f"(Slurm's start has 1 s resolution)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--spawns", type=int, default=2)
    parser.add_argument("--no-spares", action="store_true", help="every submission starts sbatch itself")
    args = parser.parse_args()
    stack = settings_module.load()
    if args.rounds:
        print(f"spare submitters: {'off' if args.no_spares else 'on'}")
        submit_latency(stack, args.rounds, spares=not args.no_spares)
    if args.spawns:
        spawn_to_ready(stack, args.spawns)


if __name__ == "__main__":
    main()
