"""Staging between the users' S3 storage and a cluster's work directory, streamed both ways.

The data capability owns the buckets and their rules (``heroes_service.data.DataService``): inputs are
checked against the caller's grants at submit time (``check_input``), and outputs go to the user's own
bucket under ``workflows/<instance_id>/``. The bytes never sit whole in memory: S3 bodies are read in
chunks into SFTP writes (``put_stream``), and SFTP reads feed boto3's multipart upload.
"""
from __future__ import annotations

import logging
import posixpath
import stat
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace

from boto3.s3.transfer import TransferConfig
from sqlalchemy import BigInteger, DateTime, Float, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..clusters.connector import ClusterConnector
from ..clusters.errors import ClusterError
from ..data.names import NameError_, check_key
from ..errors import ApiError, Invalid, NotFound
from ..store import Base
from .models import WorkflowInstance as Instance

log = logging.getLogger("heroes_service.workflows")

#: parts of output uploads: bounded memory per transfer
_TRANSFER = TransferConfig(multipart_threshold=8 * 1024**2, multipart_chunksize=8 * 1024**2, max_concurrency=2,
                           use_threads=True)


class StagingTransfer(Base):
    """One input staged from S3 to a cluster (migration 0011_staging_transfers): the gateway's own measure of
    each cluster's S3 -> cluster throughput, and where a content hash already lies on a cluster."""

    __tablename__ = "staging_transfers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    cluster_id: Mapped[str] = mapped_column(String(36), nullable=False, index=True)
    instance_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    bucket: Mapped[str] = mapped_column(String(255), nullable=False)
    key: Mapped[str] = mapped_column(String(1024), nullable=False)
    etag: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)
    remote_path: Mapped[str] = mapped_column(String(1200), nullable=False, default="")
    copied_from: Mapped[str] = mapped_column(String(1200), nullable=False, default="")  # "" = from S3
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                 default=lambda: datetime.now(timezone.utc))


@dataclass
class StagedInput:
    """What one stage-in moved: bytes, seconds it took, the object's content hash (S3 ETag)."""

    size: int
    seconds: float
    etag: str
    copied_from: str = ""     # the earlier instance's copy on the cluster it came from ("" = from S3)


def same_content(transfers: list, bucket: str, key: str, etag: str, size: int):
    """An earlier stage-in of this very content (bucket, key, S3 ETag and size) to the cluster, or None."""
    if not etag:
        return None
    return next((t for t in transfers if t.bucket == bucket and t.key == key and t.etag == etag and t.bytes == size),
                None)


def earlier_transfers(sessions, instance_id: str, limit: int = 200) -> list:
    """The instance's organization's latest stage-ins to its cluster, detached from the session."""
    with sessions() as session:
        inst = session.get(Instance, instance_id)
        if inst is None:
            return []
        rows = transfers_of(session, inst.organization, inst.cluster_id, limit=limit)
        session.expunge_all()
        return rows


def record_transfer(session: Session, *, organization: str, cluster_id: str, instance_id: str, ref: dict,
                    staged: StagedInput, remote_path: str) -> None:
    """Keep one stage-in's measure (the caller commits)."""
    session.add(StagingTransfer(organization=organization, cluster_id=cluster_id, instance_id=instance_id,
                                bucket=ref["bucket"], key=ref["key"], etag=staged.etag, bytes=int(staged.size),
                                seconds=float(staged.seconds), remote_path=remote_path,
                                copied_from=staged.copied_from))


def transfers_of(session: Session, organization: str, cluster_id: str, limit: int = 20) -> list[StagingTransfer]:
    """The organization's latest stage-ins to one cluster (tenant isolation: never another's)."""
    query = select(StagingTransfer).where(StagingTransfer.organization == organization,
                                          StagingTransfer.cluster_id == cluster_id)
    return list(session.scalars(query.order_by(StagingTransfer.id.desc()).limit(limit)))


class StagingCancelled(Exception):
    """The instance was cancelled while its files were being staged."""


@dataclass
class RemoteEntry:
    path: str       # relative to the instance dir
    size: int


def owner_principal(username: str, organization: str) -> SimpleNamespace:
    """A principal-like value for the data domain when the real one is gone (reconciler after restart).
    Only the user's own bucket is written with it, which needs no group or role."""
    return SimpleNamespace(username=username, organization=organization, groups=[], is_org_admin=False,
                           roles=frozenset({"user"}))


