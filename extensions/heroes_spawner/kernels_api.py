"""Hub API for remote kernels: ``/hub/api/heroes/kernels`` (the trusted side of ``heroes_kernels``).

The kernel provisioner runs inside the user's server and holds no cluster credentials; it asks the hub,
with the server's own ``JUPYTERHUB_API_TOKEN``, to

* ``POST   /hub/api/heroes/kernels``                      submit an ipykernel job as the user,
* ``GET    /hub/api/heroes/kernels/<cluster>/<job>``      state; once running, local tunnelled ports,
* ``POST   /hub/api/heroes/kernels/<cluster>/<job>/signal`` ``{"signal": "INT"}`` (interrupt),
* ``DELETE /hub/api/heroes/kernels/<cluster>/<job>``      ``scancel`` and close the tunnels.

Commands run as the user through ``access.connector`` (per-user certificates), and a job id is only
accepted when Slurm says it is the user's kernel job (name ``heroes-kernel-<user>``), so a hub restart
loses nothing: the tunnels are rebuilt on the next GET. The job writes its connection file (ports chosen
on the node, the HMAC key the provisioner sent) to ``~/.heroes/kernels/kernel-<job id>.json`` (0600); the
hub reads it by SFTP.
"""
from __future__ import annotations

import asyncio
import json
import re
import shlex
from dataclasses import dataclass, field

from jupyterhub.apihandlers import APIHandler, default_handlers
from tornado import web

from . import access, form
from .jobscript import JobRequest
from .slurm import classify
from .tunnel import Forward

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
_JOB = re.compile(r"^\d{1,12}$")
_KEY = re.compile(r"^[A-Za-z0-9-]{16,128}$")
SIGNALS = {"INT": "INT", "TERM": "TERM", "KILL": "KILL"}

#: on the node: choose five free ports, write the connection file (0600), exec ipykernel on it
KERNEL_MAIN = r"""
import json, os, socket, sys
path, ip = sys.argv[1] % os.environ["SLURM_JOB_ID"], sys.argv[2]
names = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
socks = [socket.socket() for _ in names]
for s in socks:
    s.bind((ip, 0))
info = {n: s.getsockname()[1] for n, s in zip(names, socks)}
for s in socks:
    s.close()
info.update(ip=ip, transport="tcp", signature_scheme="hmac-sha256", key=os.environ.pop("HEROES_KERNEL_KEY"),
            kernel_name="", node=os.environ.get("SLURMD_NODENAME", ""))
os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
fd = os.open(path + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as out:
    json.dump(info, out)
os.replace(path + ".part", path)
os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", path])
"""


CONN_DIR = ".heroes/kernels"


def conn_path(job_id: str) -> str:
    return f"{CONN_DIR}/kernel-{job_id}.json"


def job_name(user: str) -> str:
    return f"heroes-kernel-{user}"


@dataclass
class Tunnels:
    """The open forwards of one kernel job (rebuilt after a hub restart)."""

    node: str
    forwards: list = field(default_factory=list)


_tunnels: dict[tuple[str, str, str], Tunnels] = {}


def kernel_script(request: JobRequest, python: str, conn_path: str, key: str, bind_ip: str) -> str:
    """The kernel's batch script (every value quoted; the key travels in the script, never in argv)."""
    lines = ["#!/bin/bash", *[f"#SBATCH {o}" for o in request.sbatch_options()], "set -eu", "umask 077",
             f"export HEROES_KERNEL_KEY={shlex.quote(key)}",
             "exec " + " ".join(shlex.quote(a) for a in [python, "-c", KERNEL_MAIN, conn_path, bind_ip])]
    return "\n".join(lines) + "\n"


class _Base(APIHandler):
    def _user(self):
        user = self.current_user
        if user is None or getattr(user, "kind", "user") != "user":
            raise web.HTTPError(403, "remote kernels are for users' own servers")
        return user

    def _settings(self) -> dict:
        return self.settings.get("heroes_kernels", {})

    def _spawner_cfg(self, user):
        return user.spawner  # the default server's spawner carries the cluster traits

    def _view(self, user, cluster: str):
        view = access.cluster_for([g.name for g in user.groups], cluster)
        if view is None:
            raise web.HTTPError(404, f"cluster {cluster!r} is not enrolled for your organization")
        return view

    async def _job(self, user, cluster: str, job_id: str):
        """(connector, status, state, host) of the user's kernel job; 404 if it is not one."""
        view = await asyncio.to_thread(self._view, user, cluster)
        conn = access.connector(view, user.name)
        result = await asyncio.to_thread(conn.run, ["squeue", "-h", "-j", job_id, "-o", "%T|%B|%j"], timeout=60)
        status, state, rest = classify(result.rc, result.stdout, result.stderr)
        host, _, name = rest.partition("|")
        if status.name != "UNKNOWN" and name and name != job_name(user.name):
            raise web.HTTPError(404, "no such remote kernel of yours")
        return conn, status, state, host

    async def _run(self, user, cluster: str, argv: list[str], stdin: str | None = None):
        view = await asyncio.to_thread(self._view, user, cluster)
        conn = access.connector(view, user.name)
        return view, conn, await asyncio.to_thread(conn.run, argv, stdin=stdin, timeout=60)


