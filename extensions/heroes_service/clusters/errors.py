"""Failures of cluster access, as exceptions callers can tell apart.

None of these messages ever contains key material: they name the cluster, the host, the login and
fingerprints (which are public), so they are safe to return to an administrator and to log.
"""
from __future__ import annotations


class ClusterError(Exception):
    """Base of every error raised by ``heroes_service.clusters``."""


class HostKeyMismatch(ClusterError):
    """The login node presented a host key other than the pinned one: refused, never retried."""

    def __init__(self, cluster: str, host: str, port: int, expected: str, got: str):
        self.cluster, self.host, self.port, self.expected, self.got = cluster, host, port, expected, got
        super().__init__(
            f"host key of cluster {cluster!r} ({host}:{port}) changed: pinned {expected}, the server presented "
            f"{got}. Connection refused. If the cluster's key was legitimately replaced, delete and re-enroll "
            f"the cluster and confirm the new fingerprint.")


class ClusterUnreachable(ClusterError):
    """TCP/SSH handshake failed (after retries with backoff) or the connection broke."""


class AuthenticationFailed(ClusterError):
    """The login node refused our credential (key not authorized, certificate untrusted or expired)."""


class CommandTimeout(ClusterError):
    """A remote command did not finish within its timeout; its channel was closed."""

    def __init__(self, command: str, timeout: float):
        self.command, self.timeout = command, timeout
        super().__init__(f"remote command did not finish within {timeout:g}s: {command[:200]}")


class CommandFailed(ClusterError):
    """A remote command exited non-zero where the caller required success (``CommandResult.check``)."""

    def __init__(self, command: str, rc: int, stderr: str):
        self.command, self.rc, self.stderr = command, rc, stderr
        tail = stderr.strip()[-500:]
        super().__init__(f"{command[:200]!s} exited {rc}: {tail}")


class InvalidArgument(ClusterError, ValueError):
    """An argv element that cannot cross SSH (not a string, or contains a NUL byte)."""


class NoClusterAccess(ClusterError, PermissionError):
    """The principal may not use this cluster (another organization, or no usable cluster login)."""


class ProbeFailed(ClusterError):
    """An address an admin gave (not yet an enrolled cluster) did not present an SSH host key. The message
    says no more than that (allowed, resolves, answers, speaks SSH): a probe must not map the network."""
