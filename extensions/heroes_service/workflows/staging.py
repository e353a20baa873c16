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
from dataclasses import dataclass
from types import SimpleNamespace

from boto3.s3.transfer import TransferConfig

from ..clusters.connector import ClusterConnector
from ..data.names import NameError_, check_key
from ..errors import ApiError, Invalid, NotFound

log = logging.getLogger("heroes_service.workflows")

#: parts of output uploads: bounded memory per transfer
_TRANSFER = TransferConfig(multipart_threshold=8 * 1024**2, multipart_chunksize=8 * 1024**2, max_concurrency=2,
                           use_threads=True)


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
        body = self.data.storage.client.get_object(Bucket=ref["bucket"], Key=ref["key"])["Body"]
        try:
            return conn.put_stream(body, remote_path)
        finally:
            body.close()

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


__all__ = ["Staging", "StagingCancelled", "RemoteEntry", "owner_principal", "api_error_text"]
