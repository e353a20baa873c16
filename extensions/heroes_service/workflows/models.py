"""Tables of the workflows capability: templates (versioned), instances, their steps, and events.

Every state change of an instance or a step is also a row in ``workflow_events``, written in the same
transaction as the change, so the history is exactly what the database believed at each moment.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from ..store import Base


def new_id() -> str:
    """32 hex characters: safe in Slurm job names and file names, unique per instance."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# instance states
NEW, STAGING_IN, SUBMITTING, QUEUED, RUNNING, STAGING_OUT = (
    "NEW", "STAGING_IN", "SUBMITTING", "QUEUED", "RUNNING", "STAGING_OUT")
COMPLETED, FAILED, CANCELLED = "COMPLETED", "FAILED", "CANCELLED"
INSTANCE_FINAL = frozenset({COMPLETED, FAILED, CANCELLED})
#: before every job is known to Slurm: the driver (not the reconciler) moves these on
DRIVER_STATES = frozenset({NEW, STAGING_IN, SUBMITTING})
# step states (besides the Slurm ones a step mirrors: PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, ...)
STEP_NEW, STEP_SUBMITTING, SKIPPED = "NEW", "SUBMITTING", "SKIPPED"
STEP_FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                        "BOOT_FAIL", "DEADLINE", "REVOKED", SKIPPED, "LOST"})


class WorkflowTemplate(Base):
    __tablename__ = "workflow_templates"
    __table_args__ = (UniqueConstraint("organization", "name", "version", name="uq_wf_templates_org_name_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organization: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    spec: Mapped[dict] = mapped_column(JSON, nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_by: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class WorkflowInstance(Base):
    __tablename__ = "workflow_instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organization: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    organization_id: Mapped[str] = mapped_column(String(36), nullable=False, default="")
    username: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    user_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    template_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    template_name: Mapped[str] = mapped_column(String(63), nullable=False)
    template_version: Mapped[int] = mapped_column(Integer, nullable=False)
    cluster_id: Mapped[str] = mapped_column(String(36), nullable=False, index=True)
    cluster_name: Mapped[str] = mapped_column(String(63), nullable=False)
    cluster_login: Mapped[str] = mapped_column(String(32), nullable=False)
    parameters: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    work_dir: Mapped[str] = mapped_column(String(600), nullable=False, default="")
    state: Mapped[str] = mapped_column(String(32), nullable=False, default=NEW, index=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    output_bucket: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    output_prefix: Mapped[str] = mapped_column(String(600), nullable=False, default="")
    outputs: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                 onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    steps: Mapped[list["WorkflowStep"]] = relationship(back_populates="instance", order_by="WorkflowStep.position",
                                                       cascade="all, delete-orphan", passive_deletes=True)


class WorkflowStep(Base):
    __tablename__ = "workflow_steps"
    __table_args__ = (UniqueConstraint("instance_id", "name", name="uq_wf_steps_instance_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("workflow_instances.id", ondelete="CASCADE"),
                                             nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(32), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    depends_on: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    state: Mapped[str] = mapped_column(String(32), nullable=False, default=STEP_NEW, index=True)
    job_name: Mapped[str] = mapped_column(String(128), nullable=False)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    nodes: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    log_tail: Mapped[str] = mapped_column(Text, nullable=False, default="")
    script: Mapped[str] = mapped_column(Text, nullable=False, default="")
    options: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    missing_cycles: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: the largest MaxRSS of the job's Slurm steps (MiB), read from accounting when the instance ends; what
    #: right-sizing learns memory from (NULL: not read, or the job was too short for one accounting sample)
    max_rss_mb: Mapped[float | None] = mapped_column(Float, nullable=True)

    instance: Mapped[WorkflowInstance] = relationship(back_populates="steps")


class WorkflowEvent(Base):
    __tablename__ = "workflow_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("workflow_instances.id", ondelete="CASCADE"),
                                             nullable=False, index=True)
    step: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    from_state: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    to_state: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="")
    #: never set by the code (events name ``instance_id``): it makes a flush insert a new instance before its
    #: events, so a submission is one flush (no INSERT, then UPDATE, of a new instance)
    instance: Mapped[WorkflowInstance] = relationship()


# --- state changes (always with their event) -------------------------------------------------------------
def set_instance_state(session: Session, instance: WorkflowInstance, state: str, detail: str = "") -> bool:
    """Move ``instance`` to ``state`` and record the event; False (nothing written) when already there."""
    if instance.state == state:
        return False
    session.add(WorkflowEvent(instance_id=instance.id, from_state=instance.state, to_state=state,
                              detail=detail[:4000]))
    instance.state = state
    instance.updated_at = utcnow()
    if state in INSTANCE_FINAL:
        instance.finished_at = utcnow()
        if detail and not instance.reason:
            instance.reason = detail[:4000]
    return True


def set_step_state(session: Session, step: WorkflowStep, state: str, detail: str = "") -> bool:
    if step.state == state:
        return False
    session.add(WorkflowEvent(instance_id=step.instance_id, step=step.name, from_state=step.state, to_state=state,
                              detail=detail[:4000]))
    step.state = state
    return True


def live_instances(session: Session, cluster_id: str | None = None) -> list[WorkflowInstance]:
    query = select(WorkflowInstance).where(WorkflowInstance.state.not_in(list(INSTANCE_FINAL)))
    if cluster_id is not None:
        query = query.where(WorkflowInstance.cluster_id == cluster_id)
    return list(session.scalars(query.order_by(WorkflowInstance.created_at)))


def work_on_cluster(session: Session, cluster) -> list[str]:
    """The cluster's live instances, named for the refusal of its removal."""
    return [f"workflow instance {i.id} ({i.template_name}, {i.state}, by {i.username})"
            for i in live_instances(session, cluster.id)]


def running_work(session: Session, organization) -> list[str]:
    """The organization's live instances, named for the refusal of its deletion (their jobs would be orphaned)."""
    query = (select(WorkflowInstance)
             .where(WorkflowInstance.organization == organization.name)
             .where(WorkflowInstance.state.not_in(list(INSTANCE_FINAL))))
    return [f"workflow instance {i.id} ({i.template_name}, {i.state} on {i.cluster_name})"
            for i in session.scalars(query)]
