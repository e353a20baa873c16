"""Settings of the workflows capability (environment prefix ``HEROES_SERVICE_WORKFLOWS_``)."""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


#: The energy hook the embedded stack sets: the engine stages heroes_energy as a zipapp into the instance dir
#: (``{collector}``) and the step runs under it with the cluster's (or container's) python3, so nothing has to
#: be installed on the cluster; ``{energy_dir}`` is the step's own output folder.
STAGED_COLLECTOR_COMMAND = ("python3", "{collector}", "--out", "{energy_dir}", "--")


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
        description="Hook: argv prefix wrapping every step that does not opt out (energy: false), e.g. [\"python3\", \"{collector}\", "
                    "\"--out\", \"{energy_dir}\", \"--\"] (STAGED_COLLECTOR_COMMAND, what the embedded stack sets) "
                    "or [\"python3\", \"-m\", \"heroes_energy.collect\", \"--out\", \"{energy_dir}\", \"--\"] where "
                    "the clusters have the package. {collector} makes the engine stage heroes_energy as a zipapp "
                    "into the instance dir. When set, each finished step's files in {energy_dir} are ingested "
                    "for the instance's owner. Empty: steps run unwrapped.")
    energy_max_file_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Most bytes of a step's energy files (in all) fetched back for "
                                               "ingestion; larger ones are not ingested (an event says so).")
    submit_wait_s: float = Field(
        120.0, gt=0, description="How long POST /submit waits for staging + sbatch before answering with the "
                                 "instance still in progress (the driver goes on in the background).")


@lru_cache
def get_workflow_settings() -> WorkflowSettings:
    return WorkflowSettings()
