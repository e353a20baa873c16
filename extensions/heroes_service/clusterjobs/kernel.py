"""Kind ``kernel``: a remote ipykernel as a Slurm job (the gateway server's ``SlurmKernelProvisioner``).

The job picks five free ports on the node, writes its connection file (with the HMAC key the provisioner
chose, which travels in the script only) to ``~/.heroes/kernels/kernel-<job id>.json`` (0600) and ``exec``s
ipykernel on it, so the batch shell IS the kernel (``scancel --batch --signal=INT`` interrupts it). Once the
job runs, the service reads that file over SFTP as the owner and forwards the five ports to its loopback
(``tunnels.Forward``); the state answer carries the local ports, never the key.
"""
from __future__ import annotations

import json
import re
from typing import Any

from .kinds import JobContext, JobKind, JobSpecError, Rendered, register_kind
from .script import render_script

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
CONN_DIR = ".heroes/kernels"
_KEY = re.compile(r"^[A-Za-z0-9-]{16,128}$")

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


def conn_path(job_id: str) -> str:
    return f"{CONN_DIR}/kernel-{job_id}.json"


class KernelKind(JobKind):
    """Parameters: ``key`` (the session's HMAC key), ``python`` (the node-side interpreter), ``bind_ip``."""

    name = "kernel"

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        key = str(params.get("key", ""))
        if not _KEY.match(key):
            raise JobSpecError("key: 16-128 characters of letters, digits and '-'")
        python = str(params.get("python") or "")
        if not python or "\x00" in python or len(python) > 4096:
            raise JobSpecError("python: the node-side interpreter's path")
        from .jupyterlab import _bind_ip

        return {"key": key, "python": python, "bind_ip": _bind_ip(params.get("bind_ip"))}

    def render(self, job: JobContext) -> Rendered:
        p = job.params
        script = render_script(job.sbatch_options(f"{CONN_DIR}/kernel-%j.log"), {"HEROES_KERNEL_KEY": p["key"]},
                               [p["python"], "-c", KERNEL_MAIN, f"{CONN_DIR}/kernel-%s.json", p["bind_ip"]])
        return Rendered(script, folders=(CONN_DIR,))

    def public_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"bind_ip": params.get("bind_ip", "")}

    def on_running(self, job, service) -> dict[str, Any]:
        """The kernel's ports on the service host's loopback (forwarded once the connection file exists);
        ``{"state": "PENDING"}`` while the job has not written it yet."""
        opened = {name: port for name, port in service._tunnels_of(job.id).items() if name in PORT_NAMES}
        if len(opened) == len(PORT_NAMES):
            return {"ports": opened}
        conn = service.owner_conn(job)
        try:
            with conn.get_stream(conn_path(job.job_id), timeout=30) as stream:
                info = json.loads(stream.read())
        except Exception:  # noqa: BLE001 - not written yet: still starting
            return {"state": "PENDING"}
        target = info["ip"] if info.get("ip") not in ("0.0.0.0", "", None) else (job.node_addr or job.node)
        ports = {name: service.forward(job, name, target, int(info[name])).local_port for name in PORT_NAMES}
        return {"ports": ports, "node": info.get("node") or job.node}

    def on_end(self, job, service) -> None:
        if job.job_id:
            service.owner_conn(job).run(["rm", "-f", conn_path(job.job_id)], timeout=30)


register_kind(KernelKind())
