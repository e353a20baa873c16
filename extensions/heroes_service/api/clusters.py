"""``/organization/admin/cluster/``: enroll, list, read, test and delete an organization's Slurm clusters.

Enrollment is two steps so that the administrator confirms the login node's host key:

1. ``POST /organization/admin/cluster/host-key`` with ``{host, port}`` answers the key and its
   ``SHA256:`` fingerprint (compare it with what the site publishes, e.g. ``ssh-keygen -lf``);
2. ``POST /organization/admin/cluster/`` with the same host/port and ``host_key_fingerprint``: the
   service connects, refuses a different key, probes Slurm and stores the cluster with the key pinned.

Secrets (a service account's private key) are write-only: encrypted at rest, never in a response or a log.
``GET /organization/cluster/`` lets any user of the organization see the clusters they can submit to.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from sqlalchemy.orm import Session

from ..auth import Principal, require_role
from ..clusters import identity, logins, probes, usage
from ..clusters.config import bind_state_dir, get_clusters_settings
from ..clusters.errors import ClusterError, NoClusterAccess, ProbeFailed
from ..clusters.models import Cluster, cluster_by_id, cluster_by_name, clusters_of
from ..clusters.service import EnrollmentError, Report, run_checks, scan_host_key
from ..errors import ApiError, Conflict, Invalid, NotFound
from ..identity import lifecycle
from ..store import get_session

log = logging.getLogger("heroes_service.clusters")


def _bind_identity(request: Request) -> None:
    """Cluster logins are read from Keycloak through the app's own identity client, and the secrets
    live below the app's own state dir (not wherever the process happened to start)."""
    logins.bind(request.app.state.identity)
    settings = getattr(request.app.state, "settings", None)
    if settings is not None and bind_state_dir(settings.state_dir):
        identity.forget_secrets()  # the vault and CA of another state dir must not be reused


router = APIRouter(tags=["clusters"], dependencies=[Depends(_bind_identity)])
logins.install_default()
# a deleted or disabled user's (or a deleted organization's) pooled SSH sessions and certificates end at once


def _organization_deleted(session: Session, org) -> None:
    identity.forget_organization(org.name)


def _organization_created(session: Session, org) -> None:
    identity.restore_organization(org.name)


lifecycle.register_user_removed(identity.forget_user, restored=identity.restore_user)
lifecycle.register_deleted(_organization_deleted)
lifecycle.register_created(_organization_created)

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"
NAME_RULE = "2-32 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'"
HOST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$"
WORK_DIR_PATTERN = r"^[A-Za-z0-9_./@+{}][A-Za-z0-9_./@+{}-]{0,399}$"
FINGERPRINT_PATTERN = r"^(SHA256:)?[A-Za-z0-9+/]{43}=?$"
org_admin = require_role("org-admin")
any_user = require_role("user")


