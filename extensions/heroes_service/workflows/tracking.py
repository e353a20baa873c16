"""The workflow engine's part of the one reconciler per cluster (``clusterjobs.reconciler``).

Each cycle (one ``squeue`` for every kind of job on the cluster, at most one ``sacct``), this tracker

* restarts drivers of instances no thread owns (after a restart) and stages outputs of finished instances
  (``prepare``);
* records what Slurm said of every tracked step, each transition an event row (``apply``), and writes the
  ledger row of each step that ended;
* derives the instances' states from their steps': failure (with the failed step's log tail), completion
  (-> staging out), cancel (``finish``).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from ..clusterjobs import ledger
from ..clusterjobs.reconciler import ENDED, FINAL, LIVE, MISSING, CycleStats, Observation
from ..clusterjobs.submit import owner_connector, owner_principal
from ..clusters.errors import ClusterError
from ..clusters.models import Cluster
from ..clusters.slurm import Job
from . import models as m
from .cluster_files import read_tail
from .actions import utcnow
from .render import log_path

log = logging.getLogger("heroes_service.workflows")


class WorkflowTracker:
    """Workflow steps, as the reconciler sees them (one per engine)."""

    name = "workflow-steps"

    def __init__(self, engine):
        self.engine = engine
        self.sessions = engine.sessions

    def live_cluster_ids(self) -> set[str]:
        with self.sessions() as session:
            return {i.cluster_id for i in m.live_instances(session)}

    def prepare(self, cluster: Cluster, stats: CycleStats) -> dict[Any, str | None] | None:
        engine = self.engine
        with self.sessions() as session:
            instances = m.live_instances(session, cluster.id)
            if not instances:
                return None
            now = time.monotonic()
            for inst in instances:
                if inst.state in m.DRIVER_STATES and not engine.owned(inst.id) \
                        and engine._retry_at.get(inst.id, 0) <= now:
                    engine.start_drive(inst.id)
                elif inst.state == m.STAGING_OUT and not engine.owned(inst.id):
                    engine.pool.submit(engine.finish, inst.id)
            return {s.id: s.job_id for inst in instances if not engine.owned(inst.id)
                    and inst.state not in (m.STAGING_OUT,) for s in inst.steps
                    if s.job_id and s.state not in m.STEP_FINAL}

    def cluster_gone(self, cluster_id: str) -> None:
        with self.sessions() as session:
            for inst in m.live_instances(session, cluster_id):
                self.engine._fail_instance(session, inst, "the cluster was deleted")
            session.commit()

    def apply(self, cluster: Cluster, observed: dict[Any, Observation], queue_by_name: dict[str, Job],
              stats: CycleStats) -> None:
        updates = {step_id: (seen.kind, seen.job) for step_id, seen in observed.items()}
        with self.sessions() as session:
            for step_id, (kind, job) in updates.items():
                step = session.get(m.WorkflowStep, step_id)
                if step is None or step.state in m.STEP_FINAL:
                    continue
                if kind == ENDED:
                    step.missing_cycles += 1
                    if step.missing_cycles < 20:
                        continue
                    kind = FINAL  # accounting never came: take squeue's state, exit code unknown
                if kind == MISSING:
                    step.missing_cycles += 1
                    if step.missing_cycles >= self.engine.settings.lost_after_cycles:
                        stats.transitions += m.set_step_state(session, step, "LOST",
                                                              f"job {step.job_id} is in neither squeue nor sacct")
                        step.ended_at = utcnow()
                        self._ledger(session, cluster, step, None)
                    continue
                step.missing_cycles = 0
                if job.nodes and job.nodes not in ("None assigned", "(null)"):
                    step.nodes = job.nodes
                state = job.state
                if kind == LIVE:
                    state = "RUNNING" if state in ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING") else "PENDING"
                    if state == "RUNNING" and step.started_at is None:
                        step.started_at = utcnow()
                    detail = f"squeue: {job.raw_state or job.state}" + (f" ({job.reason})" if job.reason and
                                                                         job.reason != "None" else "")
                else:
                    step.exit_code = 0 if state == "COMPLETED" else job.exit_code
                    # a dependent Slurm cancels itself (afterok on a failed job) gets Start == End but no
                    # node: it never ran, and must not look started (it becomes SKIPPED, not CANCELLED)
                    ran = bool(job.nodes) and job.nodes not in ("None assigned", "(null)")
                    if ran and job.start and job.start not in ("Unknown", "None") and step.started_at is None:
                        step.started_at = utcnow()
                    step.ended_at = utcnow()
                    detail = f"{job.raw_state or state}, exit code {step.exit_code}"
                stats.transitions += m.set_step_state(session, step, state, detail)
                if kind == FINAL:
                    self._ledger(session, cluster, step, job)
            session.commit()

    def _ledger(self, session, cluster: Cluster, step: m.WorkflowStep, job: Job | None) -> None:
        """The step's ledger row, in the same transaction as its final state."""
        inst = step.instance
        ledger.record_step(session, step_id=step.id, instance_id=inst.id, cluster_id=cluster.id, cluster=cluster.name,
                           organization=inst.organization, username=inst.username, login=inst.cluster_login,
                           job_id=step.job_id or "", state=step.state, job=job,
                           resources={"options": list(step.options or [])})

    def finish(self, cluster: Cluster, stats: CycleStats) -> None:
        self._evaluate(cluster, stats)

    def _evaluate(self, cluster: Cluster, stats: CycleStats) -> None:
        """Instance states from step states: failure (with log tail), completion (-> staging out), cancel."""
        failed_instances: list[tuple[str, set[str]]] = []
        with self.sessions() as session:
            for inst in m.live_instances(session, cluster.id):
                if inst.state in m.DRIVER_STATES or inst.state == m.STAGING_OUT or self.engine.owned(inst.id):
                    continue
                steps = inst.steps
                if inst.cancel_requested:
                    if all(s.state in m.STEP_FINAL for s in steps):
                        stats.transitions += m.set_instance_state(session, inst, m.CANCELLED, "cancelled by the user")
                    continue
                by_name = {s.name: s for s in steps}
                for s in steps:  # positions are topological: a skip propagates down the chain
                    if s.state == "CANCELLED" and s.started_at is None and any(
                            by_name[d].state in m.STEP_FINAL and by_name[d].state != "COMPLETED" for d in s.depends_on):
                        m.set_step_state(session, s, m.SKIPPED, "never ran: a step it depends on did not complete")
                # Slurm may cancel a dependent before we have read its dependency's failure: wait for it
                waiting = {s.name for s in steps if s.state == "CANCELLED" and s.started_at is None
                           and any(by_name[d].state not in m.STEP_FINAL for d in s.depends_on)}
                failed = [s for s in steps if s.state in m.STEP_FINAL and s.state not in ("COMPLETED", m.SKIPPED)
                          and s.name not in waiting]
                if failed:
                    first = failed[0]
                    tail = self._log_tail(cluster, inst, first.name)
                    first.log_tail = tail
                    inst.exit_code = first.exit_code
                    reason = f"step {first.name} {first.state.lower()} with exit code {first.exit_code}"
                    self.engine._fail_instance(session, inst, reason, cancel_jobs=True)
                    stats.transitions += 1
                    failed_instances.append((inst.id, {s.name for s in steps if s.started_at is not None}))
                    continue
                if all(s.state == "COMPLETED" for s in steps):
                    stats.transitions += m.set_instance_state(session, inst, m.STAGING_OUT, "every step completed")
                    session.commit()
                    self.engine.pool.submit(self.engine.finish, inst.id)
                    continue
                target = m.RUNNING if any(s.state == "RUNNING" for s in steps) else (
                    m.RUNNING if any(s.state == "COMPLETED" for s in steps) else m.QUEUED)
                stats.transitions += m.set_instance_state(session, inst, target, "")
            session.commit()
        for instance_id, ran in failed_instances:  # a failed run's energy and memory were spent all the same
            self.engine.pool.submit(self.engine._record_peak_memory, instance_id)
            if self.engine.settings.energy_command:
                self.engine.pool.submit(self.engine._ingest_ran_steps_energy, instance_id, ran)

    def _log_tail(self, cluster: Cluster, inst: m.WorkflowInstance, step: str) -> str:
        try:
            conn = owner_connector(cluster, inst.cluster_login, owner_principal(inst))
            return read_tail(conn, f"{inst.work_dir}/{log_path(step)}", self.engine.settings.log_tail_bytes)
        except (ClusterError, OSError) as exc:
            return f"(log unavailable: {exc})"
