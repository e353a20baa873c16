"""Enrollment and "test connection": the domain logic behind ``/organization/admin/cluster/``.

No FastAPI here: functions take plain values and ORM objects and raise ``EnrollmentError`` (with the
report of what was checked) or return ``Check`` lists, so the routes stay thin and tests can drive the
logic directly.
"""
from __future__ import annotations

import io
import logging
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import paramiko

from . import embedded, identity, logins, probes
from .config import ClustersSettings, get_clusters_settings
from .connector import ClusterConnector, ConnectionPool, HostKey
from .errors import ClusterError, HostKeyMismatch, NoClusterAccess
from .models import Cluster
from .slurm import SlurmClient

log = logging.getLogger("heroes_service.clusters")

RUNTIME_PROBES: dict[str, list[str]] = {
    "charliecloud": ["ch-run", "--version"],
    "apptainer": ["apptainer", "--version"],
}


@dataclass
class Check:
    """One line of a connection report."""

    name: str
    ok: bool | None          # None: skipped (not applicable or an earlier step failed)
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def step(self, name: str, fn: Callable[[], Any], describe: Callable[[Any], str] = str) -> Any:
        """Run ``fn``; record ok + ``describe(result)`` or the failure's message (never a traceback)."""
        start = time.monotonic()
        try:
            value = fn()
        except (ClusterError, OSError, paramiko.SSHException, ValueError, EOFError) as exc:
            self.checks.append(Check(name, False, _message(exc), round(time.monotonic() - start, 3)))
            return None
        self.checks.append(Check(name, True, describe(value), round(time.monotonic() - start, 3)))
        return value

    def skip(self, name: str, why: str) -> None:
        self.checks.append(Check(name, None, why))


class EnrollmentError(ClusterError):
    """Enrollment refused; ``report`` says which checks failed."""

    def __init__(self, message: str, report: Report | None = None, *, conflict: bool = False,
                 unreachable: bool = False):
        super().__init__(message)
        self.report = report
        self.conflict = conflict
        self.unreachable = unreachable  # no host key could be read (counts against the probe rate limit)


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:500]


# --- host keys ---------------------------------------------------------------------------------------
def scan_host_key(host: str, port: int, timeout: float = 10.0, settings: ClustersSettings | None = None) -> HostKey:
    """The host key a login node presents (SSH handshake only, no authentication).

    Only to addresses ``probes`` allows, and every failure gives the same message (``probes.ProbeRefused``):
    an organization admin must not learn which ports of which hosts are open through it."""
    sock = probes.connect_checked(host, port, timeout, settings)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        return HostKey.from_pkey(transport.get_remote_server_key())
    except (paramiko.SSHException, OSError, EOFError):
        raise probes.ProbeRefused(probes.unreachable_message(host, port)) from None
    finally:
        transport.close()


def normalise_fingerprint(value: str) -> str:
    """Accept ``SHA256:abc`` or ``abc`` (with or without ``=`` padding) as ssh-keygen prints it."""
    value = value.strip()
    if value.upper().startswith("SHA256:"):
        value = value[7:]
    return "SHA256:" + value.rstrip("=")


# --- probes ------------------------------------------------------------------------------------------
def probe_connector(cluster: Cluster, login: str, mode: str, settings: ClustersSettings,
                    acting_for: str | None = None) -> ClusterConnector:
    """A connector on a private, throw-away pool (tests fresh connections; never reuses the shared pool).
    ``acting_for``: the gateway principal the certificate names (per-user mode)."""
    endpoint = identity.endpoint_of(cluster)
    if mode == identity.SERVICE_ACCOUNT:
        credential = identity.ServiceKeyCredential(login, cluster.service_key_enc or "", identity.get_vault(settings))
    else:
        if acting_for != logins.SERVICE_PRINCIPAL:
            logins.check_login(login, settings)
        credential = identity.CertificateCredential(cluster, login, identity.get_ca(settings), settings,
                                                    (acting_for,) if acting_for else None)
    probe_settings = settings.model_copy(update={"connect_attempts": 1, "max_connections": 1})
    return ClusterConnector(ConnectionPool(endpoint, credential, probe_settings))


