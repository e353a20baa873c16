"""kill -9 of the service with 20 instances in flight, then a restart: every instance reaches its end state
and no job is ever submitted twice (counted with ``sacct`` by job name).

The service under test is our own uvicorn process on a free port with its own SQLite database (never the
hub's service). Instances are caught in every phase: staging a 40 MB input, submitting, queued, running.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from heroes_dev.components import keycloak as kc
from heroes_dev.components.jupyterhub import admin_token
from heroes_dev.components.login import host_key_fingerprint, ssh_port
from heroes_dev.components.slurm import slurm_conf_path
from cluster_testing import free_port, isolated_secrets
from service_support import DEMO_PASSWORDS, hub_api

pytestmark = pytest.mark.integration
PREFIX = "/services/heroes/api/v1"

TEMPLATE = {
    "name": "restart-mix", "title": "stage -> a -> b -> c",
    "parameters": [{"name": "data", "type": "file"}, {"name": "nap", "type": "int", "min": 0, "max": 60}],
    "steps": [
        {"name": "a", "command": ["sh", "-c", "sleep \"$1\"; wc -c < \"$2\" > outputs/size.txt", "sh", "{nap}",
                                  "{data}"], "resources": {"memory_mb": 64}},
        {"name": "b", "depends_on": ["a"], "command": ["sleep", "{nap}"], "resources": {"memory_mb": 64}},
        {"name": "c", "depends_on": ["b"], "command": ["sh", "-c", "echo done > outputs/done.txt"],
         "resources": {"memory_mb": 64}},
    ],
    "outputs": ["outputs/*"],
}


class Service:
    """Our own service process (uvicorn) on a free port."""

    def __init__(self, env: dict, log_path: str, uvicorn_options: tuple[str, ...] = ()):
        self.env, self.log_path, self.uvicorn_options = env, log_path, tuple(uvicorn_options)
        self.port = int(env["HEROES_SERVICE_PORT"])
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "heroes_service.app:app", "--host", "127.0.0.1",
                                      "--port", str(self.port), *self.uvicorn_options], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url("/health"), timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, open(self.log_path).read()[-3000:]
            time.sleep(0.3)
        raise AssertionError("service did not start")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)  # only the process this test started
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}{path}"


def login(service: Service, user: str) -> requests.Session:
    r = requests.post(service.url("/organization/auth/login"), json={"username": user, "password": DEMO_PASSWORDS[user]},
                      timeout=30)
    assert r.status_code == 200, r.text
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return session


def sacct_names(stack, cluster: str, names: list[str]) -> Counter:
    env = dict(os.environ, SLURM_CONF=str(slurm_conf_path(stack, cluster)))
    out = subprocess.run(["sacct", "--parsable2", "--noheader", "-X", "--allusers", "--starttime", "now-1hour",
                          "-o", "JobID,JobName", "--name", ",".join(names)], env=env, capture_output=True, text=True,
                         check=True).stdout
    return Counter(line.split("|", 1)[1] for line in out.splitlines() if line.strip())


def test_kill9_with_20_instances_in_flight_then_restart(stack_settings, require, tmp_path):
    for name in ("keycloak", "s3", "slurm-alpha", "slurm-beta", "login-alpha", "login-beta", "image"):
        require(name)
    with isolated_secrets():
        env = dict(os.environ, HEROES_STATE_DIR=str(stack_settings.state), HEROES_SERVICE_PORT=str(free_port()),
                   HEROES_SERVICE_DATABASE_URL=f"sqlite:///{tmp_path / 'heroes.db'}",
                   HEROES_SERVICE_KEYCLOAK_URL=kc.base_url(stack_settings),
                   HEROES_SERVICE_HUB_API_URL=hub_api(stack_settings),
                   HEROES_SERVICE_HUB_API_TOKEN=admin_token(stack_settings),
                   HEROES_SERVICE_WORKFLOWS_INTERVAL_S="1", PYTHONUNBUFFERED="1")
        service = Service(env, str(tmp_path / "service.log"))
        service.start()
        try:
            _scenario(service, stack_settings, tmp_path)
        finally:
            service.stop()


def _scenario(service: Service, stack, tmp_path) -> None:
    alice, bob = login(service, "alice"), login(service, "bob")
    clusters = []
    for cluster in ("alpha", "beta"):
        r = alice.post(service.url("/organization/admin/cluster/"), timeout=60, json={
            "name": cluster, "host": stack.host, "port": ssh_port(stack, cluster),
            "host_key_fingerprint": host_key_fingerprint(stack, cluster), "work_dir": "heroes-work/{login}",
            "container_runtime": "charliecloud"})
        assert r.status_code == 201, r.text
        clusters.append(r.json()["id"])
    r = alice.post(service.url("/organization/admin/workflow/template"), json={"template": TEMPLATE}, timeout=30)
    assert r.status_code == 201, r.text
    buckets = bob.get(service.url("/organization/data/list"), timeout=30).json()["buckets"]
    bucket = next(b["bucket"] for b in buckets if b["kind"] == "user" and b["default"])
    r = bob.post(service.url("/organization/data/upload"), params={"bucket": bucket, "key": "restart/input.bin"},
                 data=os.urandom(40 * 1024 * 1024), timeout=120)
    assert r.status_code == 201, r.text

    def submit(i: int) -> str:
        r = bob.post(service.url("/organization/workflow/submit"), timeout=60, json={
            "template": "restart-mix", "cluster": "alpha" if i % 2 else "beta", "wait": i < 8,
            "parameters": {"data": {"bucket": bucket, "key": "restart/input.bin"}, "nap": 4 + i % 3}})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    with ThreadPoolExecutor(8) as pool:  # 8 submitted through (queued/running by now), 12 still staging
        ids = list(pool.map(submit, range(8)))
        ids += list(pool.map(submit, range(8, 20)))
    # kill while some instances are still before sbatch and others are already queued (the scenario under
    # test), whatever the machine's speed: watch the database instead of sleeping a fixed time
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with sqlite3.connect(str(tmp_path / "heroes.db")) as probe:
            phases = {s for (s,) in probe.execute("SELECT state FROM workflow_instances")}
        if phases & {"NEW", "STAGING_IN", "SUBMITTING"} and phases & {"QUEUED", "RUNNING"}:
            break
        time.sleep(0.05)
    service.kill9()
    db = sqlite3.connect(str(tmp_path / "heroes.db"))
    at_kill = dict(db.execute("SELECT id, state FROM workflow_instances").fetchall())
    steps_at_kill = Counter(s for (s,) in db.execute("SELECT state FROM workflow_steps"))
    db.close()
    print("instances at kill:", Counter(at_kill.values()), "steps:", steps_at_kill)
    assert len(at_kill) == 20 and not set(at_kill.values()) & {"COMPLETED", "FAILED", "CANCELLED"}
    phases = set(at_kill.values())
    assert phases & {"NEW", "STAGING_IN", "SUBMITTING"} and phases & {"QUEUED", "RUNNING"}, at_kill

    service.start()
    deadline = time.monotonic() + 400
    final = {}
    while time.monotonic() < deadline and len(final) < len(ids):
        for iid in ids:
            if iid not in final:
                body = bob.get(service.url(f"/organization/workflow/instance/{iid}"), timeout=30).json()
                if body["state"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    final[iid] = body
        time.sleep(2)
    assert len(final) == 20, {i: bob.get(service.url(f"/organization/workflow/instance/{i}")).json()["state"]
                              for i in ids if i not in final}
    assert Counter(b["state"] for b in final.values()) == {"COMPLETED": 20}, \
        [(b["state"], b["reason"]) for b in final.values() if b["state"] != "COMPLETED"]
    names = {c: [s["job_name"] for b in final.values() if b["cluster"] == c for s in b["steps"]]
             for c in ("alpha", "beta")}
    duplicates = {}
    for cluster, wanted in names.items():
        counted = sacct_names(stack, cluster, wanted)
        assert set(counted) == set(wanted), set(wanted) - set(counted)
        duplicates.update({n: c for n, c in counted.items() if c != 1})
    assert duplicates == {}, duplicates
    adopted = sum("found by name" in e["detail"] for b in final.values() for e in b["events"])
    print(f"20/20 COMPLETED, 60 jobs, 0 duplicates; {adopted} job(s) adopted by name after the restart")
    sizes = {bob.get(service.url("/organization/data/download"), timeout=30,
                     params={"bucket": bucket, "key": f"workflows/{iid}/outputs/size.txt"}).text.strip() for iid in ids}
    assert sizes == {str(40 * 1024 * 1024)}
    for cluster_id in clusters:
        alice.delete(service.url(f"/organization/admin/cluster/{cluster_id}"), timeout=60)
