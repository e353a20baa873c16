"""Data management domain: which buckets a principal may use, how, and the quota of their organization.

Rules (the API enforces them here, before any S3 call):

* A user's personal space (``<base>-u-<user>`` and extra ``<base>-u-<user>.<name>`` buckets) is theirs
  alone: read, write, create and delete extra buckets.
* An organization's shared space (``<base>-o-<org>[.<name>]``) is read by every member; members write it
  unless they are in the read-only group (``data_readonly_group``); org admins always write and alone
  create or delete extra shared buckets.
* Nobody else sees a bucket, the platform admin included: a foreign bucket answers 404, the same as a
  bucket that does not exist, so names of other tenants' buckets cannot be probed.
* Writes count against the organization's quota: its shared buckets plus its members' personal buckets
  (tagged ``heroes-org`` when created). A write that does not fit is refused with 413 before anything
  is stored; a streamed body that grows past the room left is aborted.

The principal is duck-typed (``username``, ``organization``, ``groups``, ``is_org_admin``) so the domain
does not depend on how the API authenticated it.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..errors import Conflict, Forbidden, Invalid, NotFound
from . import iam
from .names import ORG, USER, BucketRef, NameError_, Naming, check_key, check_prefix, identity_part
from .storage import QuotaExceeded, Storage

READ = "read"
WRITE = "write"
TAG_ORG = "heroes-org"
TAG_OWNER = "heroes-owner"
TAG_KIND = "heroes-kind"


def _invalid(exc: NameError_) -> Invalid:
    return Invalid(str(exc), rule=exc.rule)


@dataclass(frozen=True)
class Grant:
    """A bucket the principal may use and how."""

    bucket: str
    kind: str
    owner: str
    extra: str
    access: str  # READ or WRITE
    manage: bool  # may delete the bucket (extra buckets only) / create siblings
    organization: str  # the organization the bucket's bytes count against ("" for none)

    def public(self) -> dict:
        return {"bucket": self.bucket, "kind": self.kind, "name": self.extra or "default",
                "default": not self.extra, "access": self.access, "manage": self.manage}


@dataclass
class QuotaPolicy:
    """Quota of each organization in bytes: ``per_org`` overrides ``default`` (0 = unlimited)."""

    default: int = 10 * 1024**3
    per_org: dict[str, int] = field(default_factory=dict)

    def of(self, organization: str) -> int:
        return int(self.per_org.get(organization, self.default))


class DataService:
    """The data domain, used by the API routes (one per process)."""

    def __init__(self, storage: Storage, naming: Naming, quotas: QuotaPolicy, *,
                 readonly_group: str = "data-readonly", presign_ttl: int = 3600,
                 admin: iam.GatewayAdmin | None = None):
        self.storage = storage
        self.naming = naming
        self.quotas = quotas
        self.readonly_group = readonly_group
        self.presign_ttl = presign_ttl
        self.admin = admin
        self._provisioned: dict[str, float] = {}
        self._lock = threading.Lock()
        self._reserved: dict[str, int] = {}  # bytes of uploads in flight per organization
        self._tag_cache: dict[str, str] = {}  # bucket -> organization its bytes count against
        self._policy_locks: dict[str, threading.Lock] = {}  # username -> lock around their bucket policy

    # --- who may use what ---------------------------------------------------------------------------
    def _is_readonly(self, principal) -> bool:
        if getattr(principal, "is_org_admin", False):
            return False
        groups = {str(g).rstrip("/").rsplit("/", 1)[-1] for g in (getattr(principal, "groups", None) or ())}
        return self.readonly_group in groups

    def grant_for(self, principal, ref: BucketRef) -> Grant | None:
        """How ``principal`` may use the bucket ``ref`` names, or None (then it must look nonexistent)."""
        user = getattr(principal, "username", "") or ""
        org = getattr(principal, "organization", "") or ""
        if ref.kind == USER and user and ref.owner == identity_part(user):
            return Grant(ref.name, USER, user, ref.extra, WRITE, True, org)
        if ref.kind == ORG and org and ref.owner == identity_part(org):
            access = READ if self._is_readonly(principal) else WRITE
            return Grant(ref.name, ORG, org, ref.extra, access, bool(getattr(principal, "is_org_admin", False)),
                         org)
        return None

    def resolve(self, principal, bucket: str, need: str = READ) -> Grant:
        """The grant on ``bucket`` or 404 (foreign or missing), 403 when only read is allowed for a write."""
        ref = self.naming.parse(bucket) if isinstance(bucket, str) else None
        grant = self.grant_for(principal, ref) if ref else None
        if grant is None:
            # no name in the answer: a caller probing other tenants' bucket names learns nothing
            raise NotFound("no such bucket among those you may use (GET /organization/data/list)")
        if need == WRITE and grant.access != WRITE:
            raise Forbidden(f"you may only read bucket {bucket!r} (member of the read-only group "
                            f"{self.readonly_group!r})", rule="data-read-only")
        return grant

    # --- provisioning -------------------------------------------------------------------------------
    def default_buckets(self, principal) -> list[str]:
        out = []
        if getattr(principal, "username", ""):
            out.append(self.naming.bucket(USER, principal.username))
        if getattr(principal, "organization", ""):
            out.append(self.naming.bucket(ORG, principal.organization))
        return out

    def ensure_spaces(self, principal) -> None:
        """Create the principal's personal bucket and their organization's shared one if missing."""
        if getattr(principal, "username", ""):
            self.provision_user(principal.username, getattr(principal, "organization", "") or "")
        if getattr(principal, "organization", ""):
            self.provision_organization(principal.organization)

    def _fresh(self, bucket: str) -> bool:
        return time.monotonic() - self._provisioned.get(bucket, -1e9) < 300

    def provision_user(self, username: str, organization: str = "") -> str:
        """The user's personal bucket (root-owned, tagged with the organization its bytes count against)."""
        bucket = self.naming.bucket(USER, username)
        if not self._fresh(bucket):
            tags = {TAG_KIND: USER, TAG_OWNER: identity_part(username)}
            if organization:
                tags[TAG_ORG] = identity_part(organization)
            exists = self.storage.bucket_exists(bucket)
            # an unknown organization ("") never strips the tag a previous call set
            if not exists or (organization and self._tag_org(bucket) != tags[TAG_ORG]):
                self.storage.create_bucket(bucket, tags=tags)
                self._tag_cache[bucket] = tags.get(TAG_ORG, "")
            self._provisioned[bucket] = time.monotonic()
        return bucket

    def forget_provisioned(self, bucket: str) -> None:
        """Drop a bucket from the "recently provisioned" cache (it went away behind the service's back)."""
        self._provisioned.pop(bucket, None)

    def provision_organization(self, organization: str) -> str:
        """The organization's shared bucket (issue 3's organization creation calls this)."""
        bucket = self.naming.bucket(ORG, organization)
        if not self._fresh(bucket):
            if not self.storage.bucket_exists(bucket):
                self.storage.create_bucket(bucket, tags={TAG_KIND: ORG, TAG_OWNER: identity_part(organization),
                                                         TAG_ORG: identity_part(organization)})
            self._provisioned[bucket] = time.monotonic()
        return bucket

    def undo_provision_organization(self, organization: str) -> None:
        """Remove the shared bucket ``provision_organization`` made, if it is still empty (creation undone)."""
        bucket = self.naming.bucket(ORG, organization)
        self._provisioned.pop(bucket, None)
        if self.storage.bucket_exists(bucket) and not self.storage.list_objects(bucket, limit=1, recursive=True)[
                "objects"]:
            self.storage.delete_bucket(bucket)

    def delete_organization_storage(self, organization: str) -> list[str]:
        """Remove every shared bucket of an organization with its objects (organization deletion)."""
        gone = []
        ident = identity_part(organization)
        for name in self.storage.list_buckets():
            ref = self.naming.parse(name)
            if ref and ref.kind == ORG and ref.owner == ident:
                self.storage.delete_bucket(name, force=True)
                self._provisioned.pop(name, None)
                gone.append(name)
        return gone

    def user_credentials(self, principal, *, rotate: bool = False) -> dict:
        """Scoped S3 keys for the caller's own personal bucket (for s3contents in their server)."""
        if self.admin is None:
            raise Conflict("this deployment hands out no per-user S3 credentials", rule="no-user-credentials")
        bucket = self.provision_user(principal.username, getattr(principal, "organization", "") or "")
        try:
            account = self.admin.ensure_user_account(principal.username, rotate=rotate)
        except iam.AdminError as exc:
            raise Conflict(f"the S3 server refused to create your account: {exc}") from None
        except Exception:
            self.storage.list_buckets()  # raises the 503 that says the store is unreachable
            raise
        self.grant_accounts(principal.username, bucket)
        return {"endpoint_url": self.storage.endpoint, "bucket": bucket, "access_key_id": account.access_key,
                "secret_access_key": account.secret_key, "region": "us-east-1"}

    def grant_accounts(self, username: str, bucket: str) -> None:
        """The personal bucket's policy names every account of the user (personal + one per server).

        Serialised per user: two servers starting at once must both end up in the policy.
        """
        with self._lock:
            lock = self._policy_locks.setdefault(username, threading.Lock())
        with lock:
            keys = self.admin.user_access_keys(username)
            if keys:
                self.storage.put_policy(bucket, iam.user_policy(bucket, keys))
            else:  # the user's last server stopped: no account may reach the bucket
                self.storage.delete_policy(bucket)

    # --- listing ------------------------------------------------------------------------------------
    def list_buckets(self, principal) -> list[dict]:
        """Every bucket the principal may use (default spaces first), creating the default ones."""
        self.ensure_spaces(principal)
        grants = []
        for name in self.storage.list_buckets():
            ref = self.naming.parse(name)
            grant = self.grant_for(principal, ref) if ref else None
            if grant:
                grants.append(grant)
        grants.sort(key=lambda g: (g.kind != USER, bool(g.extra), g.bucket))
        return [g.public() for g in grants]

    def list_objects(self, principal, bucket: str, prefix: str = "", *, recursive: bool = False,
                     limit: int = 1000, token: str | None = None) -> dict:
        grant = self.resolve(principal, bucket)
        try:
            prefix = check_prefix(prefix)
        except NameError_ as exc:
            raise _invalid(exc) from None
        page = self.storage.list_objects(grant.bucket, prefix, recursive=recursive, limit=limit, token=token)
        return {"bucket": grant.bucket, "prefix": prefix, "access": grant.access, **page}

    def size(self, principal, bucket: str | None = None, prefix: str = "") -> dict:
        """Bytes and objects of one bucket (or prefix), or of all usable buckets plus the org's quota."""
        if bucket:
            grant = self.resolve(principal, bucket)
            try:
                prefix = check_prefix(prefix)
            except NameError_ as exc:
                raise _invalid(exc) from None
            total, count = self.storage.usage(grant.bucket, prefix)
            return {"bucket": grant.bucket, "prefix": prefix, "bytes": total, "objects": count}
        out = []
        for b in self.list_buckets(principal):
            total, count = self.storage.usage(b["bucket"])
            out.append({"bucket": b["bucket"], "bytes": total, "objects": count})
        org = getattr(principal, "organization", "") or ""
        result = {"buckets": out, "bytes": sum(b["bytes"] for b in out)}
        if org:
            quota = self.quotas.of(org)
            result["organization"] = {"name": org, "used_bytes": self.org_usage(org),
                                      "quota_bytes": quota or None}
        return result

    # --- quota --------------------------------------------------------------------------------------
    def _tag_org(self, bucket: str) -> str:
        if bucket not in self._tag_cache:
            self._tag_cache[bucket] = self.storage.bucket_tags(bucket).get(TAG_ORG, "")
        return self._tag_cache[bucket]

    def org_usage(self, organization: str) -> int:
        """Bytes stored by an organization: its shared buckets and its members' personal buckets."""
        ident = identity_part(organization)
        total = 0
        for name in self.storage.list_buckets():
            ref = self.naming.parse(name)
            if ref is None:
                continue
            if (ref.kind == ORG and ref.owner == ident) or (ref.kind == USER and self._tag_org(name) == ident):
                total += self.storage.usage(name)[0]
        return total

    def room(self, organization: str) -> int | None:
        """Bytes the organization may still write (None: unlimited), in-flight uploads counted."""
        if not organization:
            return None
        quota = self.quotas.of(organization)
        if quota <= 0:
            return None
        with self._lock:
            reserved = self._reserved.get(organization, 0)
        return quota - self.org_usage(organization) - reserved

    def _quota_error(self, organization: str, need: int | None, room: int) -> QuotaExceeded:
        quota = self.quotas.of(organization)
        wanted = f"{need} more bytes" if need is not None else "more bytes"
        return QuotaExceeded(
            f"organization {organization!r} is over its storage quota: {max(quota - room, 0)} of {quota} bytes "
            f"used, this write needs {wanted}; nothing was stored", rule="organization-quota")

    # --- objects ------------------------------------------------------------------------------------
    def _key(self, key: str, *, folder: bool = False) -> str:
        try:
            return check_key(key, folder=folder)
        except NameError_ as exc:
            raise _invalid(exc) from None

    def create_folder(self, principal, bucket: str, folder: str) -> dict:
        grant = self.resolve(principal, bucket, WRITE)
        key = self._key(folder if folder.endswith("/") else folder + "/", folder=True)
        self.storage.put_folder(grant.bucket, key)
        return {"bucket": grant.bucket, "folder": key}

    def delete_path(self, principal, bucket: str, key: str) -> dict:
        """Delete one object, or a folder with everything below it when ``key`` ends with '/'."""
        grant = self.resolve(principal, bucket, WRITE)
        if key.endswith("/"):
            key = self._key(key, folder=True)
            removed = self.storage.delete_prefix(grant.bucket, key)
            if removed == 0:
                raise NotFound(f"no folder {key!r} in bucket {grant.bucket!r}")
            return {"bucket": grant.bucket, "deleted": removed, "folder": key}
        key = self._key(key)
        if self.storage.object_size(grant.bucket, key) is None:
            raise NotFound(f"no object {key!r} in bucket {grant.bucket!r}")
        self.storage.delete_object(grant.bucket, key)
        return {"bucket": grant.bucket, "deleted": 1, "key": key}

    async def upload(self, principal, bucket: str, key: str, body: AsyncIterator[bytes], *,
                     length: int | None = None, content_type: str = "application/octet-stream") -> dict:
        """Stream ``body`` into ``bucket/key`` within the organization's quota (413 and nothing stored)."""
        grant = self.resolve(principal, bucket, WRITE)
        key = self._key(key)
        org = grant.organization
        room = await asyncio.to_thread(self.room, org)
        if room is not None:
            # overwriting frees the old object's bytes
            old = await asyncio.to_thread(self.storage.object_size, grant.bucket, key) or 0
            room += old
            if (length is not None and length > room) or room <= 0:
                raise self._quota_error(org, length, room)
        reserve = length if length is not None else (room if room is not None else 0)
        with self._lock:
            self._reserved[org] = self._reserved.get(org, 0) + reserve
        try:
            try:
                result = await self.storage.upload_stream(grant.bucket, key, body, limit=room,
                                                          content_type=content_type)
            except QuotaExceeded:
                raise self._quota_error(org, None, room or 0) from None
        finally:
            with self._lock:
                self._reserved[org] -= reserve
        return {"bucket": grant.bucket, "key": key, **result}

    def download(self, principal, bucket: str, key: str, range_header: str | None = None):
        grant = self.resolve(principal, bucket)
        return self.storage.open_download(grant.bucket, self._key(key), range_header)

    def presign_download(self, principal, bucket: str, key: str) -> dict:
        grant = self.resolve(principal, bucket)
        key = self._key(key)
        if self.storage.object_size(grant.bucket, key) is None:
            raise NotFound(f"no object {key!r} in bucket {grant.bucket!r}")
        return {"method": "GET", "url": self.storage.presign_get(grant.bucket, key, self.presign_ttl),
                "expires_in": self.presign_ttl}

    def presign_upload(self, principal, bucket: str, key: str) -> dict:
        """A POST form for a big upload straight to S3, capped at the room left in the quota."""
        grant = self.resolve(principal, bucket, WRITE)
        key = self._key(key)
        room = self.room(grant.organization)
        cap = 5 * 1024**3 if room is None else min(room, 5 * 1024**3)
        if cap <= 0:
            raise self._quota_error(grant.organization, None, room or 0)
        form = self.storage.presign_post(grant.bucket, key, self.presign_ttl, cap)
        return {"method": "POST", "url": form["url"], "fields": form["fields"], "max_bytes": cap,
                "expires_in": self.presign_ttl}

    def transfer(self, principal, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, *,
                 move: bool = False) -> dict:
        """Copy (or move) an object or a folder (key ending with '/') between buckets the caller may use."""
        src = self.resolve(principal, src_bucket, WRITE if move else READ)
        dst = self.resolve(principal, dst_bucket, WRITE)
        folder = src_key.endswith("/")
        src_key = self._key(src_key, folder=folder)
        if folder and not dst_key.endswith("/"):
            dst_key += "/"
        dst_key = self._key(dst_key, folder=folder)
        if (src.bucket, src_key) == (dst.bucket, dst_key):
            raise Conflict("source and destination are the same", rule="copy-onto-itself")
        if folder and dst.bucket == src.bucket and dst_key.startswith(src_key):
            raise Conflict("cannot copy a folder into itself", rule="copy-into-itself")
        items = ([(o["Key"], o["Size"]) for o in self.storage.iter_keys(src.bucket, src_key)] if folder
                 else [(src_key, self.storage.object_size(src.bucket, src_key))])
        if not items or items[0][1] is None:
            raise NotFound(f"nothing at {src_key!r} in bucket {src.bucket!r}")
        needed = sum(size for _, size in items)
        same_org = move and src.organization == dst.organization
        room = None if same_org else self.room(dst.organization)
        if room is not None and needed > room:
            raise self._quota_error(dst.organization, needed, room)
        done = []
        for key, _ in items:
            target = dst_key + key[len(src_key):] if folder else dst_key
            if target.endswith("/"):  # a folder marker: filesystem-backed servers refuse to copy onto a directory
                self.storage.put_folder(dst.bucket, target)
            else:
                self.storage.copy(src.bucket, key, dst.bucket, target)
            done.append(target)
        if move:
            for key, _ in items:
                self.storage.delete_object(src.bucket, key)
        return {"bucket": dst.bucket, "keys": done, "bytes": needed, "moved": move}

    # --- buckets ------------------------------------------------------------------------------------
    def create_bucket(self, principal, name: str, scope: str = USER) -> dict:
        """An extra bucket in the caller's personal space (scope user) or their organization's (org admin)."""
        if scope == USER:
            owner = principal.username
            tags = {TAG_KIND: USER, TAG_OWNER: identity_part(owner)}
            if getattr(principal, "organization", ""):
                tags[TAG_ORG] = identity_part(principal.organization)
        elif scope == ORG:
            owner = getattr(principal, "organization", "") or ""
            if not owner:
                raise Forbidden("you belong to no organization", rule="no-organization")
            if not getattr(principal, "is_org_admin", False):
                raise Forbidden("only an organization admin creates shared buckets", rule="org-admin-only")
            tags = {TAG_KIND: ORG, TAG_OWNER: identity_part(owner), TAG_ORG: identity_part(owner)}
        else:
            raise Invalid(f"scope must be {USER!r} or {ORG!r}", rule="bucket-scope")
        try:
            bucket = self.naming.bucket(scope, owner, name)
        except NameError_ as exc:
            raise _invalid(exc) from None
        if self.storage.bucket_exists(bucket):
            raise Conflict(f"bucket {name!r} already exists", rule="duplicate-bucket")
        self.storage.create_bucket(bucket, tags=tags)
        self._tag_cache[bucket] = tags.get(TAG_ORG, "")
        return {"bucket": bucket, "kind": scope, "name": name}

    def delete_bucket(self, principal, bucket: str, *, force: bool = False) -> dict:
        grant = self.resolve(principal, bucket, WRITE)
        if not grant.extra:
            raise Conflict("a default space cannot be deleted (delete its contents instead)",
                           rule="default-space")
        if not grant.manage:
            raise Forbidden("only an organization admin deletes shared buckets", rule="org-admin-only")
        removed = self.storage.delete_bucket(grant.bucket, force=force)
        self._tag_cache.pop(grant.bucket, None)
        return {"bucket": grant.bucket, "deleted_objects": removed}