def run_checks(cluster: Cluster, login: str, mode: str, *, settings: ClustersSettings | None = None,
               full: bool = True, acting_for: str | None = None) -> Report:
    """Everything a cluster must do for the gateway, as ``login`` in ``mode``, each step reported."""
    settings = settings or get_clusters_settings()
    report = Report()
    pinned = HostKey(cluster.host_key_type, cluster.host_key_b64)
    presented = report.step("host_key", lambda: scan_host_key(cluster.host, cluster.port, settings.connect_timeout_s,
                                                              settings),
                            lambda k: f"{k.key_type} {k.fingerprint}")
    if presented is None:
        for name in ("authentication", "slurm", "partitions", "work_dir", "sftp", "container_runtime"):
            report.skip(name, "login node unreachable")
        return report
    if presented.blob_b64 != pinned.blob_b64:
        report.checks[-1] = Check("host_key", False, str(HostKeyMismatch(cluster.name, cluster.host, cluster.port,
                                                                           pinned.fingerprint, presented.fingerprint)))
        for name in ("authentication", "slurm", "partitions", "work_dir", "sftp", "container_runtime"):
            report.skip(name, "refused: host key does not match the pinned one")
        return report
    report.checks[-1].detail += " (matches the pinned key)"
    conn = probe_connector(cluster, login, mode, settings, acting_for)
    try:
        who = report.step("authentication", lambda: conn.run(["id", "-un"], timeout=30).check().stdout.strip(),
                          lambda u: f"logged in as {u} ({'certificate' if mode == identity.PER_USER else 'service key'})")
        if who is not None:
            uid = conn.run(["id", "-u"], timeout=30).stdout.strip()
            report.facts["uid"] = int(uid) if uid.isdigit() else -1
        if who is None:
            for name in ("slurm", "partitions", "work_dir", "sftp", "container_runtime"):
                report.skip(name, "authentication failed")
            return report
        slurm = SlurmClient(conn, timeout=30)
        version = report.step("slurm", slurm.version, lambda v: f"Slurm {v}")
        report.facts["slurm_version"] = version or ""
        report.facts["slurm_cluster_name"] = (slurm.cluster_name() if version else "") or ""
        parts = report.step("partitions", slurm.partitions,
                            lambda ps: ", ".join(f"{p.name}{'*' if p.default else ''} ({p.nodes} nodes)" for p in ps)
                            or "none")
        report.facts["partitions"] = parts or []
        work_dir = cluster.work_dir_for(login)
        report.step("work_dir", lambda: conn.run(["mkdir", "-p", "--", work_dir], timeout=30).check()
                    and conn.run(["test", "-w", work_dir], timeout=30).check(),
                    lambda _r: f"{work_dir} exists and is writable")
        if full:
            report.step("sftp", lambda: _sftp_roundtrip(conn, work_dir), lambda n: f"wrote, read back and removed {n} bytes")
        probe = RUNTIME_PROBES.get(cluster.container_runtime)
        if probe is None:
            report.skip("container_runtime", "none configured")
        else:
            report.step("container_runtime", lambda: conn.run(probe, timeout=30).check(),
                        lambda r: (r.stdout or r.stderr).strip().splitlines()[0][:200] if (r.stdout or r.stderr).strip()
                        else f"{probe[0]} present")
    finally:
        conn.close()
    return report


def _sftp_roundtrip(conn: ClusterConnector, work_dir: str) -> int:
    payload = secrets.token_bytes(4096)
    path = f"{work_dir.rstrip('/')}/.heroes-probe-{secrets.token_hex(6)}"
    conn.put_stream(io.BytesIO(payload), path, timeout=30)
    try:
        with conn.get_stream(path, timeout=30) as fh:
            back = fh.read()
    finally:
        with conn.sftp(30) as sftp:
            sftp.remove(path)
    if back != payload:
        raise ClusterError("SFTP read back different bytes than written")
    return len(payload)


# --- enrollment --------------------------------------------------------------------------------------
def check_service_login(login: str, settings: ClustersSettings | None = None) -> None:
    """Enrollment refuses a service login that is root, a system account or a gateway (``jh-*``) account."""
    reason = logins.refusal(login, settings, service=True)
    if reason:
        raise EnrollmentError(f"service_login: {reason}")


