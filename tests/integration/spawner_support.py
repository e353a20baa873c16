"""Shared helpers of the spawner tests (no tests here): alpha enrolled for acme in the RUNNING service,
the hub's admin API, Slurm's own view of the queue, and tokens that act as a user's browser would.

alpha is enrolled through the service's API by alice (acme's org admin), exactly as a site would; if it
already is (another test run), the record is reused and left in place.
"""
from __future__ import annotations

import os
import pwd
import subprocess
import time

import httpx

from heroes_dev.components.jupyterhub import admin_token, hub_url
from heroes_dev.components.login import host_key_fingerprint, ssh_port
from heroes_dev.components.slurm import slurm_env

PREFIX = "/services/heroes/api/v1"
#: Slurm job names of cluster jobs are ``heroes.<kind>.<id>`` (clusterjobs/models.py): prefixes of bob's jobs
SERVER_JOB = "heroes.jupyterlab."
KERNEL_JOB = "heroes.kernel."


def service_login(stack, username: str, password: str) -> httpx.Client:
    """A client of the running service with ``username``'s Keycloak bearer token."""
    base = hub_url(stack).rstrip("/") + PREFIX
    r = httpx.post(f"{base}/organization/auth/login", json={"username": username, "password": password}, timeout=30)
    r.raise_for_status()
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {r.json()['access_token']}"}, timeout=60)


def ensure_enrolled(stack, cluster: str = "alpha") -> str:
    """The id of ``cluster`` enrolled for acme in the running service (enrolled now by alice if missing)."""
    with service_login(stack, "alice", "alice-pass") as alice:
        listed = alice.get("/organization/admin/cluster/")
        listed.raise_for_status()
        for record in listed.json():
            if record["name"] == cluster:
                return record["id"]
        scanned = alice.post("/organization/admin/cluster/host-key",
                             json={"host": stack.host, "port": ssh_port(stack, cluster)})
        scanned.raise_for_status()
        assert scanned.json()["fingerprint"] == host_key_fingerprint(stack, cluster)
        r = alice.post("/organization/admin/cluster/", json={
            "name": cluster, "host": stack.host, "port": ssh_port(stack, cluster),
            "host_key_fingerprint": scanned.json()["fingerprint"], "work_dir": "heroes-work/{login}",
            "container_runtime": "charliecloud"})
        if r.status_code == 409:  # enrolled concurrently by another run
            return next(c["id"] for c in alice.get("/organization/admin/cluster/").json() if c["name"] == cluster)
        assert r.status_code == 201, r.text
        return r.json()["id"]


def hub_service_token(stack) -> str:
    """The token of the hub's own token-only service (what the spawner calls the service's hub-only routes with)."""
    return (stack.data("jupyterhub") / "hub" / "server-keys-token").read_text().strip()


def service_api_url(stack) -> str:
    return f"http://{stack.host}:{stack.ports.heroes_service}{PREFIX}"


def hub_admin(stack) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{stack.ports.hub_api}/hub/api",
                        headers={"Authorization": f"token {admin_token(stack)}"}, timeout=60)


def server_token(stack, username: str) -> str:
    """A token of ``username`` that may open their server (what their browser cookie allows)."""
    with hub_admin(stack) as api:
        r = api.post(f"/users/{username}/tokens", json={"scopes": [f"access:servers!user={username}"],
                                                         "expires_in": 3600, "note": "spawner tests"})
        r.raise_for_status()
        return r.json()["token"]


def slurm(stack, cluster: str, *argv: str, user: str | None = None) -> subprocess.CompletedProcess:
    """A Slurm command on the embedded cluster, as root (an operator's view) or as ``user``."""
    env = {**os.environ, **slurm_env(stack, cluster)}
    prefix = ["runuser", "-u", user, "--", "env", f"SLURM_CONF={env['SLURM_CONF']}"] if user else []
    cwd = pwd.getpwnam(user).pw_dir if user else None  # the cluster account's home (its job's working dir)
    return subprocess.run([*prefix, *argv], env=env, capture_output=True, text=True, timeout=60, cwd=cwd)


def jobs_named(stack, cluster: str, name: str, user: str = "bob") -> list[dict]:
    """Live jobs called ``name`` (a name ending in '.' is a prefix, then only ``user``'s): id, user, state,
    node (Slurm's own answer, not the hub's)."""
    if name.endswith("."):
        out = slurm(stack, cluster, "squeue", "-h", "-u", user, "-o", "%i|%u|%T|%N|%j").stdout
    else:
        out = slurm(stack, cluster, "squeue", "-h", "-n", name, "-o", "%i|%u|%T|%N|%j").stdout
    rows = [line.split("|", 4) for line in out.splitlines() if line.strip()]
    return [{"id": r[0], "user": r[1], "state": r[2], "node": r[3], "name": r[4]} for r in rows
            if r[4] == name or (name.endswith(".") and r[4].startswith(name))]


def server_job(server: dict) -> str:
    """The Slurm job name of a hub server's cluster job (unique: ``heroes.jupyterlab.<the service's id>``)."""
    return f"{SERVER_JOB}{server['state']['cluster_job']}"


def wait_until(what: str, probe, timeout: float, every: float = 1.0):
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def server_of(stack, username: str) -> dict | None:
    with hub_admin(stack) as api:
        return api.get(f"/users/{username}").json().get("servers", {}).get("")


def start_cluster_server(stack, options: dict, attempts: int = 3) -> dict:
    """Start bob's server with ``options`` and wait until it is ready; its server model.

    The hub is shared: another session's teardown may stop every demo user's server while ours spawns
    (the spawn then fails with 500 or the server vanishes). Such a spawn is retried, up to ``attempts``."""
    last = ""
    for _ in range(attempts):
        with hub_admin(stack) as api:
            api.delete("/users/bob/server")
            wait_until("bob's old server to stop", lambda: server_of(stack, "bob") is None, 60)
            r = api.post("/users/bob/server", json={"user_options": options})
        if r.status_code not in (201, 202):
            last = f"{r.status_code} {r.text[:200]}"
            continue
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            server = server_of(stack, "bob")
            if server and server.get("ready"):
                return server
            if server is None:
                last = "the server vanished while starting"
                break
            time.sleep(2)
        else:
            raise AssertionError("bob's cluster server was not ready after 240s")
    raise AssertionError(f"bob's cluster server did not start: {last}")
