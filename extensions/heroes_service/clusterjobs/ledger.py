"""The one ledger writer: what a finished cluster job used, in ``cluster_jobs``.

Every job that ends passes here once, whatever its kind: ``record_end`` copies from the job's accounting
record (``sacct``) the allocated TRES (``AllocTRES``: cpu, mem, node, gres/gpu, billing), the elapsed time and
Slurm's energy counter (``ConsumedEnergyRaw``, J, where the cluster measures it), then runs the registered
hooks. Later capabilities build on this row rather than on Slurm:

* usage reports sum ``alloc_tres`` x ``elapsed_s`` and ``energy_j`` per user / organization / cluster;
* budgets compare ``prediction`` (recorded at submit) and the rows already written with a new request;
* the marketplace prices rows with the offering organization's rates: a hook that sets ``cost``/``currency``.

Workflow steps and desktops keep their own tables; ``record_step`` and ``record_desktop`` write their ledger
rows (``kind = workflow-step`` / ``desktop``, ``ref`` = the step's / session's id).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable

from sqlalchemy.orm import Session

from ..clusters.slurm import Job
from .models import DESKTOP, WORKFLOW_STEP, ClusterJob, job_name, utcnow

log = logging.getLogger("heroes_service.clusterjobs")

#: ``fn(session, row)`` after the accounting fields are set (e.g. cost from a price model); failures are logged
LedgerHook = Callable[[Session, ClusterJob], None]
HOOKS: list[LedgerHook] = []

_ELAPSED = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


def register_hook(hook: LedgerHook) -> None:
    if hook not in HOOKS:
        HOOKS.append(hook)


def elapsed_seconds(text: str) -> int | None:
    """Slurm's ``[D-][HH:]MM:SS`` -> seconds (None when empty or unparsable)."""
    match = _ELAPSED.match((text or "").strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def record_end(session: Session, row: ClusterJob, job: Job | None) -> None:
    """Fill the ledger columns of ``row`` from its accounting record (None: nothing known but the end)."""
    if job is not None:
        row.alloc_tres = (job.alloc_tres or "")[:500]
        row.elapsed_s = elapsed_seconds(job.elapsed)
        row.energy_j = job.energy_j
        if job.exit_code is not None:
            row.exit_code = job.exit_code
    row.ended_at = row.ended_at or utcnow()
    row.ledger_at = utcnow()
    for hook in HOOKS:
        try:
            hook(session, row)
        except Exception:  # noqa: BLE001 - a broken price model must not stop the reconciler
            log.exception("ledger hook %s failed for job %s", getattr(hook, "__name__", hook), row.job_id)


def record_step(session: Session, *, step_id: int, instance_id: str, cluster_id: str, cluster: str,
                organization: str, username: str, login: str, job_id: str, state: str, job: Job | None,
                resources: dict | None = None, prediction: dict | None = None) -> ClusterJob:
    """The ledger row of a workflow step that ended (one per step: written again, it is updated)."""
    ref = f"{instance_id}/{step_id}"
    row = session.query(ClusterJob).filter_by(kind=WORKFLOW_STEP, ref=ref).one_or_none()
    if row is None:
        row = ClusterJob(kind=WORKFLOW_STEP, ref=ref, cluster_id=cluster_id, cluster=cluster,
                         organization=organization, username=username, cluster_login=login,
                         resources=resources or {}, params={}, prediction=prediction)
        row.job_name = job_name(WORKFLOW_STEP, row.id or "")
        session.add(row)
    row.job_id, row.state = job_id, state
    record_end(session, row, job)
    return row


def record_desktop(session: Session, desktop, job: Job | None) -> ClusterJob:
    """The ledger row of a desktop session that ended (``visualization.models.DesktopSession``; one per
    session: written again, it is updated). ``job``: its accounting record, None when it never came."""
    row = session.query(ClusterJob).filter_by(kind=DESKTOP, ref=desktop.id).one_or_none()
    if row is None:
        row = ClusterJob(kind=DESKTOP, ref=desktop.id, cluster_id=desktop.cluster_id, cluster=desktop.cluster_name,
                         organization=desktop.organization, username=desktop.username,
                         cluster_login=desktop.cluster_login, job_name=job_name(DESKTOP, desktop.id), params={},
                         resources={"partition": desktop.partition, "cores": desktop.cores,
                                    "memory_mb": desktop.memory_mb, "minutes": desktop.minutes, "gpus": desktop.gpus})
        session.add(row)
    row.job_id, row.state, row.node = desktop.job_id, desktop.state, (desktop.node or "")[:255]
    row.detail = desktop.end_reason or ""
    row.submitted_at, row.started_at, row.ended_at = desktop.created_at, desktop.started_at, desktop.ended_at
    record_end(session, row, job)
    return row