class KernelsHandler(_Base):
    @web.authenticated
    async def post(self):
        user = self._user()
        body = self.get_json_body() or {}
        key = str(body.get("key", ""))
        if not _KEY.match(key):
            raise web.HTTPError(400, "key: 16-128 characters of letters, digits and '-'")
        cluster = str(body.get("cluster", ""))
        view = await asyncio.to_thread(self._view, user, cluster)
        try:
            choice = form.validate({**body, "target": f"cluster:{cluster}"}, view.partitions, view.default_partition)
        except form.OptionsError as exc:
            raise web.HTTPError(400, str(exc)) from None
        spawner = self._spawner_cfg(user)
        request = JobRequest(job_name=job_name(user.name), partition=choice.partition, cores=choice.cores,
                             memory_mb=choice.memory_mb, minutes=choice.minutes, gpus=choice.gpus,
                             output=f"{CONN_DIR}/kernel-%j.log")
        python = spawner._python()  # noqa: SLF001 - the same node-side python as the servers
        script = kernel_script(request, python, f"{CONN_DIR}/kernel-%s.json", key, spawner.node_bind_ip)
        conn = access.connector(view, user.name)
        await asyncio.to_thread(conn.run, ["mkdir", "-p", "-m", "700", CONN_DIR], timeout=60)
        result = await asyncio.to_thread(conn.run, ["sbatch", "--parsable"], stdin=script, timeout=60)
        if not result.ok:
            raise web.HTTPError(502, f"sbatch refused the kernel job: {result.stderr.strip()[:300]}")
        from heroes_service.clusters.slurm import parse_job_id

        job_id = parse_job_id(result.stdout)
        self.log.info("remote kernel of %s: job %s on %s", user.name, job_id, cluster)
        self.set_status(201)
        self.finish(json.dumps({"cluster": cluster, "job_id": job_id}))


class KernelHandler(_Base):
    @web.authenticated
    async def get(self, cluster: str, job_id: str):
        user = self._user()
        try:
            conn, status, state, host = await self._job(user, cluster, job_id)
        except web.HTTPError:
            raise
        except Exception as exc:  # noqa: BLE001 - unknown, the provisioner asks again
            self.finish(json.dumps({"status": "UNKNOWN", "detail": type(exc).__name__}))
            return
        key = (user.name, cluster, job_id)
        answer = {"status": status.name, "state": state}
        if status.name == "RUNNING":
            tunnels = _tunnels.get(key)
            if tunnels is None:
                try:
                    with await asyncio.to_thread(conn.get_stream, conn_path(job_id), timeout=30) as stream:
                        info = json.loads(stream.read())
                except Exception:  # noqa: BLE001 - not written yet: still starting
                    answer["status"] = "PENDING"
                    self.finish(json.dumps(answer))
                    return
                target = info["ip"] if info["ip"] not in ("0.0.0.0", "") else host
                tunnels = Tunnels(info.get("node") or host,
                                  [Forward(conn, target, int(info[name])) for name in PORT_NAMES])
                _tunnels[key] = tunnels
            answer.update(node=tunnels.node, ports={n: f.local_port for n, f in zip(PORT_NAMES, tunnels.forwards)})
        elif status.name == "NOTFOUND":
            self._forget(key)
        self.finish(json.dumps(answer))

    @web.authenticated
    async def delete(self, cluster: str, job_id: str):
        user = self._user()
        conn, status, _, _ = await self._job(user, cluster, job_id)
        if status.name != "NOTFOUND":
            result = await asyncio.to_thread(conn.run, ["scancel", job_id], timeout=60)
            if not result.ok:
                raise web.HTTPError(502, f"scancel: {result.stderr.strip()[:200]}")
        await asyncio.to_thread(conn.run, ["rm", "-f", conn_path(job_id)], timeout=60)
        self._forget((user.name, cluster, job_id))
        self.set_status(204)
        self.finish()

    @staticmethod
    def _forget(key) -> None:
        tunnels = _tunnels.pop(key, None)
        for forward in tunnels.forwards if tunnels else []:
            forward.close()


class SignalHandler(_Base):
    @web.authenticated
    async def post(self, cluster: str, job_id: str):
        user = self._user()
        conn, status, _, _ = await self._job(user, cluster, job_id)
        if status.name == "NOTFOUND":
            raise web.HTTPError(404, "the kernel job has ended")
        signal = SIGNALS.get(str((self.get_json_body() or {}).get("signal", "")).upper())
        if signal is None:
            raise web.HTTPError(400, "signal: INT, TERM or KILL")
        # --batch: the batch shell IS the kernel (exec), so the signal reaches ipykernel itself
        result = await asyncio.to_thread(conn.run, ["scancel", "--batch", f"--signal={signal}", job_id], timeout=60)
        if not result.ok:
            raise web.HTTPError(502, f"scancel: {result.stderr.strip()[:200]}")
        self.set_status(204)
        self.finish()


_CLUSTER = r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63})"
default_handlers.extend([
    (r"/api/heroes/kernels", KernelsHandler),
    (rf"/api/heroes/kernels/{_CLUSTER}/(\d{{1,12}})", KernelHandler),
    (rf"/api/heroes/kernels/{_CLUSTER}/(\d{{1,12}})/signal", SignalHandler),
])
