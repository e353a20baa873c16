"""SSH + SFTP to a cluster's login node: pinned host key, pooled connections, argv-only commands.

``ClusterConnector`` is the handle other capabilities use (workflows, spawner, decision). It is cheap:
connections live in a process-wide pool per (cluster, account) and are shared by every connector for
that pair. All calls are blocking and thread-safe; from asyncio call them through ``asyncio.to_thread``.

Rules this module enforces so callers cannot get them wrong:

* the host key is PINNED: the key the login node presents must be byte-identical to the one the
  administrator confirmed at enrollment, else ``HostKeyMismatch`` (no retry, no "accept new key");
* a command is an argv list; every element is ``shlex.quote``d and joined here. There is no API that
  takes a shell string, so a user value can never be interpreted by the remote shell;
* a connection failure is retried with exponential backoff only BEFORE a command started. Once
  ``exec`` was sent the command is never re-sent (``sbatch`` must not run twice): a broken channel
  then raises ``ClusterUnreachable`` and the caller decides (e.g. look the job up by name);
* connections authenticated with a short-lived certificate are retired when it expires, so a
  per-user session never outlives its certificate by more than one in-flight command.
"""
from __future__ import annotations

import base64
import hashlib
import io
import logging
import posixpath
import secrets
import select
import shlex
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Callable, Iterator, Protocol

import paramiko

from .config import ClustersSettings, get_clusters_settings
from .errors import (
    AuthenticationFailed,
    ClusterError,
    ClusterUnreachable,
    CommandFailed,
    CommandTimeout,
    HostKeyMismatch,
    InvalidArgument,
)

log = logging.getLogger("heroes_service.clusters")

#: chunk size of SFTP transfers (paramiko pipelines writes; 256 KiB keeps memory flat for any file size)
CHUNK = 256 * 1024
#: host key algorithms to negotiate for a pinned key type (RSA keys sign with SHA-2 variants)
_HOSTKEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


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


