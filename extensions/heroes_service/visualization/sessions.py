"""Desktop sessions: validate, plan (``sbatch --test-only``), submit, describe, end. No FastAPI here.

Who the job runs as: on a per-user cluster the caller's own login (by certificate), so the desktop sees
exactly that user's files; on a service-account cluster the shared account, and then the working directory
is confined to the caller's own work folder (or one of their instances), never a path they typed freely.
"""
from __future__ import annotations

import io
import logging
import posixpath
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..clusterjobs import resources
from ..clusterjobs.kinds import JobSpecError
from ..clusterjobs.script import Resources, ScriptError
from ..clusterjobs.submit import find_by_name, owner_connector, owner_principal, sbatch_once, scancel
from ..clusters.errors import ClusterError, ClusterUnreachable, CommandFailed, CommandTimeout
from ..clusters.identity import PER_USER, cluster_login
from ..clusters.models import Cluster, cluster_by_id, cluster_by_name
from ..decision import wait
from ..decision.costs import Shape
from ..errors import Conflict, Invalid, NotFound, Unavailable
from . import models as m
from .energy import usage_energy
from .script import COLLECTOR_FILE, desktop_script

log = logging.getLogger("heroes_service.visualization")


@dataclass(frozen=True)
class DesktopSpec:
    """What a user asks for (already type-checked by the API model)."""

    cluster: str = ""
    partition: str = ""
    cores: int = 1
    memory_mb: int = 1024
    minutes: int = 60
    gpus: int = 0
    geometry: str = "1280x800"
    instance_id: str | None = None
    work_dir: str | None = None
    idle_minutes: float | None = None


# --- validation -------------------------------------------------------------------------------------------
def check_resources(cluster: Cluster, spec: DesktopSpec) -> str:
    """The partition to use, checked by the cluster jobs' one resource check; else ``Invalid`` naming the field."""
    wanted = {"partition": spec.partition, "cores": spec.cores, "memory_mb": spec.memory_mb,
              "minutes": spec.minutes, "gpus": spec.gpus}
    try:
        return resources.check_resources(wanted, cluster.partitions or [], cluster.default_partition,
                                          cluster.name).partition
    except JobSpecError as exc:
        raise Invalid(str(exc), rule=exc.field) from None


def _confined(base: str, wanted: str | None) -> str:
    """``wanted`` (relative to ``base``, or absolute inside it) as a normalised path inside ``base``."""
    base = posixpath.normpath(base)
    if not wanted:
        return base
    if "\n" in wanted or "\x00" in wanted:
        raise Invalid("work_dir must be one line", rule="work_dir")
    path = posixpath.normpath(wanted if wanted.startswith("/") else posixpath.join(base, wanted))
    if path != base and not path.startswith(base + "/"):
        raise Invalid(f"work_dir must be inside your work folder {base}", rule="work_dir")
    return path


# --- create -----------------------------------------------------------------------------------------------
def plan(session: Session, principal, spec: DesktopSpec, settings) -> tuple[m.DesktopSession, Cluster, bool]:
    """Check everything and write the intent (``SUBMITTING``). Returns (row, cluster, list the outputs)."""
    org = principal.organization
    if org is None:
        raise NotFound("you belong to no organization, so no cluster is available to you")
    inst = None
    if spec.instance_id:
        from ..workflows.models import WorkflowInstance

        inst = session.get(WorkflowInstance, spec.instance_id) if len(spec.instance_id) <= 32 else None
        if inst is None or inst.organization != org or inst.username != principal.username:
            raise NotFound(f"instance {spec.instance_id!r} not found")
        cluster = cluster_by_id(session, org, inst.cluster_id)
        if cluster is None:
            raise NotFound("the instance's cluster was removed")
        if spec.cluster and spec.cluster not in (cluster.name, cluster.id):
            raise Invalid(f"instance {inst.id} ran on {cluster.name}; its desktop runs there too", rule="cluster")
    else:
        cluster = cluster_by_name(session, org, spec.cluster) or cluster_by_id(session, org, spec.cluster)
        if cluster is None:
            raise NotFound(f"cluster {spec.cluster[:63]!r} not found")
    partition = check_resources(cluster, spec)
    login = inst.cluster_login if inst is not None else \
        (cluster_login(principal) if cluster.identity_mode == PER_USER else cluster.service_login)
    home = cluster.work_dir_for(login if cluster.identity_mode == PER_USER else principal.username)
    work_dir = inst.work_dir if inst is not None else _confined(home, spec.work_dir)
    live = session.scalar(select(func.count()).select_from(m.DesktopSession).where(
        m.DesktopSession.username == principal.username, m.DesktopSession.organization == org,
        m.DesktopSession.state.in_(m.LIVE)))
    if live >= settings.visualization_max_sessions:
        raise Conflict(f"you already have {live} live desktops (at most {settings.visualization_max_sessions}); "
                       "end one first", rule="max-sessions")
    idle = min(spec.idle_minutes or settings.visualization_idle_minutes, settings.visualization_idle_minutes)
    row = m.DesktopSession(
        id=m.new_id(), organization=org, username=principal.username, cluster_id=cluster.id,
        cluster_name=cluster.name, cluster_login=login, state=m.SUBMITTING, partition=partition, cores=spec.cores,
        memory_mb=spec.memory_mb, minutes=spec.minutes, gpus=spec.gpus, geometry=spec.geometry, work_dir=work_dir,
        session_dir="", instance_id=inst.id if inst is not None else None, idle_minutes=idle)
    row.session_dir = posixpath.join(posixpath.normpath(home), ".heroes-desktops", row.id)
    session.add(row)
    return row, cluster, inst is not None