# --- models ------------------------------------------------------------------------------------------
class PriceModel(BaseModel):
    """What a job costs (the decision module multiplies by the job's resources and run time).

    ``on-premises``: the per-hour rates below plus the job's energy at ``per_kwh`` (times the site's PUE).
    ``cloud``: one ``instance_type`` per node at the hourly price of a named ``catalog`` (decision/catalog.py),
    in ``region``; the currency is the catalog's.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["on-premises", "cloud"] = "on-premises"
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    per_core_hour: float = Field(0.0, ge=0, le=1e6)
    per_node_hour: float = Field(0.0, ge=0, le=1e6)
    per_gpu_hour: float = Field(0.0, ge=0, le=1e6)
    per_gb_memory_hour: float = Field(0.0, ge=0, le=1e6)
    per_kwh: float = Field(0.0, ge=0, le=1e6, description="Electricity price per kWh (on-premises).")
    instance_type: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                                      description="Cloud: the instance type of one node, as the catalog names it.")
    catalog: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
                         description="Cloud: price catalog name ('default' = the shipped one, or a .json file "
                                     "name in HEROES_SERVICE_DECISION_CATALOG_DIRS).")
    region: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$",
                               description="Cloud: catalog region (default: the catalog's).")

    @model_validator(mode="after")
    def _cloud_is_priced(self) -> "PriceModel":
        """A cloud model must name an instance type the catalog prices in the region; its currency is the
        catalog's (a different explicit currency is refused rather than silently mixed)."""
        if self.kind != "cloud":
            return self
        from ..decision import catalog as catalogs

        if not self.instance_type:
            raise ValueError("a cloud price model needs instance_type")
        try:
            found = catalogs.load(self.catalog)
            found.hourly_price(self.instance_type, self.region)
        except (catalogs.CatalogError, OSError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        if "currency" in self.model_fields_set and self.currency != found.currency:
            raise ValueError(f"catalog {self.catalog!r} is priced in {found.currency}, not {self.currency}")
        self.currency = found.currency
        return self


class EnergyProfile(BaseModel):
    """Power figures the decision module uses to predict a job's energy."""

    model_config = ConfigDict(extra="forbid")
    idle_watts_per_node: float = Field(0.0, ge=0, le=1e6)
    watts_per_core: float = Field(0.0, ge=0, le=1e6)
    watts_per_gpu: float = Field(0.0, ge=0, le=1e6)
    pue: float = Field(1.0, ge=1.0, le=10.0, description="Power usage effectiveness of the site.")
    carbon_g_per_kwh: float = Field(0.0, ge=0, le=1e4)
    nominal_cpu_freq_khz: int | None = Field(None, ge=400_000, le=6_000_000,
                                             description="Nominal CPU frequency (kHz) the --cpu-freq advice starts from.")
    cpu_freqs_khz: list[Annotated[int, Field(ge=400_000, le=6_000_000)]] | None = Field(None, max_length=64,
                                            description="Frequencies (kHz) jobs may ask for with --cpu-freq.")


class HostKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field(pattern=HOST_PATTERN, description="Login node host name or IP address.")
    port: int = Field(22, ge=1, le=65535)


class HostKeyOut(BaseModel):
    host: str
    port: int
    key_type: str
    fingerprint: str
    public_key: str


class ClusterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN, description=NAME_RULE)
    description: str = Field("", max_length=500)
    host: str = Field(pattern=HOST_PATTERN, description="Login node host name or IP address.")
    port: int = Field(22, ge=1, le=65535)
    host_key_fingerprint: str = Field(
        pattern=FINGERPRINT_PATTERN,
        description="The SHA256 fingerprint of the login node's host key, as confirmed by the administrator "
                    "(from POST /organization/admin/cluster/host-key or the site's documentation).")
    work_dir: str = Field(
        pattern=WORK_DIR_PATTERN,
        description="Where the gateway stages files; absolute, or relative to the account's home. '{login}' "
                    "is replaced by the cluster login (per-user mode), e.g. /scratch/{login}/heroes.")
    container_runtime: Literal["apptainer", "charliecloud", "none"] = "apptainer"
    identity_mode: Literal["per-user", "service-account"] = Field(
        "per-user", description="per-user: short-lived certificates from the gateway CA for each user's own "
                                "login; service-account: every user runs as service_login.")
    service_login: str = Field("heroes", pattern=logins.LOGIN_RE.pattern,
                               description="The gateway's account on the cluster (reconcilers). Never root, a system "
                                           "account (uid < 1000) or a jh-* gateway account.")
    service_private_key: SecretStr | None = Field(
        None, max_length=16384,
        description="Private key of service_login (OpenSSH/PEM, unencrypted). Write-only: encrypted at rest, "
                    "never returned. Required in service-account mode; optional otherwise (used by reconcilers).")
    partitions: list[str] | None = Field(None, max_length=64, description="Offer only these (default: all sinfo lists).")
    price_model: PriceModel = Field(default_factory=PriceModel)
    energy_profile: EnergyProfile = Field(default_factory=EnergyProfile)
    relative_speed: float = Field(1.0, gt=0, le=1000, description="Speed relative to a reference cluster (1.0).")

    @field_validator("work_dir")
    @classmethod
    def _work_dir(cls, value: str) -> str:
        parts = value.split("/")
        if ".." in parts:
            raise ValueError("work_dir may not contain '..'")
        if value.replace("{login}", "").count("{") or value.replace("{login}", "").count("}"):
            raise ValueError("the only placeholder allowed in work_dir is {login}")
        if "~" in value:
            raise ValueError("write work_dir relative to the home directory instead of using '~'")
        return value

    @field_validator("service_login")
    @classmethod
    def _service_login(cls, value: str) -> str:
        """Root, system (uid < 1000, no login shell) and jh-* accounts are never the gateway's account (an
        edit of the cluster is validated by this model too)."""
        reason = logins.refusal(value, service=True)
        if reason:
            raise ValueError(reason)
        return value

    @field_validator("partitions")
    @classmethod
    def _partitions(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not name or len(name) > 63 or not all(c.isalnum() or c in "_-." for c in name):
                raise ValueError("partition names are letters, digits, '_', '-' and '.'")
        return value


class PartitionOut(BaseModel):
    name: str
    default: bool
    available: bool
    time_limit: str
    nodes: int
    cpus_per_node: int
    memory_mb: int
    gres: str = ""


class ClusterSummary(BaseModel):
    """What a user of the organization sees (enough to choose a cluster)."""

    id: str
    name: str
    description: str
    container_runtime: str
    identity_mode: str
    slurm_version: str
    partitions: list[PartitionOut]
    default_partition: str
    price_model: dict
    energy_profile: dict
    relative_speed: float


class ClusterOut(ClusterSummary):
    """The full record for the organization's admins (never the private key)."""

    organization: str
    host: str
    port: int
    work_dir: str
    service_login: str
    has_service_key: bool
    host_key_type: str
    host_key_fingerprint: str
    slurm_cluster_name: str
    created_by: str
    created_at: datetime


class CheckOut(BaseModel):
    name: str
    ok: bool | None = Field(description="true: works; false: does not; null: skipped.")
    detail: str
    seconds: float


class TestOut(BaseModel):
    cluster: str
    login: str
    identity_mode: str
    ok: bool
    checks: list[CheckOut]


class CaOut(BaseModel):
    public_key: str = Field(description="Line for sshd's TrustedUserCAKeys file on the cluster.")
    fingerprint: str
    principal_attribute: str = Field(description="Keycloak user attribute holding a user's cluster login "
                                                 "(set by the platform admin only).")
    principal_format: str = Field("<username>@<organization>",
                                  description="The principal a user's certificate names: list it in the "
                                              "AuthorizedPrincipalsFile of the account that user may act as.")
    service_principal: str = Field(logins.SERVICE_PRINCIPAL,
                                   description="The principal of the gateway's own service certificates (list it "
                                               "for the service account only).")
    certificate_minutes: int


# --- helpers -----------------------------------------------------------------------------------------
class EnrollmentRefused(ApiError):
    """422 (or 409 for a host key that differs from the confirmed one) with the checks that ran."""

    def __init__(self, exc: EnrollmentError):
        super().__init__(str(exc), status=409 if exc.conflict else 422,
                         rule="the login node must present the confirmed host key and accept the credential; "
                              "sinfo must answer")
        self.report = exc.report

    def body(self) -> dict:
        out = super().body()
        if self.report is not None:
            out["checks"] = self.report.as_dict()["checks"]
        return out


def _summary(c: Cluster) -> dict:
    return dict(id=c.id, name=c.name, description=c.description, container_runtime=c.container_runtime,
                identity_mode=c.identity_mode, slurm_version=c.slurm_version, partitions=c.partitions or [],
                default_partition=c.default_partition, price_model=c.price_model or {},
                energy_profile=c.energy_profile or {}, relative_speed=c.relative_speed)


def _out(c: Cluster) -> ClusterOut:
    return ClusterOut(**_summary(c), organization=c.organization, host=c.host, port=c.port, work_dir=c.work_dir,
                      service_login=c.service_login, has_service_key=bool(c.service_key_enc),
                      host_key_type=c.host_key_type, host_key_fingerprint=c.host_key_fingerprint,
                      slurm_cluster_name=c.slurm_cluster_name, created_by=c.created_by, created_at=c.created_at)


def _probe_key(principal: Principal) -> str:
    return principal.organization or principal.username


def _take_probe(principal: Principal, settings) -> None:
    """429 while the organization has used up its failed probes of the last minute."""
    try:
        probes.PROBES.check(_probe_key(principal), settings.host_key_probes_per_minute)
    except probes.RateLimited as exc:
        raise ApiError(str(exc), status=429, rule="host-probe-rate") from None


def _own(session: Session, principal: Principal, cluster_id: str) -> Cluster:
    """The cluster if it belongs to the caller's organization; 404 otherwise (no existence leak)."""
    cluster = cluster_by_id(session, principal.organization, cluster_id)
    if cluster is None:
        raise NotFound(f"cluster {cluster_id!r} not found")
    return cluster


# --- routes ------------------------------------------------------------------------------------------
@router.get("/organization/cluster/", response_model=list[ClusterSummary],
            summary="Clusters of your organization you can submit to")
def list_for_users(principal: Principal = Depends(any_user), session: Session = Depends(get_session, scope="function")):
    if principal.organization is None:
        return []
    return [ClusterSummary(**_summary(c)) for c in clusters_of(session, principal.organization)]


@router.get("/organization/admin/cluster/", response_model=list[ClusterOut], summary="Your organization's clusters")
def list_clusters(principal: Principal = Depends(org_admin), session: Session = Depends(get_session, scope="function")):
    return [_out(c) for c in clusters_of(session, principal.organization)]


@router.post("/organization/admin/cluster/host-key", response_model=HostKeyOut,
             summary="Step 1 of enrollment: the host key a login node presents (confirm its fingerprint)")
def host_key(body: HostKeyRequest, principal: Principal = Depends(org_admin)):
    settings = get_clusters_settings()
    _take_probe(principal, settings)
    try:
        key = scan_host_key(body.host, body.port, settings.connect_timeout_s, settings)
    except ClusterError:  # counted against the probe budget; 422 in errors.py, saying no more than the message
        probes.PROBES.failed(_probe_key(principal))
        raise ProbeFailed(probes.unreachable_message(body.host, body.port)) from None
    return HostKeyOut(host=body.host, port=body.port, key_type=key.key_type, fingerprint=key.fingerprint,
                      public_key=key.line())


@router.get("/organization/admin/cluster/ca", response_model=CaOut,
            summary="The gateway's SSH user CA (install it in the cluster's TrustedUserCAKeys for per-user mode)")
def user_ca(principal: Principal = Depends(org_admin)):
    settings = get_clusters_settings()
    ca = identity.get_ca(settings)
    return CaOut(public_key=ca.public_key_line(), fingerprint=ca.fingerprint(),
                 principal_attribute=settings.default_cluster_login_attribute,
                 certificate_minutes=settings.cert_validity_minutes)


@router.post("/organization/admin/cluster/", response_model=ClusterOut, status_code=201,
             summary="Step 2 of enrollment: enroll a cluster (host key pinned, Slurm probed)")
def create_cluster(body: ClusterCreate, principal: Principal = Depends(org_admin),
                   session: Session = Depends(get_session, scope="function")):
    from ..clusters.service import enroll

    org = principal.organization
    if cluster_by_name(session, org, body.name) is not None:
        raise Conflict(f"cluster {body.name!r} already exists in your organization")
    key = body.service_private_key.get_secret_value() if body.service_private_key else None
    if body.identity_mode == identity.SERVICE_ACCOUNT and not key:
        raise Invalid("service-account mode needs service_private_key",
                      rule="identity_mode service-account requires a service_private_key")
    fields = body.model_dump(exclude={"service_private_key"})
    fields["price_model"] = body.price_model.model_dump()
    fields["energy_profile"] = body.energy_profile.model_dump()
    settings = get_clusters_settings()
    _take_probe(principal, settings)
    try:
        cluster, _report = enroll(fields, organization=org, created_by=principal.username,
                                  admin_login="", service_private_key=key, admin=None if key else principal,
                                  settings=settings)
    except EnrollmentError as exc:
        if exc.unreachable:
            probes.PROBES.failed(_probe_key(principal))
        log.warning("enrollment of cluster %s by %s refused: %s", body.name, principal.username, exc)
        raise EnrollmentRefused(exc) from None
    session.add(cluster)
    session.flush()  # a concurrent twin: IntegrityError -> 409 (errors.py), the transaction rolled back
    log.info("cluster %s enrolled for %s by %s (%s:%d, %s, host key %s)", cluster.name, org, principal.username,
             cluster.host, cluster.port, cluster.identity_mode, cluster.host_key_fingerprint)
    return _out(cluster)


@router.get("/organization/admin/cluster/{cluster_id}", response_model=ClusterOut, summary="One of your clusters")
def get_cluster(cluster_id: str, principal: Principal = Depends(org_admin), session: Session = Depends(get_session, scope="function")):
    return _out(_own(session, principal, cluster_id))


@router.delete("/organization/admin/cluster/{cluster_id}", status_code=204, summary="Remove a cluster")
def delete_cluster(cluster_id: str, principal: Principal = Depends(org_admin),
                   session: Session = Depends(get_session, scope="function")):
    cluster = _own(session, principal, cluster_id)
    live = usage.live_work(session, cluster)
    if live:
        shown = "; ".join(live[:10]) + (f"; and {len(live) - 10} more" if len(live) > 10 else "")
        raise Conflict(f"cluster {cluster.name!r} still runs work: {shown}. Cancel it first; removing the "
                       "cluster now would leave its jobs running with nobody to track them", rule="cluster-in-use")
    session.delete(cluster)
    session.flush()
    identity.forget_cluster(cluster_id)
    log.info("cluster %s of %s deleted by %s", cluster.name, cluster.organization, principal.username)
    return Response(status_code=204)


@router.post("/organization/admin/cluster/{cluster_id}/test", response_model=TestOut,
             summary="Test connection: host key, authentication, Slurm, partitions, work dir, SFTP, runtime")
def test_cluster(cluster_id: str, principal: Principal = Depends(org_admin), session: Session = Depends(get_session, scope="function")):
    cluster = _own(session, principal, cluster_id)
    acting_for = None
    if cluster.identity_mode == identity.SERVICE_ACCOUNT:
        login, mode = cluster.service_login, identity.SERVICE_ACCOUNT
    else:
        mode = identity.PER_USER
        try:
            login, acting_for = logins.login_for(cluster, principal, get_clusters_settings(), identity._login_resolver)
        except NoClusterAccess as exc:
            report = Report()
            report.skip("authentication", str(exc))
            return TestOut(cluster=cluster.name, login="", identity_mode=mode, ok=False,
                           checks=[CheckOut(**c) for c in report.as_dict()["checks"]])
    report = run_checks(cluster, login, mode, acting_for=acting_for if mode == identity.PER_USER else None)
    if cluster.service_key_enc and mode == identity.PER_USER:
        service = run_checks(cluster, cluster.service_login, identity.SERVICE_ACCOUNT)
        for check in service.checks:
            if check.name == "authentication":
                check.name = "service_account_authentication"
                report.checks.append(check)
    return TestOut(cluster=cluster.name, login=login, identity_mode=mode, ok=report.ok,
                   checks=[CheckOut(**c) for c in report.as_dict()["checks"]])
