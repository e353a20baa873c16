"""The S3 side of data management: one boto3 client with the service's (root) keys, streaming transfers,
and every S3 failure turned into an API error the client can act on.

Why streaming: uploads arrive as a request body stream and leave as multipart parts of ``part_size``
bytes, at most ``max_inflight`` parts being sent at once, so one upload holds at most
``(max_inflight + 1) * part_size`` bytes whatever the file size; downloads are one GET passed through
chunk by chunk as the socket delivers them (see ``_stream``).

Why one error mapping here: the routes must answer 503 "object storage unreachable" when the S3 server is
down, 404 for a missing object, 416 for a bad range, and never leak a stack trace.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiohttp
import boto3
import yarl
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError

from ..errors import ApiError, Conflict, NotFound, Unavailable

log = logging.getLogger("heroes_service.data")

#: S3's minimum part size (every part but the last)
MIN_PART = 5 * 1024 * 1024
#: lifetime of the presigned URL a download streams from (only the service ever sees it)
STREAM_URL_TTL = 3600
#: how much of a download the service reads ahead of its client (bigger = fewer, cheaper hand-offs)
READ_BUFSIZE = 512 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class QuotaExceeded(ApiError):
    """The organization's quota does not leave room for this write (413, nothing stored)."""

    status = 413


class RangeNotSatisfiable(ApiError):
    status = 416


