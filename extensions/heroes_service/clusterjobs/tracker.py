"""The reconciler's view of ``cluster_jobs`` rows (servers, kernels, desktops): what Slurm said -> the row.

Rules (the same as for workflow steps): queued or running -> PENDING / RUNNING with the node; ended with an
accounting record -> its final state, exit code and the ledger; ended without a record yet -> waited for a
few cycles; in neither squeue nor sacct for ``lost_after_cycles`` -> LOST. A SUBMITTING intent without a
job id (the sbatch answer was lost) is adopted when its unique name shows up in the queue, else LOST.
"""
from __future__ import annotations

import logging
from typing import Any

from ..clusters.models import Cluster
from ..clusters.slurm import Job
from . import ledger
from .models import FINAL, LOST, PENDING, RUNNING, SUBMITTING, ClusterJob, live_cluster_ids, live_jobs, utcnow
from .reconciler import ENDED, FINAL as SEEN_FINAL, LIVE, MISSING, CycleStats, Observation

log = logging.getLogger("heroes_service.clusterjobs")
RUNNING_LIKE = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING")


def _node(job: Job) -> str:
    return job.nodes if job.nodes and job.nodes not in ("None assigned", "(null)") else ""


class ClusterJobsTracker:
    name = "cluster-jobs"

    def __init__(self, service):
        self.service = service
        self.sessions = service.sessions

    def live_cluster_ids(self) -> set[str]:
        with self.sessions() as session:
            return live_cluster_ids(session)

    def prepare(self, cluster: Cluster, stats: CycleStats) -> dict[Any, str | None] | None:
        with self.sessions() as session:
            rows = live_jobs(session, cluster.id)
            return {row.id: row.job_id for row in rows} if rows else None

    def apply(self, cluster: Cluster, observed: dict[Any, Observation], queue_by_name: dict[str, Job],
              stats: CycleStats) -> None:
        ended: list[ClusterJob] = []
        lost_after = self.service.settings.lost_after_cycles
        with self.sessions() as session:
            for row in live_jobs(session, cluster.id):
                if not row.job_id:
                    self._adopt(row, queue_by_name.get(row.job_name), lost_after, stats)
                    if row.state in FINAL:
                        ended.append(row)
                    continue
                seen = observed.get(row.id)
                if seen is None:
                    continue
                before = row.state
                self._update(session, row, seen, lost_after)
                if row.state != before:
                    stats.transitions += 1
                    if row.state in FINAL:
                        ended.append(row)
            session.commit()
            for row in ended:
                session.expunge(row)
        for row in ended:
            self.service.end_hook(row)

    @staticmethod
    def _adopt(row: ClusterJob, job: Job | None, lost_after: int, stats: CycleStats) -> None:
        if job is not None:
            row.job_id, row.state, row.missing_cycles = job.job_id, PENDING, 0
            row.detail = f"job {job.job_id} found by its name; not resubmitted"
            stats.transitions += 1
            return
        row.missing_cycles += 1
        if row.missing_cycles >= lost_after:
            row.state, row.ended_at = LOST, utcnow()
            row.detail = "sbatch's answer was lost and Slurm knows no job of this name"
            stats.transitions += 1

    @staticmethod
    def _update(session, row: ClusterJob, seen: Observation, lost_after: int) -> None:
        kind, job = seen.kind, seen.job
        if kind == SEEN_FINAL and job.state == "COMPLETED" and not job.alloc_tres:
            kind = ENDED  # squeue's COMPLETED before slurmdbd has the record: wait for the ledger's TRES
        if kind == ENDED:
            row.missing_cycles += 1
            if row.missing_cycles < 20:
                return
            kind = SEEN_FINAL  # accounting never came: take squeue's state, exit code unknown
        if kind == MISSING:
            row.missing_cycles += 1
            if row.missing_cycles >= lost_after:
                row.state, row.detail = LOST, f"job {row.job_id} is in neither squeue nor sacct"
                ledger.record_end(session, row, None)
            return
        row.missing_cycles = 0
        if _node(job):
            row.node = _node(job)
        if kind == LIVE:
            state = RUNNING if job.state in RUNNING_LIKE else PENDING
            if state == RUNNING and row.started_at is None:
                row.started_at = utcnow()
            row.state = state
            row.reason = (job.reason if job.reason and job.reason != "None" else "")[:255]
            return
        row.state = job.state if job.state != SUBMITTING else LOST
        row.exit_code = 0 if job.state == "COMPLETED" else job.exit_code
        row.detail = f"{job.raw_state or job.state}, exit code {row.exit_code}"
        ledger.record_end(session, row, job)

    def finish(self, cluster: Cluster, stats: CycleStats) -> None:
        """Nothing to derive: a cluster job's state is its Slurm job's."""

    def cluster_gone(self, cluster_id: str) -> None:
        with self.sessions() as session:
            for row in live_jobs(session, cluster_id):
                row.state, row.detail, row.ended_at = LOST, "the cluster was deleted", utcnow()
            session.commit()
