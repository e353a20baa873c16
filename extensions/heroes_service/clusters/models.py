"""The ``clusters`` table: one enrolled Slurm cluster of one organization.

The service-account private key is stored only as a Fernet token (``service_key_enc``); the host key is
pinned as type + base64 blob, its fingerprint kept for display. Organization is the organization's
name (as ``Principal.organization`` carries it), unique together with the cluster name.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..store import Base


def _new_id() -> str:
    return str(uuid.uuid4())


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Cluster(Base):
    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("organization", "name", name="uq_clusters_org_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=_new_id)
    organization: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    description: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    port: Mapped[int] = mapped_column(Integer, nullable=False, default=22)
    work_dir: Mapped[str] = mapped_column(String(500), nullable=False)
    container_runtime: Mapped[str] = mapped_column(String(32), nullable=False)
    identity_mode: Mapped[str] = mapped_column(String(32), nullable=False)
    service_login: Mapped[str] = mapped_column(String(32), nullable=False, default="heroes")
    service_key_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    host_key_type: Mapped[str] = mapped_column(String(64), nullable=False)
    host_key_b64: Mapped[str] = mapped_column(Text, nullable=False)
    host_key_fingerprint: Mapped[str] = mapped_column(String(80), nullable=False)
    slurm_version: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    slurm_cluster_name: Mapped[str] = mapped_column(String(63), nullable=False, default="")
    partitions: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    default_partition: Mapped[str] = mapped_column(String(63), nullable=False, default="")
    price_model: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    energy_profile: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    relative_speed: Mapped[float] = mapped_column(Float, nullable=False, default=1.0)
    created_by: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=_utcnow,
                                                 onupdate=_utcnow)

    def work_dir_for(self, login: str) -> str:
        """The work directory of ``login`` (``{login}`` in the enrolled path is replaced)."""
        return self.work_dir.replace("{login}", login)


# --- queries other capabilities use (workflows, decision) ---------------------------------------------
def clusters_of(session: Session, organization: str) -> list[Cluster]:
    """An organization's clusters, by name."""
    return list(session.scalars(select(Cluster).where(Cluster.organization == organization).order_by(Cluster.name)))


def cluster_by_name(session: Session, organization: str, name: str) -> Cluster | None:
    return session.scalars(select(Cluster).where(Cluster.organization == organization, Cluster.name == name)).first()


def cluster_by_id(session: Session, organization: str | None, cluster_id: str) -> Cluster | None:
    """The cluster with ``cluster_id`` if it belongs to ``organization`` (None: any, for trusted callers)."""
    cluster = session.get(Cluster, cluster_id) if len(cluster_id) <= 36 else None
    if cluster is None or (organization is not None and cluster.organization != organization):
        return None
    return cluster
