"""jupyterhub-idle-culler with the hub's least-privilege role: it stops bob's idle cluster server and the
Slurm job goes with it. The hub's own culler runs with production timeouts; this test starts a second
culler process with the SAME service token (the role under test) and timeouts of seconds.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from spawner_support import (ensure_enrolled, jobs_named, server_job, server_of, start_cluster_server,
                                  wait_until)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def culler_token(require, stack_settings):
    for name in ("jupyterhub", "slurm-alpha", "login-alpha"):
        require(name)
    ensure_enrolled(stack_settings, "alpha")
    return (stack_settings.data("jupyterhub") / "hub" / "idle-culler-token").read_text().strip()


def test_the_culler_role_is_least_privilege(stack_settings, culler_token):
    api = httpx.Client(base_url=f"http://127.0.0.1:{stack_settings.ports.hub_api}/hub/api", timeout=30,
                       headers={"Authorization": f"token {culler_token}"})
    me = api.get("/user").json()
    assert set(me["scopes"]) >= {"list:users", "read:users:activity", "read:servers", "delete:servers"}
    assert not any(s.startswith(("admin:", "tokens", "access:servers")) for s in me["scopes"]), me["scopes"]
    assert api.get("/users").status_code == 200
    assert "auth_state" not in api.get("/users/bob").json()
    assert api.post("/users/culler-made-me").status_code == 403
    assert api.post("/users/bob/tokens", json={}).status_code == 403
    assert api.post("/users/bob/server").status_code == 403


def test_an_idle_cluster_server_is_culled_with_its_job(stack_settings, culler_token):
    server = start_cluster_server(stack_settings, {"target": "cluster:alpha", "cores": "1", "minutes": "10",
                                                   "memory_mb": "512"})
    assert jobs_named(stack_settings, "alpha", server_job(server))
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": culler_token}
    culler = subprocess.Popen([sys.executable, "-m", "jupyterhub_idle_culler",
                               f"--url=http://127.0.0.1:{stack_settings.ports.hub_api}/hub/api",
                               "--timeout=15", "--cull-every=5"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = time.monotonic()
        wait_until("the culler to stop bob's idle server", lambda: server_of(stack_settings, "bob") is None, 90)
        assert time.monotonic() - started >= 5  # culled by the culler's cycle, not at once by something else
        assert wait_until("the job to leave the queue", lambda: not jobs_named(stack_settings, "alpha", server_job(server)),
                          30)
    finally:
        culler.terminate()  # the process this test started, by its handle
        out, _ = culler.communicate(timeout=30)
    assert "Culling server bob" in out or "culling server bob" in out.lower(), out[-2000:]