def enroll(fields: dict, *, organization: str, created_by: str, admin_login: str,
           service_private_key: str | None, settings: ClustersSettings | None = None,
           admin: Any = None) -> tuple[Cluster, Report]:
    """Build a verified ``Cluster`` (not yet added to a session) or raise ``EnrollmentError``.

    Steps: the host key presented must match the fingerprint the admin confirmed; the service key (if
    any) is validated and encrypted; on an embedded login node the gateway CA is installed; then the
    cluster is probed (as the service account if a key was given, else as the admin by certificate)
    and its Slurm version, cluster name and partitions are recorded.
    """
    settings = settings or get_clusters_settings()
    host, port = fields["host"], int(fields["port"])
    check_service_login(fields.get("service_login") or "heroes", settings)
    try:
        presented = scan_host_key(host, port, settings.connect_timeout_s, settings)
    except ClusterError as exc:
        raise EnrollmentError(f"cannot reach the login node: {exc}", unreachable=True) from None
    confirmed = normalise_fingerprint(fields["host_key_fingerprint"])
    if presented.fingerprint != confirmed:
        raise EnrollmentError(f"the login node {host}:{port} presents host key {presented.fingerprint}, not the "
                              f"confirmed {confirmed}; nothing was enrolled", conflict=True)
    encrypted = None
    if service_private_key:
        try:
            identity.load_private_key(service_private_key)
        except ValueError as exc:
            raise EnrollmentError(f"service_private_key: {exc}") from None
        encrypted = identity.get_vault(settings).encrypt(service_private_key)
    cluster = Cluster(
        id=str(uuid.uuid4()), organization=organization, name=fields["name"],
        description=fields.get("description") or "", host=host, port=port, work_dir=fields["work_dir"],
        container_runtime=fields["container_runtime"], identity_mode=fields["identity_mode"],
        service_login=fields.get("service_login") or "heroes", service_key_enc=encrypted,
        host_key_type=presented.key_type, host_key_b64=presented.blob_b64, host_key_fingerprint=presented.fingerprint,
        price_model=fields.get("price_model") or {}, energy_profile=fields.get("energy_profile") or {},
        relative_speed=float(fields.get("relative_speed") or 1.0), created_by=created_by,
    )
    if cluster.identity_mode == identity.PER_USER and settings.install_embedded_ca:
        installed = embedded.install_ca_if_embedded(host, port, identity.get_ca(settings).public_key_line())
        if installed:
            log.info("cluster %s: gateway user CA trusted by the embedded login node (%s)", cluster.name, installed)
    acting_for = None
    if encrypted:
        login, mode = cluster.service_login, identity.SERVICE_ACCOUNT
    else:
        mode = identity.PER_USER
        login = admin_login
        if admin is not None:
            try:
                login, acting_for = logins.login_for(cluster, admin, settings, identity._login_resolver)
            except NoClusterAccess as exc:
                raise EnrollmentError(f"the enrolling admin has no usable login on this cluster: {exc}") from None
    report = run_checks(cluster, login, mode, settings=settings, full=False, acting_for=acting_for)
    essential = [c for c in report.checks if c.name in ("host_key", "authentication", "slurm", "partitions")]
    if any(c.ok is not True for c in essential):
        failed = "; ".join(f"{c.name}: {c.detail}" for c in essential if c.ok is not True)
        raise EnrollmentError(f"cluster {cluster.name!r} failed its enrollment checks ({failed})", report)
    if mode == identity.SERVICE_ACCOUNT and report.facts.get("uid", -1) < logins.FIRST_USER_UID:
        raise EnrollmentError(f"service_login {cluster.service_login!r} is a system account on the cluster "
                              f"(uid {report.facts.get('uid')}); enroll an unprivileged service account", report)
    found = report.facts["partitions"]
    wanted = fields.get("partitions")
    names = [p.name for p in found]
    if wanted:
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise EnrollmentError(f"partitions {unknown} do not exist on the cluster (sinfo lists {names})", report)
        found = [p for p in found if p.name in wanted]
    cluster.partitions = [p.as_dict() for p in found]
    default = next((p.name for p in found if p.default), found[0].name if found else "")
    cluster.default_partition = default
    cluster.slurm_version = report.facts["slurm_version"]
    cluster.slurm_cluster_name = report.facts["slurm_cluster_name"]
    return cluster, report