def script_of(row: m.DesktopSession, list_outputs: bool, energy: bool) -> str:
    """The desktop's batch script from the one renderer (``Invalid`` when a value cannot be written safely)."""
    resources = Resources(partition=row.partition, cores=row.cores, memory_mb=row.memory_mb, minutes=row.minutes,
                          gpus=row.gpus)
    try:
        return desktop_script(row.session_dir, row.work_dir, m.job_name(row.id), resources, geometry=row.geometry,
                              title=f"HEROES desktop {row.id[:8]} ({row.username})", list_outputs=list_outputs,
                              energy=energy)
    except (ScriptError, ValueError) as exc:
        raise Invalid(f"cannot write the desktop's batch script: {exc}", rule="sbatch") from None


def shape_of(row: m.DesktopSession) -> Shape:
    return Shape(nodes=1, tasks=1, cpus_per_task=row.cores, memory_mb=row.memory_mb, gpus=row.gpus,
                 time_s=row.minutes * 60.0, partition=row.partition)


def submit(row: m.DesktopSession, cluster: Cluster, list_outputs: bool,
           energy: bool = True) -> tuple[str | None, datetime | None, str]:
    """Session folder (with the energy collector staged in it when ``energy``), expected start, then the one
    submit path (``clusterjobs.submit``): ``sbatch_once``
    after the intent was committed, and on a lost answer ``find_by_name`` (the job is adopted, never submitted
    twice). Returns (job id, expected start, the planner's note); job id None: Slurm may still have the job,
    the intent stays for the reconciler to adopt by name. Relative folders of ``row`` (a detached copy) are
    made absolute; the caller stores them. Raises ``Invalid``/``Unavailable`` when no job can exist."""
    conn = owner_connector(cluster, row.cluster_login, owner_principal(row))
    try:
        if not row.work_dir.startswith("/") or not row.session_dir.startswith("/"):
            # enrolled work folders may be relative to the login's home: Slurm and the script need absolute paths
            home = conn.run(["pwd"], timeout=30).check().stdout.strip()
            row.work_dir = posixpath.join(home, row.work_dir)
            row.session_dir = posixpath.join(home, row.session_dir)
        script = script_of(row, list_outputs, energy)
        conn.run(["mkdir", "-p", "-m", "0700", "--", row.session_dir], timeout=30).check()
        if energy:
            from ..workflows.cluster_files import collector_zipapp

            conn.put_stream(io.BytesIO(collector_zipapp()), f"{row.session_dir}/{COLLECTOR_FILE}", mode=0o600)
        answer = wait.wait_cache().waits([(cluster.id, conn, shape_of(row))])[0]
    except CommandFailed as exc:
        raise Invalid(f"could not prepare the desktop: {(exc.stderr or str(exc)).strip()[:300]}",
                      rule="sbatch") from None
    except (ClusterError, OSError) as exc:
        raise Unavailable(f"cluster {cluster.name!r} unreachable: {exc}") from None
    try:
        job_id = sbatch_once(conn, script)
    except CommandFailed as exc:
        raise Invalid(f"Slurm refused the desktop: {(exc.stderr or str(exc)).strip()[:300]}", rule="sbatch") from None
    except (ClusterUnreachable, CommandTimeout) as exc:
        log.warning("desktop %s: sbatch's answer was lost on %s (%s); looking it up by name", row.id, cluster.name, exc)
        try:
            job_id = find_by_name(conn, m.job_name(row.id))
        except ClusterError:
            job_id = None  # still unreachable: the reconciler adopts it from its squeue, or calls it LOST
    except ClusterError as exc:
        raise Unavailable(f"cluster {cluster.name!r} unreachable: {exc}") from None
    return job_id, answer.start_at, answer.error


def end(row: m.DesktopSession, cluster: Cluster | None, reason: str) -> None:
    """The one cancel (``clusterjobs.submit.scancel``, as the owner's account) and why; the reconciler reads the
    final state and writes the ledger row."""
    if row.job_id and cluster is not None:
        scancel(owner_connector(cluster, row.cluster_login, owner_principal(row)), row.job_id, timeout=30)
    row.state = "CANCELLED"
    row.end_reason = row.end_reason or reason
    row.ended_at = row.ended_at or m.utcnow()


# --- describe -----------------------------------------------------------------------------------------------
def usage(row: m.DesktopSession, cluster: Cluster | None, now: datetime | None = None) -> dict:
    """Elapsed time, time left, core-hours, energy (the collector's, see ``energy.usage_energy``) and cost so far."""
    now = now or m.utcnow()
    started, ended = m.aware(row.started_at), m.aware(row.ended_at)
    elapsed = max(0.0, ((ended or now) - started).total_seconds()) if started else 0.0
    left = max(0.0, row.minutes * 60 - elapsed) if started and row.state in m.LIVE else None
    return {"elapsed_s": round(elapsed), "time_left_s": None if left is None else round(left),
            "core_hours": round(row.cores * elapsed / 3600.0, 4), **usage_energy(row, cluster, shape_of(row), elapsed)}


def find_own(session: Session, principal, session_id: str) -> m.DesktopSession:
    """The caller's own session, else 404 (another user's or organization's answers the same as none)."""
    row = session.get(m.DesktopSession, session_id) if len(session_id) <= 32 else None
    if row is None or row.organization != principal.organization or row.username != principal.username:
        raise NotFound(f"desktop {session_id!r} not found")
    return row


__all__ = ["DesktopSpec", "plan", "submit", "end", "usage", "find_own"]
