"""Settings of cluster jobs (environment prefix ``HEROES_SERVICE_CLUSTER_JOBS_``)."""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClusterJobsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEROES_SERVICE_CLUSTER_JOBS_", extra="ignore")

    lost_after_cycles: int = Field(
        40, ge=3, description="A job absent from squeue and sacct (or a SUBMITTING intent whose name Slurm does "
                              "not know) this many reconcile cycles in a row is marked LOST.")
    state_wait_max_s: float = Field(
        30.0, ge=0, description="Longest a state request may wait for the job to change (long-poll).")
    node_addr_ttl_s: float = Field(600.0, ge=0, description="Seconds a cluster's node -> NodeAddr map is kept.")
    command_timeout_s: float = Field(60.0, gt=0, description="Seconds one Slurm command over SSH may take.")


@lru_cache
def get_cluster_jobs_settings() -> ClusterJobsSettings:
    return ClusterJobsSettings()
