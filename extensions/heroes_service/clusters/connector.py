"""SSH + SFTP to a cluster's login node: argv-only commands and file transfers over pooled connections.

``ClusterConnector`` is the handle other capabilities use (workflows, cluster jobs, decision). It is cheap:
connections live in a process-wide pool per (cluster, account) (``pool.py``: pinned host key, backoff,
certificate expiry) and are shared by every connector for that pair. All calls are blocking and thread-safe;
from asyncio call them through ``asyncio.to_thread``.

Rules this module enforces so callers cannot get them wrong:

* a command is an argv list; every element is ``shlex.quote``d and joined here. There is no API that
  takes a shell string, so a user value can never be interpreted by the remote shell;
* once ``exec`` was sent the command is never re-sent (``sbatch`` must not run twice): a broken channel
  then raises ``ClusterUnreachable`` and the caller decides (e.g. look the job up by name); reconnecting
  with backoff happens only before a command started (``pool.py``);
* the host key is pinned and checked on every connection (``pool.py``), so no command reaches a node
  that is not the one the administrator confirmed.
"""
from __future__ import annotations

import io
import posixpath
import secrets
import select
import shlex
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Callable, Iterator

import paramiko

from .errors import ClusterError, ClusterUnreachable, CommandFailed, CommandTimeout, InvalidArgument
from .pool import ConnectionPool, Credential, Endpoint, HostKey, close_pools, pool_for

#: chunk size of SFTP transfers (paramiko pipelines writes; 256 KiB keeps memory flat for any file size)
CHUNK = 256 * 1024


