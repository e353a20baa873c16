"""Tables of the energy capability (migration 0004_energy).

``energy_records``: one node's record of one job step, as EAR writes it, plus who owns it (organization,
user), where it ran (cluster) and what it belongs to (workflow instance, template). ``(organization, cluster,
job_id, step_id, node)`` is unique (migration 0010): a file ingested twice adds nothing, and the key of one
organization's records never meets another's, so no tenant can learn of or suppress another's records. ``energy_samples``: per-second power
samples of a step on a node (our collector's timeline file).
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..store import Base


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class EnergyRecord(Base):
    __tablename__ = "energy_records"
    __table_args__ = (UniqueConstraint("organization", "cluster", "job_id", "step_id", "node",
                                       name="uq_energy_records_org_step_node"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    username: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    cluster: Mapped[str] = mapped_column(String(63), nullable=False, default="")
    instance_id: Mapped[str] = mapped_column(String(64), nullable=False, default="", index=True)
    template: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    job_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    step_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    app_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    node: Mapped[str] = mapped_column(String(128), nullable=False)
    job_name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    variant: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    start_time: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    end_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    dc_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    dram_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    pck_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    energy_j: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_gflops: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_gflops: Mapped[float | None] = mapped_column(Float, nullable=True)
    mem_gbs: Mapped[float | None] = mapped_column(Float, nullable=True)
    io_mbs: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpi: Mapped[float | None] = mapped_column(Float, nullable=True)
    avg_cpufreq_khz: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_util: Mapped[float | None] = mapped_column(Float, nullable=True)
    estimated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    source_file: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class EnergySample(Base):
    __tablename__ = "energy_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    username: Mapped[str] = mapped_column(String(255), nullable=False)
    cluster: Mapped[str] = mapped_column(String(63), nullable=False, default="")
    job_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    step_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    node: Mapped[str] = mapped_column(String(128), nullable=False)
    elapsed_s: Mapped[float] = mapped_column(Float, nullable=False)
    dc_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    pck_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    dram_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    estimated: Mapped[str] = mapped_column(String(255), nullable=False, default="")
