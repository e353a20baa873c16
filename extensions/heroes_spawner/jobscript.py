"""The batch script of a cluster-side JupyterLab: pure functions, no I/O (unit-tested).

Why not batchspawner's template and ``batchspawner-singleuser``: the script crosses SSH on stdin and is
read by ``sbatch`` as a file, so every value in it is rendered here with ``shlex.quote`` (never a template
that interpolates user text into shell), and the cluster's Python needs nothing beyond the standard
library to report its port back (``REPORT_PORT`` below), so the single-user venv needs no batchspawner.

What the job does: pick a free port on the node, POST ``{"port": N}`` to ``$JUPYTERHUB_API_URL/batchspawner``
with the server's own token (the hub's handler, see ``api.py``), rewrite the port of
``JUPYTERHUB_SERVICE_URL`` and ``exec`` jupyterhub-singleuser.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

#: environment variable names we are willing to write into a script
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

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


class ScriptError(ValueError):
    """A value cannot be written into a batch script safely."""


@dataclass
class JobRequest:
    """What one server job asks Slurm for (already validated against the cluster by ``form``)."""

    job_name: str
    partition: str
    cores: int
    memory_mb: int
    minutes: int
    gpus: int = 0
    output: str = "jupyterhub-heroes-%j.log"
    extra_options: list[str] = field(default_factory=list)

    def sbatch_options(self) -> list[str]:
        """``#SBATCH`` options; each is one argv-style token, checked for newlines."""
        options = [f"--job-name={self.job_name}", f"--partition={self.partition}", "--nodes=1", "--ntasks=1",
                   f"--cpus-per-task={self.cores}", f"--mem={self.memory_mb}M",
                   f"--time={format_minutes(self.minutes)}", f"--output={self.output}"]
        if self.gpus:
            options.append(f"--gres=gpu:{self.gpus}")
        options += list(self.extra_options)
        for option in options:
            if "\n" in option or "\r" in option or "\x00" in option:
                raise ScriptError("batch options must not contain line breaks")
        return options


def format_minutes(minutes: int) -> str:
    """Slurm's ``[days-]hours:minutes:seconds``."""
    days, rest = divmod(int(minutes), 24 * 60)
    hours, mins = divmod(rest, 60)
    return (f"{days}-" if days else "") + f"{hours:02d}:{mins:02d}:00"


def render(request: JobRequest, env: dict[str, str], python: str, command: list[str],
           bind_ip: str = "0.0.0.0") -> str:
    """The whole batch script: #SBATCH lines, quoted exports, then the port report and exec."""
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {option}" for option in request.sbatch_options()]
    lines += ["set -eu", "umask 077"]
    for name in sorted(env):
        if not _ENV_NAME.match(name):
            raise ScriptError(f"environment variable name {name!r} is not allowed")
        lines.append(f"export {name}={shlex.quote(str(env[name]))}")
    argv = [python, "-c", REPORT_PORT, bind_ip, *command]
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"
