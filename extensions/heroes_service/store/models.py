"""Tables of the identity core: organizations, their OAuth clients and storage servers, revoked sessions."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import DateTime, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import Base


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Organization(Base):
    """A tenant: mirrors a top-level Keycloak group (attribute ``heroes.organization``) and a hub group."""

    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    keycloak_group_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    clients: Mapped[list["OrgClient"]] = relationship(back_populates="organization", cascade="all, delete-orphan",
                                                      passive_deletes=True)
    servers: Mapped[list["StorageServer"]] = relationship(back_populates="organization",
                                                          cascade="all, delete-orphan", passive_deletes=True)


class OrgClient(Base):
    """An OAuth client (Keycloak confidential client with a service account) for an organization's scripts."""

    __tablename__ = "organization_clients"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False,
                                                 index=True)
    client_id: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    keycloak_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    description: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    organization: Mapped[Organization] = relationship(back_populates="clients")


class StorageServer(Base):
    """An object-storage endpoint an organization uses (S3 API)."""

    __tablename__ = "storage_servers"
    __table_args__ = (UniqueConstraint("organization_id", "name", name="uq_storage_servers_org_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False,
                                                 index=True)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    endpoint_url: Mapped[str] = mapped_column(String(500), nullable=False)
    region: Mapped[str] = mapped_column(String(63), nullable=False, default="us-east-1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    organization: Mapped[Organization] = relationship(back_populates="servers")


class RevokedSession(Base):
    """A Keycloak session ended through ``/auth/logout``: its access tokens are refused until they expire."""

    __tablename__ = "revoked_sessions"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
