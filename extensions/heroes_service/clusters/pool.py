"""Pooled SSH connections to a cluster's login node: the pinned host key, backoff, certificate expiry.

The transport layer under :class:`~.connector.ClusterConnector` (which callers use; they never hold a pool's
connection themselves). Connections live in a process-wide pool per (cluster, account, kind) and are shared by
every connector for that key. What this module guarantees:

* the host key is PINNED: the key the login node presents must be byte-identical to the one the
  administrator confirmed at enrollment, else ``HostKeyMismatch`` (no retry, no "accept new key");
* a connection failure is retried with exponential backoff, and only here, before any command started
  (the connector never re-sends a command whose ``exec`` was sent);
* connections authenticated with a short-lived certificate are retired when it expires, so a
  per-user session never outlives its certificate by more than one in-flight command.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import paramiko

from .config import ClustersSettings, get_clusters_settings
from .errors import AuthenticationFailed, ClusterUnreachable, HostKeyMismatch
from .warm import Spares

log = logging.getLogger("heroes_service.clusters")

#: host key algorithms to negotiate for a pinned key type (RSA keys sign with SHA-2 variants)
_HOSTKEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


# --- values ------------------------------------------------------------------------------------------
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
        self.spares = Spares(self.exec_if_connected, settings.warm_exec_idle_s)

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

    def exec_if_connected(self, command: str) -> paramiko.Channel | None:
        """A channel running ``command`` on a connection that is up already; None when none is (spares, and
        callers that must not wait for a connection, never connect)."""
        with self._cv:
            self._prune()
            now_wall = time.time()
            cap = self.settings.channels_per_connection
            ready = [c for c in self._conns if c.inflight < cap and c.usable(now_wall)]
            if not ready:
                return None
            conn = min(ready, key=lambda c: c.inflight)
            conn.inflight += 1
        try:
            channel = conn.transport.open_session(timeout=self.settings.connect_timeout_s)
        finally:
            self._release(conn)
        channel.exec_command(command)
        return channel

    def close(self) -> None:
        """Close every connection (commands in flight fail) and spare; the pool reconnects lazily when used
        again (its spares come back with the next call that takes one)."""
        spares, self.spares = self.spares, Spares(self.exec_if_connected, self.settings.warm_exec_idle_s)
        spares.close()
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
