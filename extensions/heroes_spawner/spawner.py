"""``HeroesSpawner``: JupyterLab on the gateway or as a Slurm job on an enrolled cluster.

A subclass of batchspawner's ``SlurmSpawner`` that never runs a Slurm command itself: the job is a cluster
job of the HEROES service (kind ``jupyterlab``), submitted, watched and cancelled through the service's
``/heroes/hub/cluster-jobs`` API with the hub's own service token, acting for the user
(``service_client.py``). The hub therefore holds no database URL, no user CA and no cluster key, and a
poll costs no ``squeue``: the service's one reconciler per cluster keeps every job's state in its database.
Choosing "the gateway" in the form delegates to ``HeroesLocalSpawner`` (a child spawner), so one hub
spawner class serves both.

Differences from batchspawner, each for a known trap (see docs/architecture.md, pitfalls file):

* a state the service cannot give (service down, cluster unreachable) is UNKNOWN: the hub keeps the server
  and asks again next poll, it is never dropped (batchspawner#315); the reconciler, too, keeps a job whose
  ``squeue`` failed as it was;
* a job that is gone from the queue, or CANCELLED/COMPLETING/FAILED, is noticed on the next poll;
* the job's port comes back through ``api.py``'s strict handler (only ``port``, only our spawners);
* state (``job_id``, the service's job id, cluster, node address, target) is saved, so with
  ``cleanup_servers = False`` a hub restart finds the job again.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from batchspawner import JobStatus, SlurmSpawner
from jupyterhub.spawner import SpawnException
from traitlets import Bool, Dict, Float, Integer, Type, Unicode, default

from . import form
from .local import HeroesLocalSpawner
from .service_client import ClusterJobsClient, ServiceError

#: cluster-job states (the service's) in which the server is (or will be) alive
PENDING_STATES = {"SUBMITTING", "PENDING"}
RUNNING_STATES = {"RUNNING"}
#: traits of a Spawner the hub sets at spawn time; copied to the gateway child before it starts
_RUNTIME_TRAITS = ("api_token", "oauth_client_id", "oauth_access_scopes", "oauth_roles", "server_token_scopes",
                   "environment", "args", "cmd", "user_options", "cert_paths", "admin_access", "default_url")
_CHILD_KWARGS = ("user", "orm_spawner", "hub", "authenticator", "config", "proxy_spec", "db", "oauth_client_id",
                 "cookie_options", "cookie_host_prefix_enabled", "public_url", "public_hub_url")


def classify(state: dict | None) -> tuple[JobStatus, str, str]:
    """The service's answer for a job -> (status, state, node address). None (no answer) is UNKNOWN."""
    if state is None:
        return JobStatus.UNKNOWN, "", ""
    name = state.get("state", "")
    host = state.get("node_addr") or (state.get("node") or "").split(",")[0]
    if name in RUNNING_STATES:
        return JobStatus.RUNNING, name, host
    if name in PENDING_STATES:
        return JobStatus.PENDING, name, host
    return JobStatus.NOTFOUND, name, host


_CLIENTS: dict[tuple[str, str], ClusterJobsClient] = {}


