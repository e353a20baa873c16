"""``SlurmKernelProvisioner``: a jupyter_client kernel provisioner whose kernel is an ipykernel Slurm job
on an enrolled cluster, reached through SSH-tunnelled ports.

It runs inside the user's server and holds no cluster credentials: every cluster action is a call to the
hub's ``/hub/api/heroes/kernels`` API (extensions/heroes_spawner/kernels_api.py) with the server's own
``JUPYTERHUB_API_TOKEN``; the hub passes it on to the HEROES service (a cluster job of kind ``kernel``),
which submits the job as the user, forwards the kernel's five ports to the gateway's loopback through the
login node, and cancels the job on shutdown. ``job_id`` is the service's id of the job. Interrupt is ``scancel --signal=INT``
of the batch step (the kernel process itself); restart is shutdown + a new job.

Kernelspec (``kernels.py`` writes them per cluster):
``"metadata": {"kernel_provisioner": {"provisioner_name": "heroes-slurm-provisioner",
"config": {"cluster": "alpha", "partition": "", "cores": 1, "memory_mb": 1024, "minutes": 60}}}``.
Stdlib HTTP only: the single-user venv needs nothing beyond jupyter_client.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from typing import Any

from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Float, Integer, Unicode

_SIGNALS = {signal.SIGINT: "INT", signal.SIGTERM: "TERM", signal.SIGKILL: "KILL"}


class HubError(RuntimeError):
    """The hub's kernels API refused or failed; the message is the hub's."""


def _call(method: str, path: str, body: dict | None = None, timeout: float = 90) -> tuple[int, dict]:
    base = os.environ["JUPYTERHUB_API_URL"].rstrip("/") + "/heroes/kernels"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"], "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            text = answer.read().decode() or "{}"
            return answer.status, json.loads(text) if text.strip() else {}
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("message", detail)
        except ValueError:
            pass
        raise HubError(f"{exc.code}: {detail}") from None


class SlurmKernelProvisioner(KernelProvisionerBase):
    """A kernel as a Slurm job; see the module docstring."""

    cluster = Unicode(config=True, help="Enrolled cluster (name) the kernel runs on.")
    partition = Unicode("", config=True, help="Partition; empty: the cluster's default.")
    cores = Integer(1, config=True, help="Cores of the kernel job.")
    memory_mb = Integer(1024, config=True, help="Memory of the kernel job in MB.")
    minutes = Integer(60, config=True, help="Time limit of the kernel job in minutes.")
    gpus = Integer(0, config=True, help="GPUs of the kernel job.")
    start_timeout = Float(300, config=True, help="Seconds to wait for the job to run and its ports to appear.")

    job_id: str | None = None
    node: str = ""
    _exit: int | None = None

    @property
    def has_process(self) -> bool:
        return self.job_id is not None

    async def _hub(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        return await asyncio.to_thread(_call, method, path, body)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        # the key of the session the kernel manager signs messages with; the hub passes it to the job
        km = self.parent
        if not km.session.key:
            km.session.key = km.session.new_key() if hasattr(km.session, "new_key") else os.urandom(16).hex().encode()
        kwargs = await super().pre_launch(**kwargs)
        kwargs.setdefault("cmd", ["remote-ipykernel"])
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        km = self.parent
        key = km.session.key.decode()
        _, created = await self._hub("POST", "", {
            "cluster": self.cluster, "partition": self.partition, "cores": self.cores, "memory_mb": self.memory_mb,
            "minutes": self.minutes, "gpus": self.gpus, "key": key})
        self.job_id, self._exit = created["job_id"], None
        self.log.info("remote kernel: job %s (Slurm job %s) on %s", self.job_id, created.get("slurm_job_id"),
                      self.cluster)
        deadline = time.monotonic() + self.start_timeout
        while True:
            _, state = await self._hub("GET", f"/{self.cluster}/{self.job_id}")
            if state["status"] == "RUNNING" and state.get("ports"):
                break
            if state["status"] == "NOTFOUND":
                self.job_id = None
                raise RuntimeError(f"the kernel job on {self.cluster} ended before it started ({state.get('state')})")
            if time.monotonic() > deadline:
                await self.kill()
                raise TimeoutError(f"the kernel job on {self.cluster} did not start in {self.start_timeout:.0f}s")
            await asyncio.sleep(1)
        self.node = state.get("node", "")
        self.connection_info = {"ip": "127.0.0.1", "transport": "tcp", "signature_scheme": km.session.signature_scheme,
                                "key": km.session.key, **state["ports"]}
        return self.connection_info

    async def poll(self) -> int | None:
        if self.job_id is None:
            return self._exit if self._exit is not None else 0
        try:
            _, state = await self._hub("GET", f"/{self.cluster}/{self.job_id}")
        except (HubError, OSError):
            return None  # unknown: alive until the hub says otherwise
        if state["status"] == "NOTFOUND":
            self.job_id, self._exit = None, 0
            return 0
        return None

    async def wait(self) -> int | None:
        while await self.poll() is None:
            await asyncio.sleep(1)
        return self._exit

    async def send_signal(self, signum: int) -> None:
        if self.job_id is None:
            return
        if signum == 0:
            return
        name = _SIGNALS.get(signum)
        if name is None:
            self.log.warning("remote kernel: signal %s not forwarded", signum)
            return
        await self._hub("POST", f"/{self.cluster}/{self.job_id}/signal", {"signal": name})

    async def kill(self, restart: bool = False) -> None:
        await self._cancel()

    async def terminate(self, restart: bool = False) -> None:
        await self._cancel()

    async def _cancel(self) -> None:
        if self.job_id is None:
            return
        try:
            await self._hub("DELETE", f"/{self.cluster}/{self.job_id}")
        except HubError as exc:
            if not str(exc).startswith("404"):
                raise
        self.job_id, self._exit = None, -signal.SIGTERM

    async def cleanup(self, restart: bool = False) -> None:
        await self._cancel()

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(cluster=self.cluster, job_id=self.job_id, node=self.node)
        return info

    async def load_provisioner_info(self, provisioner_info: dict) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.cluster = provisioner_info.get("cluster", self.cluster)
        self.job_id = provisioner_info.get("job_id")
        self.node = provisioner_info.get("node", "")

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, 10.0)

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, 20.0)
