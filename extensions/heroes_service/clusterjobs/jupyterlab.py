"""Kind ``jupyterlab``: a cluster JupyterLab server the hub spawns for a user (``heroes_spawner``).

Why not batchspawner's template and ``batchspawner-singleuser``: the script is rendered by ``script.py``
(every value quoted), and the node's Python needs nothing beyond the standard library to report its port
back (``REPORT_PORT``), so the single-user venv needs no batchspawner.

What the job does: pick a free port on the node, POST ``{"port": N}`` to ``$JUPYTERHUB_API_URL/batchspawner``
with the server's own token (the hub's strict handler, ``heroes_spawner/api.py``), rewrite the port of
``JUPYTERHUB_SERVICE_URL`` and ``exec`` jupyterhub-singleuser. The environment (the server's API token, S3
keys of the notebooks bucket) travels in the script only: it is never stored in the database or answered.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from .kinds import JobContext, JobKind, JobSpecError, Rendered, register_kind
from .script import ENV_NAME, render_script

#: runs on the node with the job's python (stdlib only); argv[1] = bind address, argv[2:] = server command
REPORT_PORT = r"""
import json, os, socket, sys, urllib.parse, urllib.request
bind = sys.argv[1]
with socket.socket() as s:
    s.bind((bind if bind != "0.0.0.0" else "", 0))
    port = s.getsockname()[1]
url = os.environ["JUPYTERHUB_API_URL"].rstrip("/") + "/batchspawner"
body = json.dumps({"port": port}).encode()
req = urllib.request.Request(url, data=body, method="POST", headers={
    "Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"], "Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=60).read()
service = urllib.parse.urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
os.environ["JUPYTERHUB_SERVICE_URL"] = urllib.parse.urlunsplit(service._replace(netloc="%s:%d" % (bind, port)))
print("heroes: node %s, port %d" % (os.environ.get("SLURMD_NODENAME", "?"), port), flush=True)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _argv(value: Any, what: str, limit: int = 64) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > limit or \
            not all(isinstance(v, str) and v and "\x00" not in v and len(v) <= 4096 for v in value):
        raise JobSpecError(f"{what}: a non-empty list of at most {limit} strings")
    return list(value)


def _bind_ip(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(value or "0.0.0.0")))
    except ValueError:
        raise JobSpecError("bind_ip: an IP address") from None


class JupyterLabKind(JobKind):
    """Parameters (from the hub, acting for the user): ``env`` (name -> value, the server's environment),
    ``command`` (jupyterhub-singleuser's argv), ``python`` (the node-side interpreter), ``bind_ip``."""

    name = "jupyterlab"
    output = "jupyterhub-heroes-%j.log"

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        env = params.get("env") or {}
        if not isinstance(env, dict) or len(env) > 200:
            raise JobSpecError("env: an object of at most 200 variables")
        for name, value in env.items():
            if not isinstance(name, str) or not ENV_NAME.match(name) or not isinstance(value, str) or "\x00" in value:
                raise JobSpecError(f"env: {str(name)[:40]!r} is not a variable name with a text value")
        python = _argv([params.get("python") or ""], "python")[0]
        return {"env": dict(env), "command": _argv(params.get("command"), "command"), "python": python,
                "bind_ip": _bind_ip(params.get("bind_ip"))}

    def render(self, job: JobContext) -> Rendered:
        p = job.params
        return Rendered(render_script(job.sbatch_options(self.output), p["env"],
                                      [p["python"], "-c", REPORT_PORT, p["bind_ip"], *p["command"]]))

    def public_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"bind_ip": params.get("bind_ip", ""), "command": (params.get("command") or [""])[0]}


register_kind(JupyterLabKind())