@dataclass(frozen=True)
class HostKey:
    """A pinned SSH host key: its type and the base64 of its wire blob (both public)."""

    key_type: str
    blob_b64: str

    @classmethod
    def from_pkey(cls, key: paramiko.PKey) -> "HostKey":
        return cls(key.get_name(), key.get_base64())

    @classmethod
    def parse(cls, text: str) -> "HostKey":
        """From ``"ssh-ed25519 AAAA..."`` (a ``.pub`` line or the key part of a known_hosts line)."""
        fields = text.split()
        if len(fields) >= 3 and not fields[0].startswith(("ssh-", "ecdsa-", "sk-")):
            fields = fields[1:]  # known_hosts line: drop the host pattern
        if len(fields) < 2:
            raise ValueError("a host key is '<type> <base64>'")
        base64.b64decode(fields[1], validate=True)
        return cls(fields[0], fields[1])

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` exactly as ``ssh-keygen -l`` and ``ssh`` print it."""
        digest = hashlib.sha256(base64.b64decode(self.blob_b64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def line(self) -> str:
        return f"{self.key_type} {self.blob_b64}"


@dataclass(frozen=True)
class Endpoint:
    """Where a cluster's login node is and which host key it must present."""

    cluster: str          # the cluster's name (messages, logs, pool key)
    host: str
    port: int
    host_key: HostKey


class Credential(Protocol):
    """How an account authenticates. ``current()`` returns the key to offer and when it stops working."""

    login: str
    kind: str  # "service-key" | "user-certificate"

    def current(self) -> tuple[paramiko.PKey, float | None]:
        ...


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


# --- the pool ----------------------------------------------------------------------------------------
class _Conn:
    """One authenticated SSH transport and how many channels use it right now."""

    def __init__(self, transport: paramiko.Transport, expires_at: float | None):
        self.transport = transport
        self.expires_at = expires_at
        self.inflight = 0
        self.last_used = time.monotonic()
        self.broken = False

    def usable(self, now_wall: float) -> bool:
        if self.broken or not self.transport.is_active():
            return False
        # a certificate-authenticated session retires at its certificate's end (5 s early)
        return self.expires_at is None or self.expires_at - 5 > now_wall

    def close(self) -> None:
        try:
            self.transport.close()
        except Exception:  # noqa: BLE001 - closing a dead transport may raise anything; it is gone either way
            pass


class ConnectionPool:
    """Up to ``max_connections`` transports for one (endpoint, account), with backoff on failures."""

    def __init__(self, endpoint: Endpoint, credential: Credential, settings: ClustersSettings):
        self.endpoint = endpoint
        self.credential = credential
        self.settings = settings
        self._conns: list[_Conn] = []
        self._connecting = 0
        self._cv = threading.Condition()
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: str = ""
        self.connects = 0  # total successful connections (tests and benchmarks read it)

    # -- acquiring a transport
    @contextmanager
    def lease(self, deadline: float) -> Iterator[_Conn]:
        conn = self._acquire(deadline)
        try:
            yield conn
        finally:
            self._release(conn)

    def _acquire(self, deadline: float) -> _Conn:
        cap = self.settings.channels_per_connection
        while True:
            with self._cv:
                self._prune()
                ready = [c for c in self._conns if c.inflight < cap]
                if ready:
                    conn = min(ready, key=lambda c: c.inflight)
                    conn.inflight += 1
                    conn.last_used = time.monotonic()
                    return conn
                if len(self._conns) + self._connecting < self.settings.max_connections:
                    self._connecting += 1
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise ClusterUnreachable(
                            f"cluster {self.endpoint.cluster!r}: all {self.settings.max_connections} connections "
                            f"for {self.credential.login!r} are busy")
                    self._cv.wait(min(remaining, 1.0))
                    continue
            try:
                conn = self._connect_with_backoff(deadline)
            except BaseException:
                with self._cv:
                    self._connecting -= 1
                    self._cv.notify_all()
                raise
            with self._cv:
                self._connecting -= 1
                conn.inflight = 1
                self._conns.append(conn)
                self._cv.notify_all()
                return conn

    def _release(self, conn: _Conn) -> None:
        with self._cv:
            conn.inflight -= 1
            conn.last_used = time.monotonic()
            if conn.inflight <= 0 and not conn.usable(time.time()):
                self._drop(conn)
            self._cv.notify_all()

    def _prune(self) -> None:
        """Drop dead, expired (once idle) and long-idle connections. Caller holds the lock."""
        now_wall, now = time.time(), time.monotonic()
        for conn in list(self._conns):
            idle_too_long = conn.inflight == 0 and now - conn.last_used > self.settings.idle_close_s
            if (not conn.usable(now_wall) and conn.inflight == 0) or idle_too_long:
                self._drop(conn)
            elif not conn.usable(now_wall):
                conn.broken = True  # still in use: finish, then drop at release

    def _drop(self, conn: _Conn) -> None:
        if conn in self._conns:
            self._conns.remove(conn)
        conn.close()

    def mark_broken(self, conn: _Conn) -> None:
        with self._cv:
            conn.broken = True

    # -- connecting
    def _connect_with_backoff(self, deadline: float) -> _Conn:
        attempts = 0
        while True:
            with self._cv:
                wait = self._retry_at - time.monotonic()
            if wait > 0:
                if time.monotonic() + wait > deadline:
                    raise ClusterUnreachable(
                        f"cluster {self.endpoint.cluster!r} ({self.endpoint.host}:{self.endpoint.port}) is "
                        f"unreachable, next attempt in {wait:.1f}s: {self._last_error}")
                time.sleep(wait)
            attempts += 1
            try:
                conn = self._open()
            except (HostKeyMismatch, AuthenticationFailed):
                raise  # not a network hiccup: retrying cannot help and must not hammer the node
            except ClusterUnreachable as exc:
                with self._cv:
                    self._failures += 1
                    delay = min(self.settings.backoff_max_s,
                                self.settings.backoff_base_s * 2 ** (self._failures - 1))
                    self._retry_at = time.monotonic() + delay
                    self._last_error = str(exc)
                log.warning("cluster %s: connection attempt %d failed (%s); next in %.1fs",
                            self.endpoint.cluster, attempts, exc, delay)
                if attempts >= self.settings.connect_attempts or time.monotonic() + delay > deadline:
                    raise
                continue
            with self._cv:
                self._failures = 0
                self._retry_at = 0.0
                self.connects += 1
            return conn

    def _open(self) -> _Conn:
        """TCP, SSH handshake, pinned host key check, public-key/certificate authentication."""
        ep, timeout = self.endpoint, self.settings.connect_timeout_s
        # the credential first: a revoked user (NoClusterAccess) must fail here, not look like a network error
        pkey, expires_at = self.credential.current()
        try:
            sock = socket.create_connection((ep.host, ep.port), timeout=timeout)
        except OSError as exc:
            raise ClusterUnreachable(f"cluster {ep.cluster!r}: no TCP connection to {ep.host}:{ep.port}: {exc}") \
                from exc
        # small request/response packets: without NODELAY, Nagle + delayed ACK add ~40 ms per channel open
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        transport.auth_timeout = timeout
        wanted = _HOSTKEY_ALGORITHMS.get(ep.host_key.key_type, (ep.host_key.key_type,))
        options = transport.get_security_options()
        offered = [k for k in options.key_types if k in wanted]
        if offered:
            options.key_types = offered  # negotiate the pinned key's type, not another one the node has
        try:
            transport.start_client(timeout=timeout)
            presented = HostKey.from_pkey(transport.get_remote_server_key())
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise ClusterUnreachable(f"cluster {ep.cluster!r}: SSH handshake with {ep.host}:{ep.port} failed: "
                                     f"{exc or type(exc).__name__}") from exc
        if presented.blob_b64 != ep.host_key.blob_b64:
            transport.close()
            log.error("cluster %s: host key mismatch at %s:%d (pinned %s, presented %s); refused",
                      ep.cluster, ep.host, ep.port, ep.host_key.fingerprint, presented.fingerprint)
            raise HostKeyMismatch(ep.cluster, ep.host, ep.port, ep.host_key.fingerprint, presented.fingerprint)
        try:
            transport.auth_publickey(self.credential.login, pkey)
        except paramiko.AuthenticationException as exc:
            transport.close()
            raise AuthenticationFailed(
                f"cluster {ep.cluster!r} refused {self.credential.kind} authentication as "
                f"{self.credential.login!r}: {exc}") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise ClusterUnreachable(f"cluster {ep.cluster!r}: connection lost during authentication: {exc}") \
                from exc
        if self.settings.keepalive_s:
            transport.set_keepalive(self.settings.keepalive_s)
        log.info("cluster %s: connected to %s:%d as %s (%s)", ep.cluster, ep.host, ep.port,
                 self.credential.login, self.credential.kind)
        return _Conn(transport, expires_at)

    def close(self) -> None:
        """Close every connection (commands in flight fail); the pool reconnects lazily when used again."""
        with self._cv:
            for conn in list(self._conns):
                self._drop(conn)
            self._cv.notify_all()

    def stats(self) -> dict:
        with self._cv:
            return {"connections": len(self._conns), "inflight": sum(c.inflight for c in self._conns),
                    "connects": self.connects, "failures": self._failures}


# --- process-wide registry of pools ------------------------------------------------------------------
_POOLS: dict[tuple, ConnectionPool] = {}
_POOLS_LOCK = threading.Lock()


def pool_for(endpoint: Endpoint, credential: Credential, key: tuple,
             settings: ClustersSettings | None = None) -> ConnectionPool:
    """The shared pool for ``key`` (cluster id, account, kind); a changed endpoint or credential
    (re-pinned host key, new CA, new service key) replaces it."""
    settings = settings or get_clusters_settings()
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        same_credential = pool is not None and \
            getattr(pool.credential, "identity", pool.credential) == getattr(credential, "identity", credential)
        if pool is not None and pool.endpoint == endpoint and same_credential:
            return pool
        if pool is not None:
            pool.close()
        pool = ConnectionPool(endpoint, credential, settings)
        _POOLS[key] = pool
        return pool


def close_pools(match: Callable[[tuple], bool] | None = None,
                where: Callable[[tuple, ConnectionPool], bool] | None = None) -> int:
    """Close and forget pools (all, or those whose key ``match``es, e.g. one deleted cluster's, or for which
    ``where(key, pool)`` holds, e.g. a deleted user's certificates)."""
    with _POOLS_LOCK:
        keys = [k for k, pool in _POOLS.items()
                if (match is None and where is None) or (match is not None and match(k))
                or (where is not None and where(k, pool))]
        pools = [_POOLS.pop(k) for k in keys]
    for pool in pools:
        pool.close()
    return len(pools)


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
        out, err = bytearray(), bytearray()
        truncated = False
        writer = None
        if stdin is None:
            channel.shutdown_write()
        else:
            writer = threading.Thread(target=_feed_stdin, args=(channel, stdin.encode()), daemon=True)
            writer.start()
        fd = channel.fileno()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeout(command, timeout)
            got = False
            while channel.recv_ready():
                chunk = channel.recv(CHUNK)
                got = True
                if len(out) < limit:
                    out += chunk
                else:
                    truncated = True
            while channel.recv_stderr_ready():
                chunk = channel.recv_stderr(CHUNK)
                got = True
                if len(err) < limit:
                    err += chunk
                else:
                    truncated = True
            if channel.eof_received and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
            if channel.closed:
                break
            if not got:
                select.select([fd], [], [], min(remaining, 1.0))
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
