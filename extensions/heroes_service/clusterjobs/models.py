"""The ``cluster_jobs`` table: one row per Slurm job the service runs that is not a workflow step's
(JupyterLab servers, kernels, desktops), and the usage ledger of every kind.

A row is written as the intent (``SUBMITTING``, with its unique job name) before ``sbatch`` runs; the
reconciler moves it through Slurm's states; when it ends, the ledger columns (``alloc_tres``, ``elapsed_s``,
``energy_j``, ``cost``, ``currency``) are filled from the accounting, next to the ``prediction`` recorded at
submit. Workflow steps keep their own table and get a ledger row (``kind = "workflow-step"``, ``ref`` = the
step's id) when they end, so reports, budgets and invoices read one table.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..store import Base

SUBMITTING, PENDING, RUNNING, LOST, REFUSED = "SUBMITTING", "PENDING", "RUNNING", "LOST", "REFUSED"
#: a job in one of these states is over; its ledger columns are (being) written
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                   "BOOT_FAIL", "DEADLINE", "REVOKED", LOST, REFUSED})
LIVE = frozenset({SUBMITTING, PENDING, RUNNING})
WORKFLOW_STEP = "workflow-step"
#: desktops (``visualization``) keep their own table too; their ledger rows are written final, never tracked here
DESKTOP = "desktop"
#: kinds whose rows here are ledger rows only (their capability's own table tracks the live job)
LEDGER_ONLY = frozenset({WORKFLOW_STEP, DESKTOP})


def new_id() -> str:
    """32 hex characters: safe in Slurm job names and file names."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def job_name(kind: str, job_id: str) -> str:
    """The Slurm job name of a row: unique, so a restarted service finds the job before it could resubmit."""
    return f"heroes.{kind}.{job_id}"


class ClusterJob(Base):
    __tablename__ = "cluster_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    cluster_id: Mapped[str] = mapped_column(String(36), nullable=False, index=True)
    cluster: Mapped[str] = mapped_column(String(63), nullable=False, default="")
    organization: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    username: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    cluster_login: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    ref: Mapped[str] = mapped_column(String(255), nullable=False, default="", index=True)
    job_name: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(32), nullable=False, default=SUBMITTING, index=True)
    reason: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    node: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    node_addr: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    resources: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    params: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    missing_cycles: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # --- the ledger (filled when the job ends) -------------------------------------------------------------
    alloc_tres: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    elapsed_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    energy_j: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    currency: Mapped[str] = mapped_column(String(8), nullable=False, default="")
    prediction: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    ledger_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def live_jobs(session: Session, cluster_id: str | None = None) -> list[ClusterJob]:
    """Rows the reconciler tracks (of one cluster, or of all)."""
    query = select(ClusterJob).where(ClusterJob.state.in_(LIVE), ClusterJob.kind.not_in(LEDGER_ONLY))
    if cluster_id is not None:
        query = query.where(ClusterJob.cluster_id == cluster_id)
    return list(session.scalars(query))


def live_cluster_ids(session: Session) -> set[str]:
    query = select(ClusterJob.cluster_id).where(ClusterJob.state.in_(LIVE), ClusterJob.kind.not_in(LEDGER_ONLY))
    return set(session.scalars(query.distinct()))


def work_on_cluster(session: Session, cluster) -> list[str]:
    """Live jobs on ``cluster`` (removing the cluster is refused while there are any)."""
    return [f"{j.kind} job {j.job_id or j.job_name} of {j.username}" for j in live_jobs(session, cluster.id)]
