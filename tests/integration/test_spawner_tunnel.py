"""The spawner's SSH tunnel option on real alpha: a server on a node (here a tiny HTTP server in bob's Slurm
job) is reached through a local port on the hub host that relays over bob's SSH connection to the login
node; after a "hub restart" (a new spawner object loading the saved state) the same local port works
again, and when the job dies the tunnel closes at the next poll.
"""
from __future__ import annotations

import asyncio
import shlex
import socket
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from heroes_service.clusters import identity
from heroes_service.clusters.config import get_clusters_settings
from spawner_support import ensure_enrolled, slurm, wait_until

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


@pytest.fixture
def env(require, stack_settings, monkeypatch):
    for name in ("jupyterhub", "slurm-alpha", "login-alpha"):
        require(name)
    ensure_enrolled(stack_settings, "alpha")
    monkeypatch.setenv("HEROES_STATE_DIR", str(stack_settings.state))  # the hub's environment
    get_clusters_settings.cache_clear()
    identity.forget_secrets()
    yield stack_settings
    get_clusters_settings.cache_clear()
    identity.forget_secrets()


def new_spawner():
    from heroes_spawner.slurm import HeroesSpawner

    user = SimpleNamespace(name="bob", groups=[SimpleNamespace(name="acme")], url="/user/bob/")
    return HeroesSpawner(user=user, tunnel_to_node=True)


def fetch(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=30).text


def test_a_node_server_through_the_tunnel_survives_a_hub_restart(env):
    out = slurm(env, "alpha", "sbatch", "--parsable", "--job-name=heroes-tunnel-test", "--time=5", "--mem=256",
                f"--wrap=exec python3 -c {shlex.quote(SERVER)}", user="bob")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().split(";")[0]
    port_file = Path(f"/home/bob/.heroes-tunnel-test-{job_id}.port")
    try:
        port = int(wait_until("the node's server", lambda: port_file.exists() and port_file.read_text(), 120))
        spawner = new_spawner()
        spawner.target, spawner.cluster_name, spawner.job_id = "cluster:alpha", "alpha", job_id
        assert asyncio.run(spawner.poll()) is None and spawner.state_isrunning()
        spawner.remote = f"{spawner.node_addr}:{port}"
        asyncio.run(spawner._open_tunnel())
        local = spawner.tunnel_port
        assert local != port and fetch(local).startswith("node=alpha-n")

        # hub restart: the old process's listener is gone, a new spawner restores the same local port
        state = spawner.get_state()
        spawner._close_tunnel()
        with pytest.raises(httpx.ConnectError):
            fetch(local)
        restored = new_spawner()
        restored.load_state(state)
        assert asyncio.run(restored.poll()) is None
        assert restored.tunnel_port == local and fetch(local).startswith("node=alpha-n")

        # the job dies: the next poll reports it gone and closes the tunnel
        slurm(env, "alpha", "scancel", job_id)
        wait_until("the job to end", lambda: asyncio.run(restored.poll()) == 1, 30)
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", local)) != 0
    finally:
        slurm(env, "alpha", "scancel", job_id)
        port_file.unlink(missing_ok=True)
