"""``/heroes/hub/cluster-jobs``: the hub runs cluster JupyterLab servers and remote kernels through here.

Only the hub's own token-only service may call these routes (access level ``hub-service``: checked by the
access middleware, and again here); the user it acts for is named in each request, and every job answers
only to that user (404 for anyone else's). Users never get these routes: a user's token - or a user's
server's - gets 403 even for their own job, so no one holds an "run this on the cluster as me" operation
beyond what the kinds allow (``clusterjobs/jupyterlab.py``, ``clusterjobs/kernel.py``).

The hub holds no database URL and no cluster credential: it asks here, and polls a job's state from the
database (kept current by the one reconciler per cluster), never with its own ``squeue``.
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..auth import Principal
from ..clusterjobs.service import ClusterJobs
from ..clusters.identity import connector_for
from ..errors import NotFound, Unauthorized
from ..wiring import bind_clusters
from .server_keys import USER_PATTERN, hub_only

router = APIRouter(prefix="/heroes/hub/cluster-jobs", tags=["cluster jobs (hub only)"])
JOB_ID = r"^[0-9a-f]{32}$"


class ResourcesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    partition: str = Field("", max_length=63)
    cores: int | str = Field(1, description="Whole number (a form's text is accepted).")
    memory_mb: int | str = 2048
    minutes: int | str = 60
    gpus: int | str = 0


class SubmitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(pattern=USER_PATTERN, description="The hub (and Keycloak) user the job runs for.")
    kind: str = Field(max_length=32, description="A registered job kind: jupyterlab, kernel, ...")
    cluster: str = Field(max_length=63, description="A cluster of the user's organization, by name.")
    resources: ResourcesIn = Field(default_factory=ResourcesIn)
    params: dict[str, Any] = Field(default_factory=dict, description="The kind's own parameters.")
    ref: str = Field("", max_length=255, description="The caller's own reference (e.g. the hub server's name).")


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(pattern=USER_PATTERN)


class SignalIn(UserIn):
    signal: str = Field(max_length=8)


class TunnelIn(UserIn):
    port: int = Field(ge=1024, le=65535)
    local_port: int = Field(0, ge=0, le=65535, description="Reuse this local port (after a restart); 0: any.")


class JobOut(BaseModel):
    id: str
    kind: str
    cluster: str
    state: str
    job_id: str | None
    job_name: str
    node: str
    node_addr: str
    reason: str
    exit_code: int | None
    detail: str
    resources: dict[str, Any]
    params: dict[str, Any]
    tunnels: dict[str, int]
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    ports: dict[str, int] | None = None


class ClusterOut(BaseModel):
    name: str
    partitions: list[dict[str, Any]]
    default_partition: str
    estimate: str = ""


async def jobs(request: Request) -> ClusterJobs:
    """The app's ``ClusterJobs``; async because it does no I/O, so it costs no thread-pool round trip
    (~0.2 ms each, more on a loaded host) on every hub call."""
    bind_clusters(request.app)
    return request.app.state.cluster_jobs


def acting_for(request: Request, user: str) -> Principal:
    """The principal of ``user`` (Keycloak decides organization and roles); 404 for no enabled user."""
    try:
        principal = request.app.state.authenticator.principal_by_username(user, via="hub")
    except Unauthorized:
        raise NotFound(f"no enabled HEROES user named {user!r}") from None
    return principal


@router.get("/clusters", response_model=list[ClusterOut],
            summary="(hub only) The user's clusters with partitions, and optionally Slurm's expected start")
def clusters(request: Request, user: str = Query(..., pattern=USER_PATTERN), estimate: bool = False,
             _hub: str = Depends(hub_only), service: ClusterJobs = Depends(jobs)):
    principal = acting_for(request, user)
    found = service.clusters(principal)
    out = [ClusterOut(name=c.name, partitions=list(c.partitions or []), default_partition=c.default_partition)
           for c in found]
    if estimate and found:
        from ..decision.costs import Shape
        from ..decision.wait import wait_cache

        asks = []
        for cluster in found:
            try:
                conn = connector_for(cluster, principal)
            except Exception:  # noqa: BLE001 - no access: shown without an estimate
                conn = None
            asks.append((cluster.id, conn, Shape(memory_mb=512, time_s=3600, partition=cluster.default_partition)))
        for item, answer in zip(out, wait_cache().waits(asks)):
            if answer.start_at is not None:
                item.estimate = f"expected start {answer.start_at:%Y-%m-%d %H:%M} UTC" + \
                    (f" on {answer.nodes}" if answer.nodes else "")
    return out


@router.post("/", response_model=JobOut, status_code=201,
             summary="(hub only) Submit a job of a registered kind for the user (intent first, sbatch once)")
async def submit(request: Request, body: SubmitIn, _hub: str = Depends(hub_only),
                 service: ClusterJobs = Depends(jobs)):
    def run() -> dict:  # one trip to the thread pool: the whole submit is blocking (DB, SSH)
        row = service.submit(acting_for(request, body.user), body.kind, body.cluster, body.resources.model_dump(),
                             body.params, ref=body.ref)
        return service.describe(row)

    return await asyncio.to_thread(run)


@router.get("/{job_id}", response_model=JobOut,
            summary="(hub only) A job's state from the database; wait_s long-polls while it is queued")
async def state(request: Request, job_id: str, user: str = Query(..., pattern=USER_PATTERN),
                wait_s: float = Query(0, ge=0, le=60), _hub: str = Depends(hub_only),
                service: ClusterJobs = Depends(jobs)):
    return await asyncio.to_thread(lambda: service.state(acting_for(request, user), _checked(job_id), wait_s))


@router.delete("/{job_id}", response_model=JobOut, summary="(hub only) Cancel a job (scancel as its owner)")
async def cancel(request: Request, job_id: str, user: str = Query(..., pattern=USER_PATTERN),
                 _hub: str = Depends(hub_only), service: ClusterJobs = Depends(jobs)):
    principal = await asyncio.to_thread(acting_for, request, user)
    return await asyncio.to_thread(service.cancel, principal, _checked(job_id))


@router.post("/{job_id}/signal", status_code=204,
             summary="(hub only) Signal a job's batch shell (a kernel's interrupt)")
async def signal(request: Request, job_id: str, body: SignalIn, _hub: str = Depends(hub_only),
                 service: ClusterJobs = Depends(jobs)):
    principal = await asyncio.to_thread(acting_for, request, body.user)
    await asyncio.to_thread(service.signal, principal, _checked(job_id), body.signal)
    return Response(status_code=204)


@router.post("/{job_id}/tunnel", summary="(hub only) A local port relayed to the job's node:port over SSH")
async def tunnel(request: Request, job_id: str, body: TunnelIn, _hub: str = Depends(hub_only),
                 service: ClusterJobs = Depends(jobs)) -> dict:
    principal = await asyncio.to_thread(acting_for, request, body.user)
    local = await asyncio.to_thread(service.tunnel, principal, _checked(job_id), body.port, body.local_port)
    return {"local_port": local}


def _checked(job_id: str) -> str:
    import re

    if not re.match(JOB_ID, job_id or ""):
        raise NotFound("no such cluster job of yours")
    return job_id
