"""``HeroesSpawner``: JupyterLab on the gateway or as a Slurm job on an enrolled cluster.

A subclass of batchspawner's ``SlurmSpawner`` whose Slurm commands never touch a local shell: they are
argv lists sent through the service's ``ClusterConnector`` (pinned host key, per-user certificate), so the
hub host needs no Unix account, sudo or ssh config for users and ``pwd.getpwnam`` is never called.
Choosing "the gateway" in the form delegates to ``HeroesLocalSpawner`` (a child spawner), so one hub
spawner class serves both.

Differences from batchspawner, each for a known trap (see docs/architecture.md, pitfalls file):

* a failed ``squeue`` (non-zero exit other than "Invalid job id", SSH down, timeout) is UNKNOWN: the hub
  keeps the server and asks again next poll, it is never dropped (batchspawner#315);
* a job that is gone from the queue, or CANCELLED/COMPLETING/FAILED, is noticed on the next poll;
* the job's port comes back through ``api.py``'s strict handler (only ``port``, only our spawners);
* state (``job_id``, cluster, node address, target) is saved, so with ``cleanup_servers = False`` a hub
  restart finds the job again.
"""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

from batchspawner import JobStatus, SlurmSpawner
from traitlets import Bool, Dict, Integer, List, Type, Unicode, default

from . import access, form
from .jobscript import JobRequest, render
from .local import HeroesLocalSpawner

#: squeue states in which the server is (or will be) alive
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "SUSPENDED"}
RUNNING_STATES = {"RUNNING"}
#: traits of a Spawner the hub sets at spawn time; copied to the gateway child before it starts
_RUNTIME_TRAITS = ("api_token", "oauth_client_id", "oauth_access_scopes", "oauth_roles", "server_token_scopes",
                   "environment", "args", "cmd", "user_options", "cert_paths", "admin_access", "default_url")
_CHILD_KWARGS = ("user", "orm_spawner", "hub", "authenticator", "config", "proxy_spec", "db", "oauth_client_id",
                 "cookie_options", "cookie_host_prefix_enabled", "public_url", "public_hub_url")


def parse_test_only(stderr: str) -> str:
    """``sbatch --test-only`` -> 'expected start 2026-11-25T21:00:00 on alpha-n1' ('' when absent)."""
    match = re.search(r"to start at (\S+) using (\d+) processors on nodes (\S+)", stderr or "")
    if not match:
        return ""
    return f"expected start {match.group(1)} on {match.group(3)}"