class HeroesSpawner(SlurmSpawner):
    """Gateway or Slurm-on-an-enrolled-cluster, chosen in the spawn form (``user_options['target']``)."""

    gateway_spawner_class = Type(
        HeroesLocalSpawner, config=True,
        help="Spawner class used when the user chooses 'the gateway' (and for spawns without options).")
    singleuser_python = Unicode(
        "", config=True,
        help="Python on the cluster nodes that runs the port report-back (stdlib only). Empty: the 'python' "
             "next to Spawner.cmd[0], i.e. the single-user venv, which must be readable by cluster accounts.")
    node_bind_ip = Unicode(
        "0.0.0.0", config=True,
        help="Address the single-user server binds on the node. The proxy connects to the node's NodeAddr "
             "(from sinfo), so it must be reachable from the hub (or tunnelled, see docs). The embedded stack "
             "uses 127.0.0.1 (nodes are the hub's own machine).")
    service_api_url = Unicode(
        "", config=True,
        help="The HEROES service's API base (e.g. http://127.0.0.1:10101/services/heroes/api/v1): every cluster "
             "action of the hub is a request there. Empty: $HEROES_HUB_SERVICE_API_URL.")
    service_token = Unicode(
        "", config=True,
        help="Token of the hub's own token-only service that the HEROES service accepts for its hub-only routes "
             "(ServiceSettings.server_keys_service). Empty: $HEROES_HUB_SERVICE_TOKEN. Never logged.")
    start_wait_s = Float(
        10.0, config=True,
        help="While a cluster server starts, each state request may wait this long for the job to change "
             "(the service wakes its reconciler), so the hub learns of the start within about a second.")
    default_server_form = Bool(
        False, config=True,
        help="Show the spawn form for the default server too. False: the default server is always on the "
             "gateway and the form is offered for named servers (JupyterHub.allow_named_servers).")
    node_addresses = Dict(
        config=True,
        help="Slurm node name -> address the proxy uses, when NodeAddr from sinfo is not reachable from the hub.")
    kernels_dir = Unicode(
        "", config=True,
        help="World-readable directory where the hub publishes heroes_kernels (lib/) and per-organization "
             "kernelspecs of remote Slurm kernels (orgs/<org>/kernels); gateway servers get it on PYTHONPATH "
             "and JUPYTER_PATH. Empty: no remote kernels.")
    tunnel_to_node = Bool(
        False, config=True,
        help="Reach cluster servers through the user's SSH connection to the login node (the service relays a "
             "local port of the gateway host to node:port) instead of connecting to the node directly. For "
             "sites whose nodes are not routable from the hub; the nodes must still reach the hub API (README).")

    target = Unicode("")
    remote = Unicode("")  # node:port of a tunnelled server
    tunnel_port = Integer(0)
    cluster_name = Unicode("")
    cluster_job = Unicode("")  # the service's id of the job
    node_addr = Unicode("")
    estimate = Unicode("")
    _starting = False

    # --- batchspawner traits that would call pwd.getpwnam on the hub host -----------------------------------
    @default("req_homedir")
    def _no_local_home(self) -> str:
        return "~"

    def user_env(self, env):
        """The job gets HOME/SHELL from its cluster account (Slurm), never from the hub host."""
        env["USER"] = self.user.name
        return env

    @default("options_form")
    def _form_default(self):
        return self._options_form

    # --- the service ------------------------------------------------------------------------------------------
    def service(self) -> ClusterJobsClient:
        url = self.service_api_url or os.environ.get("HEROES_HUB_SERVICE_API_URL", "")
        token = self.service_token or os.environ.get("HEROES_HUB_SERVICE_TOKEN", "")
        client = _CLIENTS.get((url, token))
        if client is None:
            client = _CLIENTS[(url, token)] = ClusterJobsClient(url, token)
        return client

    # --- the form ---------------------------------------------------------------------------------------------
    async def _options_form(self, spawner) -> str:
        """The form, for named servers only: the default server starts on the gateway at once (login lands
        in JupyterLab as before); 'New server' on the hub's home page offers the gateway or a cluster."""
        if not self.name and not self.default_server_form:
            return ""
        try:
            clusters = await self.service().clusters(self.user.name, estimate=True)
        except ServiceError as exc:  # the gateway is still offered
            self.log.warning("no clusters for %s's form: %s", self.user.name, exc)
            clusters = []
        return form.render_form(clusters)

    def options_from_form(self, formdata):
        return form.parse_form(formdata)

    def _python(self) -> str:
        return self.singleuser_python or str(Path(self.cmd[0]).parent / "python")

    # --- gateway delegation -----------------------------------------------------------------------------------
    _child = None

    def _gateway(self):
        if self._child is None:
            kwargs = {k: getattr(self, k) for k in _CHILD_KWARGS if hasattr(self, k)}
            self._child = self.gateway_spawner_class(**kwargs)
        return self._child

    def _on_gateway(self) -> bool:
        return (self.target or "gateway") == "gateway"

    async def _publish_kernels(self) -> None:
        """Remote-kernel provisioner + this user's kernelspecs (their organization's clusters x profiles)."""
        from heroes_kernels.kernelspecs import publish, write_kernelspecs

        try:
            clusters = [c["name"] for c in await self.service().clusters(self.user.name)]
        except ServiceError as exc:
            self.log.warning("no remote kernels for %s: %s", self.user.name, exc)
            return
        root = Path(self.kernels_dir)
        lib = await asyncio.to_thread(publish, root / "lib")
        env = dict(self.environment)
        env["PYTHONPATH"] = ":".join(p for p in [env.get("PYTHONPATH", ""), str(lib)] if p)
        if clusters:
            folder = root / "users" / self.user.name
            await asyncio.to_thread(write_kernelspecs, folder, clusters)
            env["JUPYTER_PATH"] = str(folder)
        self.environment = env

    # --- lifecycle --------------------------------------------------------------------------------------------
    async def start(self):
        choice = self.user_options or {}
        self.target = choice.get("target") or "gateway"
        if self._on_gateway():
            if self.kernels_dir:
                await self._publish_kernels()
            child = self._gateway()
            for name in _RUNTIME_TRAITS:
                if self.has_trait(name) and child.has_trait(name):
                    setattr(child, name, getattr(self, name))
            return await child.start()
        try:
            self.cluster_name = form.target_cluster(choice) or ""
        except form.OptionsError as exc:
            raise SpawnException(str(exc), reason="cluster-options") from None
        self.remote, self.tunnel_port, self.cluster_job = "", 0, ""
        self._starting = True
        try:
            ip, port = await super().start()
        finally:
            self._starting = False
        if not self.tunnel_to_node:
            return ip, port
        self.remote = f"{ip}:{port}"
        await self._open_tunnel()
        return "127.0.0.1", self.tunnel_port

    async def _open_tunnel(self) -> None:
        """The service relays a local port of the gateway host to the server (same port after a restart)."""
        _, _, port = self.remote.rpartition(":")
        self.tunnel_port = await self.service().tunnel(self.user.name, self.cluster_job, int(port), self.tunnel_port)
        self.log.info("%s's server %s tunnelled at 127.0.0.1:%d", self.user.name, self.remote, self.tunnel_port)

    async def submit_batch_script(self):
        params = {"env": self.get_env(), "command": self.cmd + self.get_args(), "python": self._python(),
                  "bind_ip": self.node_bind_ip}
        self.log.info("Submitting %s's server to %s", self.user.name, self.cluster_name)
        try:
            job = await self.service().submit(self.user.name, "jupyterlab", self.cluster_name,
                                              form.resources(self.user_options or {}), params, ref=self.name or "")
        except ServiceError as exc:  # the spawn page shows the service's reason (JupyterHub 6 SpawnException)
            if exc.refused:
                raise SpawnException(f"Cluster {self.cluster_name}: {exc.detail}", reason="cluster-options") from None
            raise SpawnException(f"The cluster job was not submitted ({exc.detail}); try again in a moment.",
                                 reason="heroes-service", status_code=503) from None
        self.cluster_job, self.job_id = job["id"], job["job_id"] or ""
        self.log.info("%s's server is job %s on %s", self.user.name, self.job_id, self.cluster_name)
        return self.job_id

    async def query_job_status(self):
        if not self.cluster_job:
            self.job_status = ""
            return JobStatus.NOTFOUND
        wait = self.start_wait_s if self._starting and self.port == 0 else 0
        try:
            answer = await self.service().state(self.user.name, self.cluster_job, wait_s=wait)
            detail = ""
        except ServiceError as exc:
            answer, detail = ({"state": "GONE"} if exc.status == 404 else None), exc.detail
        status, state, host = classify(answer)
        if answer:
            self.job_id = answer.get("job_id") or self.job_id
            self._tunnels = answer.get("tunnels") or {}
        if status == JobStatus.RUNNING and host and not self.node_addr:
            self.node_addr = self.node_addresses.get(answer.get("node", ""), host)
        self.job_status = f"{status.name} {state} {host}".strip()
        if status == JobStatus.UNKNOWN:
            self.log.warning("Status of %s's job %s on %s unknown (%s); keeping the server, asking again next poll",
                             self.user.name, self.job_id, self.cluster_name, detail[:200])
        return status

    async def cancel_batch_job(self):
        self.log.info("Cancelling %s's job %s on %s", self.user.name, self.job_id, self.cluster_name)
        try:
            await self.service().cancel(self.user.name, self.cluster_job)
        except ServiceError as exc:
            if exc.status != 404:
                raise

    def state_isrunning(self):
        return self.job_status.startswith("RUNNING")

    def state_ispending(self):
        return self.job_status.startswith("PENDING")

    def state_isunknown(self):
        return self.job_status.startswith("UNKNOWN")

    def state_gethost(self):
        return self.node_addr or self.job_status.split()[-1]

    _tunnels: dict = {}

    async def poll(self):
        if self._on_gateway():
            return await self._gateway().poll()
        status = await super().poll()
        if status is None and self.remote and self.state_isrunning() and "server" not in self._tunnels:
            await self._open_tunnel()  # after a service restart: the same local port again
        return status

    async def stop(self, now=False):
        if self._on_gateway():
            return await self._gateway().stop(now=now)
        if not self.cluster_job:
            return
        return await super().stop(now=now)

    async def progress(self):
        if self._on_gateway():
            yield {"message": "Starting JupyterLab on the gateway..."}
            return
        async for event in super().progress():
            yield event

    # --- state (hub restarts) ---------------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        state["target"] = self.target or "gateway"
        if self._on_gateway():
            state["gateway"] = self._gateway().get_state()
        else:
            state.update(cluster=self.cluster_name, node_addr=self.node_addr, cluster_job=self.cluster_job)
            if self.remote:
                state.update(remote=self.remote, tunnel_port=self.tunnel_port)
        return state

    def load_state(self, state):
        super().load_state(state)
        self.target = state.get("target", "gateway")
        self.cluster_name = state.get("cluster", "")
        self.cluster_job = state.get("cluster_job", "")
        self.node_addr = state.get("node_addr", "")
        self.remote = state.get("remote", "")
        self.tunnel_port = int(state.get("tunnel_port", 0))
        if self._on_gateway():
            # state saved by HeroesLocalSpawner before this class was configured has no "gateway" key
            self._gateway().load_state(state.get("gateway", state if "pid" in state else {}))

    def clear_state(self):
        super().clear_state()
        if self._child is not None:
            self._child.clear_state()
        self.node_addr = ""
        self.estimate = ""
        self.remote = ""
        self.cluster_job = ""
        self.tunnel_port = 0