class Staging:
    def __init__(self, data_service):
        self.data = data_service

    # --- submit time -------------------------------------------------------------------------------
    def check_input(self, principal, ref: dict) -> dict:
        """The input exists and ``principal`` may read it (404 otherwise, like the data API)."""
        try:
            check_key(ref["key"])
        except NameError_ as exc:
            raise Invalid(f"input key {ref['key']!r}: {exc}", rule=exc.rule) from None
        grant = self.data.resolve(principal, ref["bucket"])
        size = self.data.storage.object_size(grant.bucket, ref["key"])
        if size is None:
            raise NotFound(f"input {ref['key']!r} not found in bucket {grant.bucket!r}")
        return {"bucket": grant.bucket, "key": ref["key"], "size": size}

    def output_bucket(self, username: str, organization: str) -> str:
        """The user's personal bucket (created if missing), where outputs land."""
        return self.data.provision_user(username, organization or "")

    # --- inputs ------------------------------------------------------------------------------------
    def stage_in(self, conn: ClusterConnector, ref: dict, remote_path: str) -> int:
        return self.stage_in_measured(conn, ref, remote_path).size

    def stage_in_measured(self, conn: ClusterConnector, ref: dict, remote_path: str,
                          earlier: list | None = None) -> StagedInput:
        """Stage one input and say how long it took and which content it was (for :func:`record_transfer`).

        When an earlier instance staged the same content to this cluster (``earlier``: its transfers), the
        input is copied from that instance's directory on the cluster instead of moved again; if that copy is
        gone or differs in size, it comes from S3 as usual."""
        began = time.monotonic()
        if earlier:
            head = self.data.storage.client.head_object(Bucket=ref["bucket"], Key=ref["key"])
            etag = str(head.get("ETag", "")).strip('"')
            match = same_content(earlier, ref["bucket"], ref["key"], etag, int(head["ContentLength"]))
            if match is not None and match.remote_path != remote_path \
                    and self._copy_on_cluster(conn, match.remote_path, remote_path, match.bytes):
                return StagedInput(size=match.bytes, seconds=time.monotonic() - began, etag=etag,
                                   copied_from=match.remote_path)
        answer = self.data.storage.client.get_object(Bucket=ref["bucket"], Key=ref["key"])
        body = answer["Body"]
        try:
            size = conn.put_stream(body, remote_path)
        finally:
            body.close()
        return StagedInput(size=size, seconds=time.monotonic() - began,
                           etag=str(answer.get("ETag", "")).strip('"'))

    @staticmethod
    def _copy_on_cluster(conn: ClusterConnector, source: str, target: str, size: int) -> bool:
        """cp on the cluster (argv, every element quoted by the connector); True when the copy has ``size``."""
        try:
            if not conn.run(["cp", "--", source, target], timeout=600).ok:
                return False
            with conn.sftp() as sftp:
                return sftp.stat(target).st_size == size
        except (OSError, ClusterError) as exc:
            log.info("copy of %s on %s failed (%s): staging from S3", source, conn.cluster, exc)
            return False

    # --- outputs -----------------------------------------------------------------------------------
    def walk(self, conn: ClusterConnector, root: str, *, skip: tuple[str, ...] = (".heroes",)) -> list[RemoteEntry]:
        """Regular files below ``root`` (relative paths), symlinks not followed (a job cannot point the
        gateway at files outside its directory)."""
        found: list[RemoteEntry] = []
        with conn.sftp() as sftp:
            stack = [""]
            while stack:
                rel = stack.pop()
                for attr in sftp.listdir_attr(posixpath.join(root, rel) if rel else root):
                    child = posixpath.join(rel, attr.filename) if rel else attr.filename
                    if child in skip or ".heroes-part-" in attr.filename:
                        continue
                    if stat.S_ISDIR(attr.st_mode or 0):
                        stack.append(child)
                    elif stat.S_ISREG(attr.st_mode or 0):
                        found.append(RemoteEntry(child, attr.st_size or 0))
        return sorted(found, key=lambda e: e.path)

    def stage_out(self, conn: ClusterConnector, remote_path: str, bucket: str, key: str) -> None:
        with conn.get_stream(remote_path) as handle:
            with self.data.storage.guard("upload", bucket=bucket, key=key):
                self.data.storage.client.upload_fileobj(handle, bucket, key, Config=_TRANSFER)

    def room(self, organization: str) -> int | None:
        return self.data.room(organization) if organization else None


def api_error_text(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return exc.detail
    return str(exc)


__all__ = ["Staging", "StagingCancelled", "RemoteEntry", "owner_principal", "api_error_text", "StagingTransfer",
           "StagedInput", "record_transfer", "transfers_of", "same_content", "earlier_transfers"]