@dataclass
class Download:
    """An object opened for reading: headers to answer with and the body iterator."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]
    size: int


class Storage:
    """S3 operations of the data API, all through one thread-safe boto3 client."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, *, region: str = "us-east-1",
                 part_size: int = 8 * 1024 * 1024, max_inflight: int = 4, timeout: float = 60.0,
                 connect_timeout: float = 3.0, sign_payload: bool = True):
        self.endpoint = endpoint
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.part_size = max(part_size, MIN_PART)
        self.max_inflight = max(1, max_inflight)
        config = Config(
            signature_version="s3v4",
            # payload_signing_enabled=False: no SHA-256 over every uploaded byte (by us, and again by the
            # server to check it); only for endpoints where TLS or the loopback already protect the body
            s3={"addressing_style": "path", "payload_signing_enabled": sign_payload},
            connect_timeout=connect_timeout,
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=32,
            # the gateway does not need CRC trailers; computing them costs CPU on every byte
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                                   aws_secret_access_key=secret_key, region_name=region, config=config)
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="heroes-s3")

    # --- error mapping ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def guard(self, what: str, *, bucket: str = "", key: str = ""):
        """Translate S3 failures into API errors (503 unreachable, 404 missing, 416 bad range, 409 ...)."""
        try:
            yield
        except (BotoConnectionError, HTTPClientError) as exc:
            log.warning("S3 unreachable during %s: %s", what, type(exc).__name__)
            raise Unavailable(f"object storage at {self.endpoint} is unreachable ({what} failed); "
                              "try again when it is back") from None
        except ClientError as exc:
            raise self._client_error(exc, what, bucket, key) from None
        except BotoCoreError as exc:
            log.warning("S3 client error during %s: %s", what, exc)
            raise Unavailable(f"object storage at {self.endpoint} failed during {what}") from None

    def _client_error(self, exc: ClientError, what: str, bucket: str, key: str) -> ApiError:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("NoSuchKey", "NotFound") or (status == 404 and key):
            return NotFound(f"no object {key!r} in bucket {bucket!r}")
        if code == "NoSuchBucket" or status == 404:
            return NotFound(f"no bucket {bucket!r}")
        if code == "InvalidRange" or status == 416:
            return RangeNotSatisfiable("the requested range is outside the object")
        if code == "BucketNotEmpty":
            return Conflict(f"bucket {bucket!r} is not empty (delete its objects first, or pass force=true)")
        if code in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
            return Conflict(f"bucket {bucket!r} already exists")
        if status >= 500 or status == 0:
            return Unavailable(f"object storage at {self.endpoint} failed during {what} ({code or status})")
        log.warning("S3 refused %s on %s/%s: %s %s", what, bucket, key, status, code)
        return ApiError(f"object storage refused {what} ({code})", status=502)

    # --- buckets ------------------------------------------------------------------------------------
    def list_buckets(self) -> list[str]:
        with self.guard("list buckets"):
            return [b["Name"] for b in self.client.list_buckets().get("Buckets", [])]

    def bucket_exists(self, bucket: str) -> bool:
        try:
            with self.guard("head bucket", bucket=bucket):
                self.client.head_bucket(Bucket=bucket)
            return True
        except NotFound:
            return False

    def create_bucket(self, bucket: str, tags: dict[str, str] | None = None, policy: str | None = None) -> None:
        """Create a bucket (root-owned) with tags and an optional policy; an existing one is kept as is."""
        with self.guard("create bucket", bucket=bucket):
            try:
                self.client.create_bucket(Bucket=bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",
                                                                    "BucketAlreadyExists"):
                    raise
            if tags:
                self.client.put_bucket_tagging(
                    Bucket=bucket, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
            if policy:
                self.client.put_bucket_policy(Bucket=bucket, Policy=policy)

    def put_policy(self, bucket: str, policy: str) -> None:
        with self.guard("put bucket policy", bucket=bucket):
            self.client.put_bucket_policy(Bucket=bucket, Policy=policy)

    def delete_policy(self, bucket: str) -> None:
        with self.guard("delete bucket policy", bucket=bucket):
            self.client.delete_bucket_policy(Bucket=bucket)

    def bucket_tags(self, bucket: str) -> dict[str, str]:
        try:
            with self.guard("get bucket tags", bucket=bucket):
                tags = self.client.get_bucket_tagging(Bucket=bucket).get("TagSet", [])
        except ApiError as exc:
            if exc.status in (404, 502):  # no tag set at all
                return {}
            raise
        return {t["Key"]: t["Value"] for t in tags}

    def delete_bucket(self, bucket: str, *, force: bool = False) -> int:
        """Delete a bucket; with ``force`` its objects first. Returns the number of objects removed."""
        removed = self.delete_prefix(bucket, "") if force else 0
        with self.guard("delete bucket", bucket=bucket):
            with contextlib.suppress(ClientError):
                self.client.delete_bucket_policy(Bucket=bucket)
            self.client.delete_bucket(Bucket=bucket)
        return removed

    # --- listing and sizes --------------------------------------------------------------------------
    def list_objects(self, bucket: str, prefix: str = "", *, recursive: bool = False, limit: int = 1000,
                     token: str | None = None) -> dict:
        """One page of a listing: folders (common prefixes) and objects directly below ``prefix``."""
        args = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max(1, min(limit, 1000))}
        if not recursive:
            args["Delimiter"] = "/"
        if token:
            args["ContinuationToken"] = token
        with self.guard("list objects", bucket=bucket):
            page = self.client.list_objects_v2(**args)
        objects = [{"key": o["Key"], "size": o["Size"], "etag": o.get("ETag", "").strip('"'),
                    "last_modified": o["LastModified"].isoformat()}
                   for o in page.get("Contents", []) if o["Key"] != prefix]
        folders = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        return {"objects": objects, "folders": folders,
                "next_token": page.get("NextContinuationToken") if page.get("IsTruncated") else None}

    def iter_keys(self, bucket: str, prefix: str = "") -> Iterator[dict]:
        """Every object below ``prefix`` (all pages)."""
        with self.guard("list objects", bucket=bucket):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    def usage(self, bucket: str, prefix: str = "") -> tuple[int, int]:
        """(bytes, objects) stored below ``prefix``."""
        total = count = 0
        for obj in self.iter_keys(bucket, prefix):
            total += obj["Size"]
            count += 1
        return total, count

    def object_size(self, bucket: str, key: str) -> int | None:
        """Size of an object, or None if there is none."""
        try:
            with self.guard("head object", bucket=bucket, key=key):
                return self.client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except NotFound:
            return None

    # --- writes -------------------------------------------------------------------------------------
    def put_folder(self, bucket: str, key: str) -> None:
        """A folder marker: an empty object whose key ends with '/'."""
        with self.guard("create folder", bucket=bucket, key=key):
            self.client.put_object(Bucket=bucket, Key=key, Body=b"")

    def delete_object(self, bucket: str, key: str) -> None:
        with self.guard("delete object", bucket=bucket, key=key):
            self.client.delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object below ``prefix`` (a folder and its contents), 1000 keys per request."""
        keys = [o["Key"] for o in self.iter_keys(bucket, prefix)]
        # deepest first, so folder markers go after their contents
        keys.sort(key=lambda k: (-k.count("/"), k))
        with self.guard("delete objects", bucket=bucket, key=prefix):
            for i in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[i:i + 1000]]
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> None:
        """Server-side copy (multipart copy above 5 GiB via boto3's transfer manager)."""
        with self.guard("copy", bucket=src_bucket, key=src_key):
            self.client.copy({"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key)

    async def upload_stream(self, bucket: str, key: str, chunks: AsyncIterator[bytes], *,
                            limit: int | None = None, content_type: str = "application/octet-stream") -> dict:
        """Store a streamed body as ``bucket/key``; abort and store nothing if it fails or passes ``limit``.

        Small bodies (below one part) go up with one PutObject; larger ones as a multipart upload whose
        parts are sent while the next one is received. The object appears only when complete, so
        concurrent uploads to one key end with one whole object (the last to complete).

        Received bytes are copied once, into part buffers reused for the whole upload: allocating a fresh
        8 MiB buffer per part costs more in page faults (the kernel zeroes every new page) than the copy.
        """
        loop = asyncio.get_running_loop()
        pool = _PartBuffers(self.part_size, self.max_inflight + 1)
        upload = _MultipartUpload(self, loop, bucket, key, content_type)
        size = 0
        buffer, filled = await pool.take(), 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise QuotaExceeded(f"the upload passed the {limit} bytes the organization's quota "
                                        "leaves; nothing was stored", rule="organization-quota")
                view = memoryview(chunk)
                while view:
                    n = min(len(view), self.part_size - filled)
                    buffer[filled:filled + n] = view[:n]
                    filled += n
                    view = view[n:]
                    if filled == self.part_size:
                        await upload.send(buffer, filled, pool)
                        buffer, filled = await pool.take(), 0
            if upload.upload_id is None:
                result = await upload.run(self.client.put_object, Bucket=bucket, Key=key,
                                          Body=bytes(buffer[:filled]), ContentType=content_type)
                return {"size": size, "etag": result.get("ETag", "").strip('"'), "parts": 0}
            if filled:
                await upload.send(buffer, filled, pool)
            etag, parts = await upload.complete()
            return {"size": size, "etag": etag, "parts": parts}
        except BaseException:
            await upload.abort()
            raise

    def _call(self, fn, *args, **kwargs):
        """Run one boto3 call in a worker thread with the error mapping applied."""
        with self.guard(fn.__name__, bucket=kwargs.get("Bucket", ""), key=kwargs.get("Key", "")):
            return fn(*args, **kwargs)

    # --- reads --------------------------------------------------------------------------------------
    def open_download(self, bucket: str, key: str, range_header: str | None = None) -> Download:
        """Open ``bucket/key`` for streaming, honouring one ``bytes=a-b`` / ``a-`` / ``-n`` range (206).

        The HEAD here maps a missing object, a bad range or an unreachable server to 404/416/503 before
        any byte is answered; the body is then streamed by ``_stream``.
        """
        with self.guard("download", bucket=bucket, key=key):
            head = self.client.head_object(Bucket=bucket, Key=key)
        total = head["ContentLength"]
        etag = head.get("ETag", "")
        start, end = 0, total - 1
        status = 200
        if range_header:
            start, end = self._parse_range(range_header.strip(), total)
            status = 206
        headers = {
            "Content-Length": str(max(end - start + 1, 0)),
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": head["LastModified"].strftime("%a, %d %b %Y %H:%M:%S GMT"),
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        return Download(status=status, headers=headers, body=self._stream(bucket, key, etag, start, end),
                        size=max(end - start + 1, 0))

    @staticmethod
    def _parse_range(value: str, total: int) -> tuple[int, int]:
        m = _RANGE.match(value)
        if not m or (m.group(1) == "" and m.group(2) == ""):
            raise RangeNotSatisfiable(f"only one range of the form bytes=a-b, bytes=a- or bytes=-n is supported, "
                                      f"got {value[:40]!r}", headers={"Content-Range": f"bytes */{total}"})
        first, last = m.group(1), m.group(2)
        if first == "":  # the last n bytes
            start, end = max(total - int(last), 0), total - 1
        else:
            start = int(first)
            end = min(int(last), total - 1) if last else total - 1
        if start >= total or end < start:
            raise RangeNotSatisfiable(f"the range {value[:40]!r} is outside the object ({total} bytes)",
                                      headers={"Content-Range": f"bytes */{total}"})
        return start, end

    async def _stream(self, bucket: str, key: str, etag: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes start..end as one GET on the event loop, passed on in the chunks the socket gives.

        Why not boto3 here: its body reads run in worker threads and allocate a fresh buffer per read,
        which cost the service about twice the CPU of this path (page faults of fresh mmap'd buffers, GIL
        hand-offs); the S3 server is local, so one stream keeps up with parallel ranged GETs.
        The request is a presigned URL (signed by boto3, no second credential path); ``If-Match`` pins
        the version read by ``open_download``, so a replaced object ends the stream (412) instead of
        mixing two versions. aiohttp stops reading the socket when its small buffer is full, so memory
        stays bounded by the client's pace.
        """
        if end < start:  # an empty object: nothing to fetch (and no valid Range to ask for)
            return
        # encoded=True: the signature covers the URL exactly as boto3 quoted it; never re-quote it
        url = yarl.URL(self.presign_get(bucket, key, STREAM_URL_TTL), encoded=True)
        headers = {"Range": f"bytes={start}-{end}", "If-Match": etag, "Accept-Encoding": "identity"}
        timeout = aiohttp.ClientTimeout(sock_connect=self.connect_timeout, sock_read=self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False, read_bufsize=READ_BUFSIZE) as session, \
                    session.get(url, headers=headers) as response:
                if response.status == 412:
                    raise Conflict(f"{key!r} was replaced while it was being downloaded; download it again")
                if response.status != 206:
                    raise Unavailable(f"object storage answered {response.status} while streaming {key!r}")
                async for chunk in response.content.iter_any():
                    yield chunk
        except aiohttp.ClientError as exc:
            log.warning("S3 stream of %s/%s broke: %s", bucket, key, type(exc).__name__)
            raise Unavailable(f"object storage at {self.endpoint} stopped while streaming {key!r}") from None

    # --- presigned URLs -----------------------------------------------------------------------------
    def presign_get(self, bucket: str, key: str, ttl: int) -> str:
        with self.guard("presign", bucket=bucket, key=key):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl)

    def presign_post(self, bucket: str, key: str, ttl: int, max_bytes: int) -> dict:
        """A browser-style POST form limited to this key and ``max_bytes`` (the quota's room)."""
        with self.guard("presign", bucket=bucket, key=key):
            return self.client.generate_presigned_post(
                bucket, key, ExpiresIn=ttl, Conditions=[["content-length-range", 0, max_bytes]])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _PartBuffers:
    """A fixed set of part-sized buffers: one being filled, the others being sent (bounded memory)."""

    def __init__(self, part_size: int, count: int):
        self.part_size = part_size
        self.free: asyncio.Queue[bytearray] = asyncio.Queue()
        for _ in range(count):
            self.free.put_nowait(bytearray(part_size))

    async def take(self) -> bytearray:
        return await self.free.get()

    def give_back(self, buffer: bytearray) -> None:
        self.free.put_nowait(buffer)


class _MultipartUpload:
    """One multipart upload driven from the event loop, its S3 calls run in the storage's thread pool."""

    def __init__(self, storage: "Storage", loop: asyncio.AbstractEventLoop, bucket: str, key: str,
                 content_type: str):
        self.storage, self.loop = storage, loop
        self.bucket, self.key, self.content_type = bucket, key, content_type
        self.upload_id: str | None = None
        self.sent: list[tuple[int, asyncio.Future]] = []  # (part number, future of UploadPart)

    def run(self, fn, **kwargs) -> asyncio.Future:
        return self.loop.run_in_executor(self.storage._pool, lambda: self.storage._call(fn, **kwargs))

    async def send(self, buffer: bytearray, filled: int, pool: _PartBuffers) -> None:
        """Send one part; its buffer goes back to ``pool`` once S3 has it (a failed part fails the upload)."""
        if self.upload_id is None:
            created = await self.run(self.storage.client.create_multipart_upload, Bucket=self.bucket,
                                     Key=self.key, ContentType=self.content_type)
            self.upload_id = created["UploadId"]
        for _, fut in self.sent:
            if fut.done() and fut.exception() is not None:
                raise fut.exception()
        body = buffer if filled == len(buffer) else bytes(buffer[:filled])
        fut = self.run(self.storage.client.upload_part, Bucket=self.bucket, Key=self.key,
                       UploadId=self.upload_id, PartNumber=len(self.sent) + 1, Body=body)
        fut.add_done_callback(lambda _: pool.give_back(buffer))
        self.sent.append((len(self.sent) + 1, fut))

    async def complete(self) -> tuple[str, int]:
        results = await asyncio.gather(*(fut for _, fut in self.sent))
        parts = [{"PartNumber": n, "ETag": r["ETag"]} for (n, _), r in zip(self.sent, results)]
        result = await self.run(self.storage.client.complete_multipart_upload, Bucket=self.bucket,
                                Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts})
        self.upload_id = None
        return result.get("ETag", "").strip('"'), len(parts)

    async def abort(self) -> None:
        """Store nothing: wait for parts in flight, then abort the multipart upload (if one was begun)."""
        if self.upload_id is None:
            return
        await asyncio.gather(*(fut for _, fut in self.sent), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.run(self.storage.client.abort_multipart_upload, Bucket=self.bucket, Key=self.key,
                           UploadId=self.upload_id)
