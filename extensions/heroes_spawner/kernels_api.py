"""Hub API for remote kernels: ``/hub/api/heroes/kernels`` (the user's server asks; the service acts).

The kernel provisioner (``heroes_kernels``) runs inside the user's server and holds no cluster credentials;
it calls this API with the server's own ``JUPYTERHUB_API_TOKEN``. The hub checks who the caller is and
passes the request on to the HEROES service's cluster-jobs API (kind ``kernel``) with its own service token,
acting for that user; the service submits the job as the user, forwards the kernel's five ports to the
gateway's loopback through the login node, interrupts it (``scancel --batch --signal=INT``: the batch shell
*is* the kernel) and cancels it. A job answers only to the user who started it (404 otherwise), and a hub
restart loses nothing: the service keeps the job and its tunnels.

* ``POST   /hub/api/heroes/kernels``                     submit (cluster, resources, the session's HMAC key),
* ``GET    /hub/api/heroes/kernels/<cluster>/<id>``      state; once running, the local tunnelled ports,
* ``POST   /hub/api/heroes/kernels/<cluster>/<id>/signal`` ``{"signal": "INT"}`` (interrupt),
* ``DELETE /hub/api/heroes/kernels/<cluster>/<id>``      cancel.
"""
from __future__ import annotations

import json

from jupyterhub.apihandlers import APIHandler, default_handlers
from tornado import web

from .service_client import ServiceError

RESOURCE_KEYS = ("partition", "cores", "memory_mb", "minutes", "gpus")


def _status(answer: dict) -> str:
    """The provisioner's words: RUNNING once the ports are forwarded, NOTFOUND once ended, else PENDING."""
    state = answer.get("state", "")
    if state == "RUNNING" and answer.get("ports"):
        return "RUNNING"
    if state in ("SUBMITTING", "PENDING", "RUNNING"):
        return "PENDING"
    return "NOTFOUND"


class _Base(APIHandler):
    def _user(self):
        user = self.current_user
        if user is None or getattr(user, "kind", "user") != "user":
            raise web.HTTPError(403, "remote kernels are for users' own servers")
        return user

    def _service(self, user):
        return user.spawner.service()  # the default server's spawner carries the service's address and token

    async def _call(self, coroutine):
        try:
            return await coroutine
        except ServiceError as exc:
            raise web.HTTPError(exc.status if exc.refused else 502, exc.detail[:300]) from None


class KernelsHandler(_Base):
    @web.authenticated
    async def post(self):
        user = self._user()
        body = self.get_json_body() or {}
        spawner = user.spawner
        params = {"key": str(body.get("key", "")), "python": spawner._python(),  # noqa: SLF001 - same node python
                  "bind_ip": spawner.node_bind_ip}
        resources = {k: body[k] for k in RESOURCE_KEYS if body.get(k) not in (None, "")}
        job = await self._call(self._service(user).submit(user.name, "kernel", str(body.get("cluster", "")),
                                                          resources, params, ref="kernel"))
        self.log.info("remote kernel of %s: job %s (%s) on %s", user.name, job["id"], job["job_id"], job["cluster"])
        self.set_status(201)
        self.finish(json.dumps({"cluster": job["cluster"], "job_id": job["id"], "slurm_job_id": job["job_id"]}))


class KernelHandler(_Base):
    @web.authenticated
    async def get(self, cluster: str, job: str):
        user = self._user()
        try:
            answer = await self._service(user).state(user.name, job)
        except ServiceError as exc:
            if exc.status == 404:
                raise web.HTTPError(404, "no such remote kernel of yours") from None
            self.finish(json.dumps({"status": "UNKNOWN", "detail": exc.detail[:200]}))  # asked again
            return
        out = {"status": _status(answer), "state": answer.get("state", ""), "job_id": answer.get("job_id")}
        if out["status"] == "RUNNING":
            out.update(node=answer.get("node", ""), ports=answer["ports"])
        self.finish(json.dumps(out))

    @web.authenticated
    async def delete(self, cluster: str, job: str):
        user = self._user()
        await self._call(self._service(user).cancel(user.name, job))
        self.set_status(204)
        self.finish()


class SignalHandler(_Base):
    @web.authenticated
    async def post(self, cluster: str, job: str):
        user = self._user()
        signal = str((self.get_json_body() or {}).get("signal", "")).upper()
        if signal not in ("INT", "TERM", "KILL"):
            raise web.HTTPError(400, "signal: INT, TERM or KILL")
        await self._call(self._service(user).signal(user.name, job, signal))
        self.set_status(204)
        self.finish()


_CLUSTER = r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63})"
_JOB = r"([0-9a-f]{32})"
default_handlers.extend([
    (r"/api/heroes/kernels", KernelsHandler),
    (rf"/api/heroes/kernels/{_CLUSTER}/{_JOB}", KernelHandler),
    (rf"/api/heroes/kernels/{_CLUSTER}/{_JOB}/signal", SignalHandler),
])