def classify(result_rc: int, stdout: str, stderr: str) -> tuple[JobStatus, str, str]:
    """One ``squeue -h -j ID -o %T|%B`` answer -> (status, Slurm state, batch host).

    Only an answer that says the job is not there counts as gone; any other failure is UNKNOWN."""
    if result_rc != 0:
        if "invalid job id" in (stderr or "").lower():
            return JobStatus.NOTFOUND, "", ""
        return JobStatus.UNKNOWN, "", ""
    line = next((ln for ln in stdout.splitlines() if ln.strip()), "")
    if not line:
        return JobStatus.NOTFOUND, "", ""
    state, _, host = line.strip().partition("|")
    state = state.split()[0].rstrip("+") if state.split() else ""
    if state in RUNNING_STATES:
        return JobStatus.RUNNING, state, host
    if state in PENDING_STATES:
        return JobStatus.PENDING, state, host
    return JobStatus.NOTFOUND, state, host


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
    squeue_argv = List(
        Unicode(), ["squeue"], config=True,
        help="argv prefix of the status query (each element quoted before it crosses SSH); '-h -j ID -o %T|%B' "
             "is appended. Tests point it at a failing variant to prove a failed squeue keeps the server.")
    command_timeout = Integer(60, config=True, help="Seconds one Slurm command over SSH may take.")
    default_server_form = Bool(
        False, config=True,
        help="Show the spawn form for the default server too. False: the default server is always on the "
             "gateway and the form is offered for named servers (JupyterHub.allow_named_servers).")
    job_name_prefix = Unicode("jupyterhub-", config=True,
                              help="Slurm job name of a server: '<prefix><hub user>[-<server name>]'.")
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
        help="Reach cluster servers through the user's SSH connection to the login node (a local port on the "
             "hub host relays to node:port) instead of connecting to the node directly. For sites whose "
             "nodes are not routable from the hub; the nodes must still reach the hub API (README).")

    target = Unicode("")
    remote = Unicode("")  # node:port of a tunnelled server
    tunnel_port = Integer(0)
    _forward = None
    cluster_name = Unicode("")
    node_addr = Unicode("")
    estimate = Unicode("")

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

    # --- the form ---------------------------------------------------------------------------------------------
    async def _options_form(self, spawner) -> str:
        """The form, for named servers only: the default server starts on the gateway at once (login lands
        in JupyterLab as before); 'New server' on the hub's home page offers the gateway or a cluster."""
        if not self.name and not self.default_server_form:
            return ""
        views = await asyncio.to_thread(access.clusters_for, self._groups())
        clusters = []
        for view in views:
            estimate = ""
            try:
                estimate = await asyncio.wait_for(self._estimate(view, form.Choice(
                    cluster=view.name, partition=view.default_partition, cores=form.DEFAULTS["cores"],
                    memory_mb=512, minutes=form.DEFAULTS["minutes"])), 15)
            except Exception as exc:  # noqa: BLE001 - an unreachable cluster still shows in the form
                self.log.warning("no start estimate for %s: %s", view.name, type(exc).__name__)
            clusters.append({"name": view.name, "partitions": view.partitions,
                             "default_partition": view.default_partition, "estimate": estimate})
        return form.render_form(clusters)

    def options_from_form(self, formdata):
        return form.parse_form(formdata)

    # --- helpers ----------------------------------------------------------------------------------------------
    def _groups(self) -> list[str]:
        return [g.name for g in getattr(self.user, "groups", [])]

    def _view(self):
        view = access.cluster_for(self._groups(), self.cluster_name)
        if view is None:
            raise form.OptionsError(f"cluster {self.cluster_name!r} is not enrolled for your organization")
        return view

    async def _run(self, argv: list[str], stdin: str | None = None):
        """One command on the cluster as the user (blocking SSH in a thread)."""
        view = await asyncio.to_thread(self._view)
        conn = access.connector(view, self.user.name)
        return await asyncio.to_thread(conn.run, argv, stdin=stdin, timeout=self.command_timeout)

    async def run_command(self, cmd, input=None, env=None):
        """batchspawner's hook, argv-only: ``cmd`` is a list, run through the connector; stdout on success."""
        if isinstance(cmd, str):
            raise TypeError("HeroesSpawner runs argv lists only, never shell strings")
        result = await self._run(list(cmd), stdin=input)
        if not result.ok:
            raise RuntimeError(result.stderr.strip() or f"{cmd[0]} exited {result.rc}")
        return result.stdout.strip()

    async def _estimate(self, view, choice: form.Choice) -> str:
        conn = access.connector(view, self.user.name)
        script = render(self._request(choice), {}, "/bin/true", ["true"])
        result = await asyncio.to_thread(conn.run, ["sbatch", "--test-only"], stdin=script, timeout=15)
        return parse_test_only(result.stderr)

    def _request(self, choice: form.Choice) -> JobRequest:
        suffix = f"-{self.name}" if self.name else ""
        return JobRequest(job_name=f"{self.job_name_prefix}{self.user.name}{suffix}", partition=choice.partition,
                          cores=choice.cores, memory_mb=choice.memory_mb, minutes=choice.minutes, gpus=choice.gpus)

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

    def _publish_kernels(self) -> None:
        """Remote-kernel provisioner + this user's kernelspecs (their organizations' clusters x profiles)."""
        from heroes_kernels.kernelspecs import publish, write_kernelspecs

        root = Path(self.kernels_dir)
        lib = publish(root / "lib")
        views = access.clusters_for(self._groups())
        orgs = sorted({v.organization for v in views})
        for org in orgs:
            write_kernelspecs(root / "orgs" / org, [v.name for v in views if v.organization == org])
        env = dict(self.environment)
        env["PYTHONPATH"] = ":".join(p for p in [env.get("PYTHONPATH", ""), str(lib)] if p)
        if orgs:
            env["JUPYTER_PATH"] = ":".join(str(root / "orgs" / org) for org in orgs)
        self.environment = env

    # --- lifecycle --------------------------------------------------------------------------------------------
    async def start(self):
        choice = self.user_options or {}
        self.target = choice.get("target") or "gateway"
        if self._on_gateway():
            if self.kernels_dir:
                await asyncio.to_thread(self._publish_kernels)
            child = self._gateway()
            for name in _RUNTIME_TRAITS:
                if self.has_trait(name) and child.has_trait(name):
                    setattr(child, name, getattr(self, name))
            return await child.start()
        self.cluster_name = self.target.removeprefix("cluster:")
        self.remote, self.tunnel_port = "", 0
        view = await asyncio.to_thread(self._view)
        self._choice = form.validate(choice, view.partitions, view.default_partition)
        try:
            self.estimate = await self._estimate(view, self._choice)
        except Exception as exc:  # noqa: BLE001 - the estimate is advice, the submission decides
            self.log.warning("sbatch --test-only for %s failed: %s", self.user.name, type(exc).__name__)
        ip, port = await super().start()
        if not self.tunnel_to_node:
            return ip, port
        self.remote = f"{ip}:{port}"
        await self._open_tunnel()
        return "127.0.0.1", self.tunnel_port

    async def _open_tunnel(self) -> None:
        """The hub-side end of the SSH tunnel to the server (same local port after a hub restart)."""
        from .tunnel import Forward

        host, _, port = self.remote.rpartition(":")
        view = await asyncio.to_thread(self._view)
        conn = access.connector(view, self.user.name)
        self._forward = await asyncio.to_thread(Forward, conn, host, int(port), self.tunnel_port)
        self.tunnel_port = self._forward.local_port
        self.log.info("%s's server %s tunnelled at 127.0.0.1:%d", self.user.name, self.remote, self.tunnel_port)

    def _close_tunnel(self) -> None:
        if self._forward is not None:
            self._forward.close()
            self._forward = None

    async def submit_batch_script(self):
        script = render(self._request(self._choice), self.get_env(), self._python(), self.cmd + self.get_args(),
                        self.node_bind_ip)
        self.log.info("Submitting %s's server to %s (%s)", self.user.name, self.cluster_name, self._choice)
        out = await self.run_command(["sbatch", "--parsable"], input=script)
        from heroes_service.clusters.slurm import parse_job_id

        self.job_id = parse_job_id(out)
        self.log.info("%s's server is job %s on %s", self.user.name, self.job_id, self.cluster_name)
        return self.job_id

    async def query_job_status(self):
        if not self.job_id:
            self.job_status = ""
            return JobStatus.NOTFOUND
        try:
            result = await self._run([*self.squeue_argv, "-h", "-j", self.job_id, "-o", "%T|%B"])
            status, state, host = classify(result.rc, result.stdout, result.stderr)
            detail = result.stderr.strip()[:200]
        except Exception as exc:  # noqa: BLE001 - SSH down, timeout, cluster record unreadable: ask again later
            status, state, host, detail = JobStatus.UNKNOWN, "", "", type(exc).__name__
        if status == JobStatus.RUNNING and host and not self.node_addr:
            self.node_addr = await self._address_of(host)
        self.job_status = f"{status.name} {state} {host}".strip()
        if status == JobStatus.UNKNOWN:
            self.log.warning("Status of %s's job %s on %s unknown (%s); keeping the server, asking again next poll",
                             self.user.name, self.job_id, self.cluster_name, detail)
        return status

    async def _address_of(self, node: str) -> str:
        """Where the proxy reaches ``node``: configured map, else NodeAddr from sinfo, else the name."""
        if node in self.node_addresses:
            return self.node_addresses[node]
        result = await self._run(["sinfo", "-h", "-N", "-n", node, "-o", "%o"])
        addr = next((ln.strip() for ln in result.stdout.splitlines() if ln.strip()), "") if result.ok else ""
        return addr or node

    async def cancel_batch_job(self):
        self.log.info("Cancelling %s's job %s on %s", self.user.name, self.job_id, self.cluster_name)
        await self.run_command(["scancel", self.job_id])

    def state_isrunning(self):
        return self.job_status.startswith("RUNNING")

    def state_ispending(self):
        return self.job_status.startswith("PENDING")

    def state_isunknown(self):
        return self.job_status.startswith("UNKNOWN")

    def state_gethost(self):
        return self.node_addr or self.job_status.split()[-1]

    async def poll(self):
        if self._on_gateway():
            return await self._gateway().poll()
        status = await super().poll()
        if status is not None:
            self._close_tunnel()
        elif self.remote and self._forward is None and self.state_isrunning():
            await self._open_tunnel()  # after a hub restart
        return status

    async def stop(self, now=False):
        if self._on_gateway():
            return await self._gateway().stop(now=now)
        self._close_tunnel()
        if not self.job_id:
            return
        return await super().stop(now=now)

    async def progress(self):
        if self._on_gateway():
            yield {"message": "Starting JupyterLab on the gateway..."}
            return
        if self.estimate:
            yield {"message": f"Cluster {self.cluster_name}: {self.estimate}"}
        async for event in super().progress():
            yield event

    # --- state (hub restarts) ---------------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        state["target"] = self.target or "gateway"
        if self._on_gateway():
            state["gateway"] = self._gateway().get_state()
        else:
            state.update(cluster=self.cluster_name, node_addr=self.node_addr)
            if self.remote:
                state.update(remote=self.remote, tunnel_port=self.tunnel_port)
        return state

    def load_state(self, state):
        super().load_state(state)
        self.target = state.get("target", "gateway")
        self.cluster_name = state.get("cluster", "")
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
        self.tunnel_port = 0
