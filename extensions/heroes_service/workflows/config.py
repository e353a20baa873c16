"""Settings of the workflows capability (environment prefix ``HEROES_SERVICE_WORKFLOWS_``)."""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkflowSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEROES_SERVICE_WORKFLOWS_", extra="ignore")

    reconciler: bool = Field(True, description="Run the per-cluster reconcilers inside the service.")
    interval_s: float = Field(3.0, gt=0, description="Seconds between two reconcile cycles of a cluster.")
    image_dir: str = Field(
        "", description="Directory (on the clusters) holding the container images named by templates: "
                        "charliecloud <dir>/<image>, apptainer <dir>/<image>.sif. Empty: <state_dir>/data/image "
                        "(the embedded stack's image directory).")
    image_dirs: dict[str, str] = Field(default_factory=dict, description="Per-cluster-name override of image_dir.")
    lost_after_cycles: int = Field(
        200, ge=5, description="A job absent from squeue and sacct this many cycles in a row is marked LOST.")
    log_tail_bytes: int = Field(4000, ge=256, le=1_000_000, description="Bytes of a failed step's log kept.")
    drivers: int = Field(8, ge=1, le=64, description="Threads staging and submitting instances concurrently.")
    energy_command: list[str] = Field(
        default_factory=list,
        description="Hook: argv prefix wrapping steps with energy: true, e.g. [\"python3\", \"-m\", "
                    "\"heroes_energy.collect\", \"--out\", \"{energy_dir}\", \"--\"]. Empty: steps run unwrapped.")
    submit_wait_s: float = Field(
        120.0, gt=0, description="How long POST /submit waits for staging + sbatch before answering with the "
                                 "instance still in progress (the driver goes on in the background).")


@lru_cache
def get_workflow_settings() -> WorkflowSettings:
    return WorkflowSettings()
