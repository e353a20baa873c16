"""Desktop sessions, their view-only share links and one-time connect tickets (migrations 0009, 0013).

A session row is written (``SUBMITTING``, unique job name ``heroes.desktop.<id>``) before ``sbatch`` runs.
Tickets and shares keep only a SHA-256 of their secret: a database dump gives nobody a way into a desktop.
"""
from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timezone

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..store import Base

SUBMITTING, PENDING, RUNNING = "SUBMITTING", "PENDING", "RUNNING"
LIVE = frozenset({SUBMITTING, PENDING, RUNNING})
#: why a session ended, besides Slurm's own final state
IDLE, DELETED, TIME_LIMIT = "idle", "deleted", "time limit"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def new_id() -> str:
    return uuid.uuid4().hex


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A URL- and subprotocol-safe secret (hex: valid in a Sec-WebSocket-Protocol token)."""
    return secrets.token_hex(24)


def job_name(session_id: str) -> str:
    """The shared scheme of ``clusterjobs`` (``heroes.<kind>.<id>``): unique, so a lost sbatch answer is adopted."""
    from ..clusterjobs.models import DESKTOP, job_name as cluster_job_name

    return cluster_job_name(DESKTOP, session_id)


class DesktopSession(Base):
    __tablename__ = "visualization_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organization: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    username: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    cluster_id: Mapped[str] = mapped_column(String(36), nullable=False, index=True)
    cluster_name: Mapped[str] = mapped_column(String(63), nullable=False)
    cluster_login: Mapped[str] = mapped_column(String(32), nullable=False)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(32), nullable=False, default=SUBMITTING, index=True)
    reason: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    end_reason: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    partition: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    cores: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    memory_mb: Mapped[int] = mapped_column(Integer, nullable=False, default=1024)
    minutes: Mapped[int] = mapped_column(Integer, nullable=False, default=60)
    gpus: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    geometry: Mapped[str] = mapped_column(String(16), nullable=False, default="1280x800")
    work_dir: Mapped[str] = mapped_column(Text, nullable=False)
    session_dir: Mapped[str] = mapped_column(Text, nullable=False)
    instance_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    node: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    socket_path: Mapped[str] = mapped_column(Text, nullable=False, default="")
    idle_minutes: Mapped[float] = mapped_column(Float, nullable=False, default=30.0)
    expected_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_viewer_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # what the energy collector says (migration 0013): ``energy_source`` "" (nothing from it yet), "collector"
    # (its totals so far) or "record" (the energy record ingested when the desktop ended); ``energy_estimated``
    # lists the collector's columns that are estimates (no readable RAPL on the node), empty when all measured
    energy_j: Mapped[float | None] = mapped_column(Float, nullable=True)
    energy_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    energy_estimated: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    energy_source: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    energy_read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DesktopShare(Base):
    """A view-only link for one named member of the session's organization (or, ``viewer`` empty, any member
    holding the link), until it expires. The link's id is not a password: redeeming it needs the viewer's
    own login, and the organization and name are checked every time."""

    __tablename__ = "visualization_shares"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    viewer: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    session_id: Mapped[str] = mapped_column(String(32), ForeignKey("visualization_sessions.id", ondelete="CASCADE"),
                                            nullable=False, index=True)
    organization: Mapped[str] = mapped_column(String(63), nullable=False)
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class DesktopTicket(Base):
    """A one-time, short-lived permission to open ONE websocket to a session (full or view-only)."""

    __tablename__ = "visualization_tickets"

    secret_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(32), ForeignKey("visualization_sessions.id", ondelete="CASCADE"),
                                            nullable=False, index=True)
    username: Mapped[str] = mapped_column(String(255), nullable=False)
    view_only: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    share_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def live_sessions(session: Session) -> list[DesktopSession]:
    return list(session.scalars(select(DesktopSession).where(DesktopSession.state.in_(LIVE))))


def sessions_on_cluster(session: Session, cluster) -> list[str]:
    """Live desktops on ``cluster`` (removing a cluster with live desktops is refused)."""
    rows = session.scalars(select(DesktopSession.id).where(DesktopSession.cluster_id == cluster.id,
                                                           DesktopSession.state.in_(LIVE)))
    return [f"desktop {r}" for r in rows]


def desktops_of_instance(session: Session, instance_id: str) -> list[dict]:
    """The desktops opened on an instance's folder ("Visualize"), newest first, for the seed's
    ``GET /organization/workflow/visualization`` (which shows the instance's nodes and any desktop on them)."""
    rows = session.scalars(select(DesktopSession).where(DesktopSession.instance_id == instance_id)
                           .order_by(DesktopSession.created_at.desc()).limit(20))
    return [{"id": r.id, "state": r.state, "node": r.node, "ready": r.state == RUNNING and bool(r.socket_path),
             "username": r.username} for r in rows]
