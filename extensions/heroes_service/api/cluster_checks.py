"""What the Admin app's Clusters tab needs besides enrollment (api/clusters.py):

* ``POST .../{cluster_id}/readiness``: "test connection" with every check a workflow depends on (login,
  Slurm, partitions, work directory, SFTP, container runtime, ``sbatch``, accounting), each said in words;
* ``GET .../{cluster_id}/partitions``: the partitions ``sinfo`` lists now (to choose which to offer);
* ``PATCH .../{cluster_id}``: edit what an admin may change after enrollment (description, work dir,
  runtime, identity mode and service key, offered partitions, price model, energy profile, relative speed).
  The host, port and pinned host key never change here: a new login node is a new enrollment.

An edit is validated as a whole, by the enrollment model itself (``ClusterCreate``) applied to the record
with the changes merged in, so an edit can never store what enrollment would refuse.
"""
from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from sqlalchemy.orm import Session

from ..auth import Principal, require_role
from ..clusters import checks, identity
from ..clusters.errors import NoClusterAccess
from ..errors import Invalid
from ..store import get_session
from .clusters import (WORK_DIR_PATTERN, CheckOut, ClusterCreate, ClusterOut, EnergyProfile, PartitionOut, PriceModel,
                       TestOut, _bind_identity, _out, _own)

log = logging.getLogger("heroes_service.clusters")
router = APIRouter(tags=["clusters"], dependencies=[Depends(_bind_identity)])
org_admin = require_role("org-admin")


class ClusterEdit(BaseModel):
    """Fields to change (absent: unchanged). ``partitions: []`` offers every partition sinfo lists."""

    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=500)
    work_dir: str | None = Field(None, pattern=WORK_DIR_PATTERN)
    container_runtime: Literal["apptainer", "charliecloud", "none"] | None = None
    identity_mode: Literal["per-user", "service-account"] | None = None
    service_login: str | None = Field(None, pattern=identity.LOGIN_RE.pattern)
    service_private_key: SecretStr | None = Field(None, max_length=16384, description="Write-only.")
    partitions: list[str] | None = Field(None, max_length=64)
    price_model: PriceModel | None = None
    energy_profile: EnergyProfile | None = None
    relative_speed: float | None = Field(None, gt=0, le=1000)


def _as_enrolled(cluster) -> dict:
    """The record in the shape enrollment validates (the pinned fingerprint stands for the confirmed one)."""
    return dict(name=cluster.name, description=cluster.description, host=cluster.host, port=cluster.port,
                host_key_fingerprint=cluster.host_key_fingerprint, work_dir=cluster.work_dir,
                container_runtime=cluster.container_runtime, identity_mode=cluster.identity_mode,
                service_login=cluster.service_login, partitions=[p["name"] for p in cluster.partitions or []],
                price_model=cluster.price_model or {}, energy_profile=cluster.energy_profile or {},
                relative_speed=cluster.relative_speed)


def _validated(merged: dict) -> ClusterCreate:
    try:
        return ClusterCreate.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
        raise Invalid(f"the edit is refused: {problems}", rule="an edited cluster must pass enrollment's rules") \
            from None


def _offered(cluster, principal: Principal, wanted: list[str]) -> list[dict]:
    """The partitions to offer: ``wanted`` (all when empty) as sinfo lists them now; 422 for unknown ones.
    No cluster login for the admin (403) and a cluster that does not answer (503) are mapped in errors.py."""
    login, mode = checks.login_for(cluster, principal)
    found = checks.live_partitions(cluster, login, mode)
    names = [p.name for p in found]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise Invalid(f"partitions {unknown} do not exist on the cluster (sinfo lists {names})",
                      rule="offered partitions must exist")
    return [p.as_dict() for p in found if not wanted or p.name in wanted]


@router.post("/organization/admin/cluster/{cluster_id}/readiness", response_model=TestOut,
             summary="Test connection: login, Slurm, partitions, work dir, SFTP, container runtime, sbatch, accounting")
def readiness(cluster_id: str, principal: Principal = Depends(org_admin), session: Session = Depends(get_session, scope="function")):
    cluster = _own(session, principal, cluster_id)
    try:
        login, mode = checks.login_for(cluster, principal)
    except NoClusterAccess as exc:
        report = checks.Report()
        report.skip("authentication", str(exc))
        return TestOut(cluster=cluster.name, login="", identity_mode=cluster.identity_mode, ok=False,
                       checks=[CheckOut(**c) for c in report.as_dict()["checks"]])
    report = checks.readiness(cluster, login, mode)
    return TestOut(cluster=cluster.name, login=login, identity_mode=mode, ok=report.ok,
                   checks=[CheckOut(**c) for c in report.as_dict()["checks"]])


@router.get("/organization/admin/cluster/{cluster_id}/partitions", response_model=list[PartitionOut],
            summary="The partitions the cluster lists now (sinfo)")
def partitions(cluster_id: str, principal: Principal = Depends(org_admin), session: Session = Depends(get_session, scope="function")):
    cluster = _own(session, principal, cluster_id)
    return [PartitionOut(**p) for p in _offered(cluster, principal, [])]


@router.patch("/organization/admin/cluster/{cluster_id}", response_model=ClusterOut,
              summary="Edit a cluster (host and host key stay: a new login node is a new enrollment)")
def edit_cluster(cluster_id: str, body: ClusterEdit, principal: Principal = Depends(org_admin),
                 session: Session = Depends(get_session, scope="function")):
    cluster = _own(session, principal, cluster_id)
    changes = body.model_dump(exclude_unset=True, exclude={"service_private_key"})
    changes = {k: v for k, v in changes.items() if v is not None}
    checked = _validated(_as_enrolled(cluster) | changes)
    key = body.service_private_key.get_secret_value() if body.service_private_key else None
    if checked.identity_mode == identity.SERVICE_ACCOUNT and not (key or cluster.service_key_enc):
        raise Invalid("service-account mode needs service_private_key",
                      rule="identity_mode service-account requires a service_private_key")
    encrypted = None
    if key:
        try:
            identity.load_private_key(key)
        except ValueError as exc:
            raise Invalid(f"service_private_key: {exc}", rule="an unencrypted OpenSSH/PEM private key") from None
        encrypted = identity.get_vault().encrypt(key)
    offered = _offered(cluster, principal, checked.partitions or []) if "partitions" in changes else None
    for name in ("description", "work_dir", "container_runtime", "identity_mode", "service_login", "relative_speed"):
        setattr(cluster, name, getattr(checked, name))
    cluster.price_model = checked.price_model.model_dump()
    cluster.energy_profile = checked.energy_profile.model_dump()
    if encrypted:
        cluster.service_key_enc = encrypted
    if offered is not None:
        cluster.partitions = offered
        cluster.default_partition = next((p["name"] for p in offered if p["default"]),
                                         offered[0]["name"] if offered else "")
    session.commit()  # before answering: the admin's next read must see the edit (get_session commits later)
    identity.forget_cluster(cluster.id)  # pools and certificates built from the old settings go
    log.info("cluster %s of %s edited by %s: %s", cluster.name, cluster.organization, principal.username,
             ", ".join(sorted(set(changes) | ({"service_private_key"} if key else set()))) or "nothing")
    return _out(cluster)