# --- values ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CommandResult:
    """What a remote command produced. ``rc`` is its exit status (-1 when the server sent none)."""

    rc: int
    stdout: str
    stderr: str
    truncated: bool = False
    command: str = field(default="", repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def check(self) -> "CommandResult":
        """Return self, or raise ``CommandFailed`` (with stderr's tail) when ``rc != 0``."""
        if self.rc != 0:
            raise CommandFailed(self.command, self.rc, self.stderr or self.stdout)
        return self


def build_command(argv: list[str] | tuple[str, ...]) -> str:
    """The one way a command line is made: every element ``shlex.quote``d, joined with spaces."""
    if isinstance(argv, (str, bytes)) or not argv:
        raise InvalidArgument("argv must be a non-empty list of strings, never a shell string")
    for item in argv:
        if not isinstance(item, str):
            raise InvalidArgument(f"argv elements must be str, got {type(item).__name__}")
        if "\x00" in item:
            raise InvalidArgument("argv elements cannot contain NUL bytes")
    return " ".join(shlex.quote(item) for item in argv)


def read_output(channel: paramiko.Channel, command: str, deadline: float, timeout: float, limit: int,
                until: Callable[[bytes], bool] | None = None) -> tuple[bytes, bytes, bool]:
    """A command's standard output and error as they come, until its output ends - or, with ``until``, as soon
    as ``until(output so far)`` holds (a caller that needs only a first line). Bytes past ``limit`` of each
    are dropped (the third value says so); ``CommandTimeout`` at ``deadline``."""
    out, err = bytearray(), bytearray()
    truncated = False
    fd = channel.fileno()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommandTimeout(command, timeout)
        got_out, cut_out = _drain(channel.recv_ready, channel.recv, out, limit)
        got_err, cut_err = _drain(channel.recv_stderr_ready, channel.recv_stderr, err, limit)
        got, truncated = got_out or got_err, truncated or cut_out or cut_err
        if until is not None and until(bytes(out)):
            break
        if channel.eof_received and not channel.recv_ready() and not channel.recv_stderr_ready():
            break
        if channel.closed:
            break
        if not got:
            select.select([fd], [], [], min(remaining, 1.0))
    return bytes(out), bytes(err), truncated


def _drain(ready: Callable[[], bool], recv: Callable[[int], bytes], into: bytearray, limit: int) -> tuple[bool, bool]:
    """What one stream has ready, appended up to ``limit``: (anything came, something was dropped)."""
    got = cut = False
    while ready():
        chunk = recv(CHUNK)
        got = True
        if len(into) < limit:
            into += chunk
        else:
            cut = True
    return got, cut


# --- the connector -----------------------------------------------------------------------------------
class RemoteFile(io.RawIOBase):
    """A readable remote file (``get_stream``); closing it frees its SFTP channel and pool slot."""

    def __init__(self, sftp_file: paramiko.SFTPFile, on_close: Callable[[], None]):
        super().__init__()
        self._file = sftp_file
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._file.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return self._file.read(None if size is None or size < 0 else size)

    def close(self) -> None:
        if not self.closed:
            try:
                self._file.close()
            finally:
                self._on_close()
        super().close()


class ClusterConnector:
    """Run commands and move files on one cluster as one account. Blocking and thread-safe."""

    def __init__(self, pool: ConnectionPool):
        self._pool = pool

    @property
    def cluster(self) -> str:
        return self._pool.endpoint.cluster

    @property
    def login(self) -> str:
        """The Unix account commands run as on the cluster."""
        return self._pool.credential.login

    @property
    def credential_kind(self) -> str:
        return self._pool.credential.kind

    def stats(self) -> dict:
        return self._pool.stats()

    # -- commands
    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float = 60) -> CommandResult:
        """Run ``argv`` (each element shell-quoted) in the login shell of the account; wait for it.

        ``stdin`` (text) is written to the command's standard input, then closed. ``timeout`` bounds the
        whole call (connecting included). Raises ``CommandTimeout``, ``ClusterUnreachable``,
        ``HostKeyMismatch``, ``AuthenticationFailed``; a non-zero exit is NOT an exception (``.check()``).
        """
        command = build_command(argv)
        deadline = time.monotonic() + timeout
        with self._channel(deadline) as channel:
            channel.exec_command(command)
            return self._collect(channel, command, stdin, deadline, timeout)

    def open_exec(self, argv: list[str], *, timeout: float = 20) -> paramiko.Channel:
        """Start ``argv`` (quoted like ``run``) and hand back its live channel; the caller closes it.

        For long-lived byte streams (the spawner's relay to a compute node): the pooled connection is only
        leased while the channel opens, so one stream never holds a pool slot.
        """
        command = build_command(argv)
        deadline = time.monotonic() + timeout
        with self._pool.lease(deadline) as conn:
            try:
                channel = conn.transport.open_session(timeout=max(1.0, deadline - time.monotonic()))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._pool.mark_broken(conn)
                raise ClusterUnreachable(f"cluster {self.cluster!r}: cannot open a channel: {exc}") from exc
        channel.exec_command(command)
        return channel

    def open_started(self, argv: list[str], written: bytes = b"", *, timeout: float = 20,
                     connect: bool = True) -> paramiko.Channel:
        """``open_exec`` with ``written`` already sent to the command's input, served from a spare started
        ahead of need when one is ready (``warm.Spares``; the next one starts once this channel closes). For a fixed
        command that does nothing until the rest of its input arrives; the caller closes the channel.
        ``connect=False``: only on a connection that is up already (``ClusterUnreachable`` at once otherwise),
        for callers that must not wait for a login node (inside a transaction, before answering a request)."""
        command = build_command(argv)
        spares = self._pool.spares
        channel = spares.take(command, written)
        if channel is None:
            channel = self._fresh_started(argv, command, written, timeout, connect)
        spares.refill_after(command, written, channel)
        return channel

    def _fresh_started(self, argv: list[str], command: str, written: bytes, timeout: float,
                       connect: bool) -> paramiko.Channel:
        try:
            channel = self._pool.exec_if_connected(command) if not connect else None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ClusterUnreachable(f"cluster {self.cluster!r}: cannot open a channel: {exc}") from exc
        if channel is None and not connect:
            raise ClusterUnreachable(f"cluster {self.cluster!r}: no connection is up (not connecting here)")
        if channel is None:
            channel = self.open_exec(argv, timeout=timeout)
        if written:
            try:
                channel.sendall(written)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                channel.close()
                raise ClusterUnreachable(f"cluster {self.cluster!r}: cannot write to {argv[0]}: {exc}") from exc
        return channel

    @contextmanager
    def _channel(self, deadline: float) -> Iterator[paramiko.Channel]:
        """A fresh session channel; a failure to OPEN it (stale transport) reconnects once."""
        for attempt in (1, 2):
            with self._pool.lease(deadline) as conn:
                try:
                    channel = conn.transport.open_session(timeout=max(1.0, deadline - time.monotonic()))
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    self._pool.mark_broken(conn)
                    if attempt == 2:
                        raise ClusterUnreachable(f"cluster {self.cluster!r}: cannot open a channel: {exc}") from exc
                    continue
                try:
                    yield channel
                except CommandTimeout:
                    # a silent peer (network partition) looks like a slow command: retire this transport
                    # so the next call reconnects instead of hanging on it too; in-flight work finishes
                    self._pool.mark_broken(conn)
                    raise
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    self._pool.mark_broken(conn)
                    raise ClusterUnreachable(
                        f"cluster {self.cluster!r}: connection lost while a command ran: {exc}") from exc
                finally:
                    channel.close()
                return

    def _collect(self, channel: paramiko.Channel, command: str, stdin: str | None, deadline: float,
                 timeout: float) -> CommandResult:
        limit = self._pool.settings.max_output_bytes
        writer = None
        if stdin is None:
            channel.shutdown_write()
        else:
            writer = threading.Thread(target=_feed_stdin, args=(channel, stdin.encode()), daemon=True)
            writer.start()
        out, err, truncated = read_output(channel, command, deadline, timeout, limit)
        if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
            raise CommandTimeout(command, timeout)
        if writer is not None:
            writer.join(timeout=1)
        rc = channel.exit_status
        return CommandResult(rc=rc, stdout=out[:limit].decode(errors="replace"),
                             stderr=err[:limit].decode(errors="replace"), truncated=truncated, command=command)

    # -- files
    @contextmanager
    def sftp(self, timeout: float = 60) -> Iterator[paramiko.SFTPClient]:
        """A raw SFTP session on a pooled connection, for listing/stat/remove (closed on exit)."""
        deadline = time.monotonic() + timeout
        with self._pool.lease(deadline) as conn:
            try:
                client = paramiko.SFTPClient.from_transport(conn.transport)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._pool.mark_broken(conn)
                raise ClusterUnreachable(f"cluster {self.cluster!r}: cannot start SFTP: {exc}") from exc
            if client is None:
                raise ClusterUnreachable(f"cluster {self.cluster!r}: SFTP subsystem refused")
            client.get_channel().settimeout(timeout)
            try:
                yield client
            except (paramiko.SSHException, EOFError, socket.timeout) as exc:
                self._pool.mark_broken(conn)
                raise ClusterUnreachable(f"cluster {self.cluster!r}: SFTP failed: {exc}") from exc
            finally:
                client.close()

    def put_stream(self, fileobj: IO[bytes], remote_path: str, *, mode: int | None = None,
                   timeout: float = 600) -> int:
        """Stream ``fileobj`` (binary, read in chunks) to ``remote_path``; return the bytes written.

        Written to a hidden temporary name next to the target and renamed into place at the end, so a
        reader never sees half a file and an interrupted upload leaves no file under the final name.
        The parent directory must exist (``run(["mkdir", "-p", dir])``). ``mode``: chmod after upload.
        """
        directory, name = posixpath.split(remote_path)
        partial = posixpath.join(directory, f".{name}.heroes-part-{secrets.token_hex(4)}")
        written = 0
        with self.sftp(timeout) as sftp:
            try:
                with sftp.open(partial, "wb") as remote:
                    remote.set_pipelined(True)
                    while True:
                        chunk = fileobj.read(CHUNK)
                        if not chunk:
                            break
                        if isinstance(chunk, str):
                            chunk = chunk.encode()
                        remote.write(chunk)
                        written += len(chunk)
                if mode is not None:
                    sftp.chmod(partial, mode)
                sftp.posix_rename(partial, remote_path)
            except BaseException:
                try:
                    sftp.remove(partial)
                except Exception:  # noqa: BLE001 - best effort cleanup of the partial file
                    pass
                raise
        return written

    def get_stream(self, remote_path: str, *, timeout: float = 600) -> RemoteFile:
        """Open ``remote_path`` for streaming reads. Close it (or use ``with``): it holds a channel."""
        deadline = time.monotonic() + timeout
        lease = self._pool.lease(deadline)
        conn = lease.__enter__()
        try:
            client = paramiko.SFTPClient.from_transport(conn.transport)
            if client is None:
                raise ClusterUnreachable(f"cluster {self.cluster!r}: SFTP subsystem refused")
            client.get_channel().settimeout(timeout)
            try:
                handle = client.open(remote_path, "rb")
                handle.prefetch()
            except BaseException:
                client.close()
                raise
        except (paramiko.SSHException, EOFError) as exc:
            self._pool.mark_broken(conn)
            lease.__exit__(None, None, None)
            raise ClusterUnreachable(f"cluster {self.cluster!r}: SFTP failed: {exc}") from exc
        except BaseException:
            lease.__exit__(None, None, None)
            raise

        def _done() -> None:
            client.close()
            lease.__exit__(None, None, None)

        return RemoteFile(handle, _done)

    def close(self) -> None:
        """Close the shared pool's connections for this (cluster, account); they reopen lazily.

        Not needed after each call (that would defeat pooling): call it when the cluster is deleted or
        the process shuts down (``close_pools()`` closes all).
        """
        self._pool.close()

    def __enter__(self) -> "ClusterConnector":
        return self

    def __exit__(self, *exc) -> None:
        # why no close here: `with connector_for(...) as c:` must not tear down a shared pool
        return None


def _feed_stdin(channel: paramiko.Channel, data: bytes) -> None:
    """Write stdin in a thread, so a command that writes a lot before reading cannot deadlock us."""
    try:
        channel.sendall(data)
        channel.shutdown_write()
    except (OSError, paramiko.SSHException, EOFError):
        pass  # the command exited without reading all of it; its exit status tells the story


__all__ = [
    "ClusterConnector", "CommandResult", "ConnectionPool", "Credential", "Endpoint", "HostKey", "RemoteFile",
    "build_command", "close_pools", "pool_for", "ClusterError",
]
