"""Data where the compute is: the time to move a job's data to and from each candidate cluster.

A candidate's finish includes staging: the inputs' bytes (the user's S3 objects, sized when ``decide`` is
asked) over that cluster's S3 -> cluster throughput, plus the expected outputs back (the mean output bytes of
the template's earlier completed instances) at the same throughput. The throughput is the gateway's own
measure: bytes over seconds of the organization's latest stage-ins to that cluster of at least
``staging_min_measured_bytes`` (smaller ones time the SSH round trips, not the link), recorded by the
workflow driver (``workflows/staging.py``); until there is one, ``staging_default_mib_s``.

An input whose content (bucket, key and S3 ETag) an earlier instance already staged to that cluster is not
moved again (the driver copies it from that instance's working directory on the cluster): it costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..workflows import models as wf
from ..workflows.staging import StagingTransfer, same_content, transfers_of

MIB = 1024.0 ** 2


class StagingTimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEROES_SERVICE_DECISION_", extra="ignore")

    staging_default_mib_s: float = Field(100.0, gt=0, description="S3 -> cluster throughput (MiB/s) assumed for a "
                                                                  "cluster until the gateway has measured one.")
    staging_min_measured_bytes: int = Field(1024 ** 2, ge=0, description="Smallest stage-in that counts as a "
                                                                         "throughput measure (bytes).")
    staging_history: int = Field(20, ge=1, le=1000, description="Latest stage-ins per cluster the measure uses.")


@lru_cache
def get_staging_settings() -> StagingTimeSettings:
    return StagingTimeSettings()


@dataclass(frozen=True)
class InputObject:
    """One input of the job: where it is in S3 and what it is (size, content hash)."""

    bucket: str
    key: str
    size: int
    etag: str


@dataclass
class StagingEstimate:
    """Staging time on one cluster and how it was reckoned."""

    seconds: float
    in_bytes: int                 # bytes that must move (inputs not already there)
    out_bytes: float              # expected output bytes
    throughput_mib_s: float
    measured: bool                # throughput from the gateway's own stage-ins (else the default)
    already_there: list[str] = field(default_factory=list)   # keys already on the cluster

    def as_row(self) -> dict:
        return {"staging_s": round(self.seconds, 1), "staging_in_bytes": int(self.in_bytes),
                "staging_out_bytes": int(round(self.out_bytes)),
                "staging_throughput_mib_s": float(f"{self.throughput_mib_s:.4g}"),
                "staging_throughput_measured": self.measured, "inputs_already_there": list(self.already_there)}


def throughput(transfers: list[StagingTransfer], settings: StagingTimeSettings) -> tuple[float, bool]:
    """(bytes per second, measured?) from a cluster's latest stage-ins."""
    big = [t for t in transfers if t.bytes >= settings.staging_min_measured_bytes and t.seconds > 0
           and not t.copied_from]   # a copy on the cluster says nothing of the S3 link
    if not big:
        return settings.staging_default_mib_s * MIB, False
    return sum(t.bytes for t in big) / sum(t.seconds for t in big), True


def expected_output_bytes(session: Session, organization: str, template_name: str, limit: int = 10) -> float:
    """Mean output bytes of the template's latest completed instances in the organization (0 without any)."""
    query = select(wf.WorkflowInstance.outputs).where(
        wf.WorkflowInstance.organization == organization, wf.WorkflowInstance.template_name == template_name,
        wf.WorkflowInstance.state == wf.COMPLETED).order_by(wf.WorkflowInstance.finished_at.desc()).limit(limit)
    totals = [sum(int(o.get("size") or 0) for o in outputs or []) for outputs in session.scalars(query)]
    return sum(totals) / len(totals) if totals else 0.0


def already_staged(transfers: list[StagingTransfer], item: InputObject) -> StagingTransfer | None:
    """An earlier stage-in of the same content to this cluster (same bucket, key, ETag and size)."""
    return same_content(transfers, item.bucket, item.key, item.etag, item.size)


def staging_estimate(session: Session, organization: str, cluster_id: str, inputs: list[InputObject],
                     out_bytes: float, settings: StagingTimeSettings | None = None) -> StagingEstimate:
    """The staging time of a job with ``inputs`` (and ``out_bytes`` expected back) on one cluster."""
    settings = settings or get_staging_settings()
    transfers = transfers_of(session, organization, cluster_id, limit=max(settings.staging_history, 200))
    rate, measured = throughput(transfers[:settings.staging_history], settings)
    moving, there = 0, []
    for item in inputs:
        if already_staged(transfers, item) is not None:
            there.append(item.key)
        else:
            moving += item.size
    return StagingEstimate(seconds=(moving + out_bytes) / rate, in_bytes=moving, out_bytes=out_bytes,
                           throughput_mib_s=rate / MIB, measured=measured, already_there=there)
