"""Data spaces (S3 buckets behind the service): list, upload, download, delete, with progress and streaming.

Why streaming everywhere: a notebook server has a few GiB of memory and datasets are often bigger. Uploads
read the file in 1 MiB chunks and send them as they are read (with Content-Length, so the service checks
the quota before storing anything); downloads write each chunk to the file as it arrives. The bytes are
never all in memory, whatever the file's size. An interrupted upload stores nothing (the service aborts the
multipart upload), so it is simply started again; it is never retried behind your back.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator

from .errors import NotFound
from .models import Bucket, Listing, DataObject
from .progress import ProgressSpec, make_bar

if TYPE_CHECKING:  # pragma: no cover
    from .session import Session

DATA = "/organization/data"
CHUNK = 1024 * 1024

__all__ = ["DataSpace"]


class _SizedStream:
    """An iterable body whose length is known: requests then sends Content-Length instead of chunking."""

    def __init__(self, chunks: Iterator[bytes], length: int):
        self.chunks, self.length = chunks, length

    def __iter__(self):
        return self.chunks

    def __len__(self) -> int:
        return self.length


class DataSpace:
    """Your buckets: ``client.data``. A ``bucket`` left None is your personal default bucket."""

    def __init__(self, session: "Session"):
        self.session = session
        self._default: str | None = None

    def buckets(self) -> list[Bucket]:
        """The buckets you may use, your personal space first."""
        return [Bucket.from_api(b) for b in self.session.get(f"{DATA}/list")["buckets"]]

    def default_bucket(self) -> str:
        """Your personal default bucket (the one outputs of your workflows go to)."""
        if self._default is None:
            spaces = self.buckets()
            mine = [b for b in spaces if b.kind == "user" and b.default] or spaces
            if not mine:
                raise NotFound("you have no bucket", status=404)
            self._default = mine[0].bucket
        return self._default

    def ls(self, prefix: str = "", bucket: str | None = None, recursive: bool = False) -> Listing:
        """Folders and objects below ``prefix`` (every page joined; ``recursive`` lists all depths)."""
        bucket = bucket or self.default_bucket()
        listing = Listing(bucket=bucket, prefix=prefix)
        token = None
        while True:
            page = self.session.get(f"{DATA}/bucket/{bucket}/list", prefix=prefix, token=token,
                                    recursive="true" if recursive else None)
            listing.folders += page.get("folders", [])
            listing.objects += [DataObject.from_api(bucket, o) for o in page.get("objects", [])]
            listing.access = page.get("access", listing.access)
            token = page.get("next_token")
            if not token:
                return listing

    def upload(self, source: str | os.PathLike | bytes | IO[bytes], key: str, bucket: str | None = None,
               progress: ProgressSpec = True, overwrite: bool = True,
               content_type: str = "application/octet-stream") -> DataObject:
        """Upload a local file (a path), bytes, or an open binary file as ``key``; streamed in 1 MiB chunks.

        ``overwrite=False`` refuses (Conflict) when the key exists. Returns the stored object.
        """
        bucket = bucket or self.default_bucket()
        handle, length, close = _open_source(source)
        bar = make_bar(progress, length, f"upload {key}")

        def chunks() -> Iterator[bytes]:
            while True:
                block = handle.read(CHUNK)
                if not block:
                    return
                yield block
                bar.update(len(block))

        try:
            answer = self.session.call("POST", f"{DATA}/upload", params={
                "bucket": bucket, "key": key, "overwrite": "true" if overwrite else "false"},
                data=_SizedStream(chunks(), length), headers={"Content-Type": content_type}, retry=False)
        finally:
            bar.close()
            if close:
                handle.close()
        return DataObject(bucket=answer.get("bucket", bucket) if answer else bucket,
                          key=(answer or {}).get("key", key), size=int((answer or {}).get("size", length) or 0))

    def download(self, bucket: str | None, key: str, path: str | os.PathLike, progress: ProgressSpec = True) -> str:
        """Stream an object into a local file (written to ``path.part`` first, renamed when complete)."""
        bucket = bucket or self.default_bucket()
        target = Path(path)
        if target.is_dir():
            target = target / key.rsplit("/", 1)[-1]
        partial = target.with_name(target.name + ".part")
        response = self.session.request("GET", f"{DATA}/download", params={"bucket": bucket, "key": key},
                                        stream=True)
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = make_bar(progress, total, f"download {key}")
        try:
            with open(partial, "wb") as out:
                for block in response.iter_content(CHUNK):
                    out.write(block)
                    bar.update(len(block))
            os.replace(partial, target)
        finally:
            bar.close()
            response.close()
            partial.unlink(missing_ok=True)
        return str(target)

    def read(self, bucket: str | None, key: str, max_bytes: int | None = None, progress: ProgressSpec = False) -> bytes:
        """An object's bytes (for small objects; ``max_bytes`` reads only the first bytes)."""
        bucket = bucket or self.default_bucket()
        headers = {"Range": f"bytes=0-{max_bytes - 1}"} if max_bytes else None
        response = self.session.request("GET", f"{DATA}/download", params={"bucket": bucket, "key": key},
                                        headers=headers, stream=True)
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = make_bar(progress, total, f"read {key}")
        parts = []
        try:
            for block in response.iter_content(CHUNK):
                parts.append(block)
                bar.update(len(block))
        finally:
            bar.close()
            response.close()
        return b"".join(parts)

    def delete(self, key: str, bucket: str | None = None) -> dict:
        """Delete an object, or a folder and everything in it (``key`` ending with '/')."""
        bucket = bucket or self.default_bucket()
        return self.session.call("DELETE", f"{DATA}/bucket/{bucket}", params={"key": key})

    def mkdir(self, folder: str, bucket: str | None = None) -> dict:
        """Create a folder (an empty marker object ending with '/')."""
        bucket = bucket or self.default_bucket()
        return self.session.call("POST", f"{DATA}/bucket/{bucket}/",
                                 json={"folder": folder if folder.endswith("/") else folder + "/"})


def _open_source(source) -> tuple[IO[bytes], int, bool]:
    """(binary handle, length, whether we opened it) for a path, bytes or an open file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        import io

        data = bytes(source)
        return io.BytesIO(data), len(data), True
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return open(path, "rb"), path.stat().st_size, True
    position = source.tell()
    length = source.seek(0, os.SEEK_END) - position
    source.seek(position)
    return source, length, False
