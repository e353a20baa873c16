"""The spawner's SSH tunnel option on real alpha, now held by the service: a server on a node (a tiny HTTP
server in a cluster job of bob's, of a kind this test registers) is reached through a local port of the
gateway host that the SERVICE relays over bob's SSH connection to the login node (the hub holds no cluster
credential). After a service restart (its forwards gone) the hub's next poll asks for the same local port
again, and when the job dies the tunnel closes.

The service runs in-process here (uvicorn on a free port, SQLite, its own CA) so that the test can register
its kind and restart the forwards; the spawner is the hub's class talking HTTP to it with the hub's real
service token (checked by the real hub).
"""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from heroes_service.clusterjobs import JobKind, Rendered, register_kind, render_script
from heroes_service.clusters import identity
from cluster_testing import free_port, isolated_secrets
from heroes_service.settings import get_settings
from heroes_service.workflows.config import get_workflow_settings
from service_support import DEMO_PASSWORDS, Api, service_settings
from spawner_support import hub_service_token, slurm, wait_until
from workflow_support import enroll

pytestmark = pytest.mark.integration
SERVER = r"""
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("node=" + os.environ["SLURMD_NODENAME"]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = http.server.HTTPServer(("127.0.0.1", 0), H)
with open(os.path.expanduser("~/.heroes-tunnel-test-%s.port" % os.environ["SLURM_JOB_ID"]), "w") as f:
    f.write(str(s.server_port))
s.serve_forever()
"""


class HttpKind(JobKind):
    """A node-side HTTP server (what a JupyterLab is to the tunnel, without the hub's port report)."""

    name = "test-http"

    def render(self, job) -> Rendered:
        return Rendered(render_script(job.sbatch_options("/dev/null"), {}, ["python3", "-c", SERVER]))


@pytest.fixture(scope="module")
def service(stack_settings, require, tmp_path_factory):
    import uvicorn
    from fastapi.testclient import TestClient

    from heroes_service.app import create_app

    for name in ("keycloak", "jupyterhub", "slurm-alpha", "login-alpha"):
        require(name)
    register_kind(HttpKind())
    os.environ["HEROES_STATE_DIR"] = str(stack_settings.state)
    get_settings.cache_clear()
    get_workflow_settings.cache_clear()
    db = f"sqlite:///{tmp_path_factory.mktemp('tunnel-db') / 'heroes.db'}"
    with isolated_secrets():
        identity.set_cluster_login_resolver(None)
        app = create_app(service_settings(stack_settings, db))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until("the in-process service", lambda: server.started, 30, 0.2)
        with TestClient(app) as client:
            alice = Api(client).login("alice", DEMO_PASSWORDS["alice"])
            cluster_id = enroll(alice, stack_settings, "alpha")
            yield {"app": app, "url": f"http://127.0.0.1:{port}{app.state.settings.api_prefix}"}
            alice.delete(f"/organization/admin/cluster/{cluster_id}")
        server.should_exit = True
        thread.join(30)
        app.state.engine.dispose()


def new_spawner(stack, service):
    from heroes_spawner.spawner import HeroesSpawner

    user = SimpleNamespace(name="bob", groups=[], url="/user/bob/")
    spawner = HeroesSpawner(user=user, tunnel_to_node=True, service_api_url=service["url"],
                            service_token=hub_service_token(stack))
    spawner.target, spawner.cluster_name = "cluster:alpha", "alpha"
    return spawner


def fetch(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=30).text


def test_a_node_server_through_the_tunnel_survives_a_service_restart(stack_settings, service):
    spawner = new_spawner(stack_settings, service)
    created = asyncio.run(spawner.service().submit("bob", "test-http", "alpha", {"minutes": 5, "memory_mb": 256}, {}))
    spawner.cluster_job, spawner.job_id = created["id"], created["job_id"]
    port_file = Path(f"/home/bob/.heroes-tunnel-test-{created['job_id']}.port")
    try:
        port = int(wait_until("the node's server", lambda: port_file.exists() and port_file.read_text(), 120))
        wait_until("the job running", lambda: asyncio.run(spawner.poll()) is None and spawner.state_isrunning(), 60)
        spawner.remote = f"{spawner.node_addr}:{port}"
        asyncio.run(spawner._open_tunnel())
        local = spawner.tunnel_port
        assert local != port and fetch(local).startswith("node=alpha-n")

        # the service restarts: its forwards are gone; the hub's next poll asks for the same local port again
        state = spawner.get_state()
        service["app"].state.cluster_jobs.close()
        with pytest.raises(httpx.ConnectError):
            fetch(local)
        restored = new_spawner(stack_settings, service)
        restored.load_state(state)
        assert asyncio.run(restored.poll()) is None
        assert restored.tunnel_port == local and fetch(local).startswith("node=alpha-n")

        # the job dies: the next poll reports it gone, and the service has closed the tunnel
        slurm(stack_settings, "alpha", "scancel", created["job_id"])
        wait_until("the job to end", lambda: asyncio.run(restored.poll()) == 1, 30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", local)) != 0:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("the tunnel outlived its job")
    finally:
        slurm(stack_settings, "alpha", "scancel", created["job_id"])
        port_file.unlink(missing_ok=True)
