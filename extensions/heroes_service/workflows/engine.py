"""The workflow engine inside the service: the submission driver, cancel, and one reconciler per cluster.

State lives in the database only; threads hold nothing that a restart would lose:

* the **driver** (``drive``) moves an instance NEW -> STAGING_IN -> SUBMITTING -> QUEUED. Before each
  ``sbatch`` the step is committed as SUBMITTING with its job name (the intent). If the service dies, or
  the SSH channel drops, between that commit and the job id's commit, the next driver run looks the job
  up BY NAME (``squeue --name``, ``sacct --name`` and the job's own ``.heroes/<step>.jobid`` file) and
  adopts it; only when none of the three knows it is the step submitted again;
* a **reconciler** per cluster runs one ``squeue`` per cycle for every live job of that cluster (as the
  gateway's service account, a Slurm operator), and one ``sacct`` for the jobs that left the queue or
  ended, to read exit codes. Every transition is an event row. It also restarts drivers of instances no
  thread owns (after a restart) and stages outputs of finished instances;
* **cancel** marks the instance, ``scancel``s every step's job as its owner, and the driver stops
  staging at the next file.

All cluster and S3 I/O is blocking and runs in threads (the driver pool, the reconciler threads); the
asyncio loop only starts and stops them.
"""
from __future__ import annotations

import io
import logging
import posixpath
import stat
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..clusters.connector import ClusterConnector
from ..clusters.errors import ClusterError, ClusterUnreachable, CommandFailed, CommandTimeout
from ..clusters.identity import PER_USER, SERVICE_ACCOUNT, connector_as, service_connector
from ..clusters.models import Cluster, cluster_by_id
from ..clusters.slurm import ACTIVE_STATES, FINAL_STATES, Job, SlurmClient
from ..errors import ApiError
from . import models as m
from .config import WorkflowSettings
from .render import COLLECTOR_PATH, Context, energy_dir, log_path, render
from .staging import Staging, StagingCancelled, api_error_text
from .templates import Template, outputs_match, staged_path

log = logging.getLogger("heroes_service.workflows")

#: sbatch/squeue messages that say "the controller is away", not "your job is wrong": retried
_TRANSIENT = ("Unable to contact slurm controller", "Socket timed out", "temporarily unable", "Connection refused",
              "Zero Bytes were transmitted", "slurm_load_jobs error", "Resource temporarily unavailable")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def owner_connector(cluster: Cluster, login: str) -> ClusterConnector:
    """The account an instance's jobs and files belong to (the user's own login in per-user mode)."""
    if cluster.identity_mode == PER_USER:
        return connector_as(cluster, login, mode=PER_USER)
    return connector_as(cluster, cluster.service_login, mode=SERVICE_ACCOUNT)


def _transient(exc: Exception) -> bool:
    if isinstance(exc, (ClusterUnreachable, CommandTimeout)):
        return True
    if isinstance(exc, CommandFailed):
        return any(t.lower() in (exc.stderr or "").lower() for t in _TRANSIENT)
    return False


@dataclass
class CycleStats:
    """What one reconcile cycle did (tests and the benchmark read it)."""

    cluster: str
    slurm_commands: int = 0
    tracked: int = 0
    transitions: int = 0
    errors: list[str] = field(default_factory=list)


class WorkflowEngine:
    """One per app (``app.state.workflows``)."""

    def __init__(self, sessions: sessionmaker[Session], settings: WorkflowSettings, staging_factory: Callable[[], Staging],
                 state_dir: Path | str):
        self.sessions = sessions
        self.settings = settings
        self._staging_factory = staging_factory
        self._staging: Staging | None = None
        self.state_dir = Path(state_dir)
        self.pool = ThreadPoolExecutor(max_workers=settings.drivers, thread_name_prefix="wf-driver")
        self._owned: set[str] = set()
        self._lock = threading.Lock()
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._supervisor: threading.Thread | None = None
        self.last_cycles: dict[str, CycleStats] = {}

    @property
    def staging(self) -> Staging:
        if self._staging is None:
            self._staging = self._staging_factory()
        return self._staging

    # --- ownership: one thread works on an instance at a time ---------------------------------------
    def _claim(self, instance_id: str) -> bool:
        with self._lock:
            if instance_id in self._owned:
                return False
            self._owned.add(instance_id)
            return True

    def _release(self, instance_id: str) -> None:
        with self._lock:
            self._owned.discard(instance_id)

    def owned(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._owned

    # --- helpers -------------------------------------------------------------------------------------
    def image_path(self, cluster: Cluster, runtime: str, image: str) -> str:
        base = self.settings.image_dirs.get(cluster.name) or self.settings.image_dir or \
            str(self.state_dir / "data" / "image")
        if runtime == "apptainer":
            return posixpath.join(base, f"{image}.sif")
        return posixpath.join(base, image)

    def context(self, session: Session, inst: m.WorkflowInstance, cluster: Cluster) -> tuple[Context, Template]:
        row = session.get(m.WorkflowTemplate, inst.template_id)
        template = Template.model_validate(row.spec)
        runtime = template.container.runtime
        if runtime == "cluster":
            runtime = cluster.container_runtime
        ctx = Context(
            instance_id=inst.id, template_id=inst.template_id, template=template, values=dict(inst.parameters),
            workdir=inst.work_dir, user_id=inst.user_id, username=inst.username, organization=inst.organization,
            organization_id=inst.organization_id, runtime=runtime,
            image_path=self.image_path(cluster, runtime, template.container.image) if runtime != "none" else "",
            default_partition=cluster.default_partition, energy_command=tuple(self.settings.energy_command),
            step_options={s.name: list(s.options or []) for s in inst.steps})
        return ctx, template

    # --- the driver ----------------------------------------------------------------------------------
    def start_drive(self, instance_id: str):
        """Drive ``instance_id`` on the pool; returns the future (None when a thread already owns it)."""
        if self.owned(instance_id):
            return None
        return self.pool.submit(self.drive, instance_id)

    def drive(self, instance_id: str) -> None:
        """Stage inputs and submit every step not yet submitted. Idempotent; safe to call after a crash."""
        if not self._claim(instance_id):
            return
        try:
            self._drive(instance_id)
            self._failures.pop(instance_id, None)
            self._retry_at.pop(instance_id, None)
        except StagingCancelled:
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                self._finish_cancel(session, inst)
                session.commit()
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, transient ones retried
            self._driver_failed(instance_id, exc)
        finally:
            self._release(instance_id)

    def _driver_failed(self, instance_id: str, exc: Exception) -> None:
        transient = _transient(exc)
        detail = api_error_text(exc)[:2000]
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            if inst is None or inst.state in m.INSTANCE_FINAL:
                return
            if transient:
                count = self._failures.get(instance_id, 0) + 1
                self._failures[instance_id] = count
                delay = min(60.0, 2.0 ** count)
                self._retry_at[instance_id] = time.monotonic() + delay
                session.add(m.WorkflowEvent(instance_id=instance_id, from_state=inst.state, to_state=inst.state,
                                            detail=f"retrying in {delay:.0f}s: {detail}"))
                log.warning("workflow %s: %s (retry in %.0fs)", instance_id, detail, delay)
            else:
                log.warning("workflow %s failed while %s: %s", instance_id, inst.state, detail)
                self._fail_instance(session, inst, f"{inst.state.lower()} failed: {detail}", cancel_jobs=True)
            session.commit()

    def _drive(self, instance_id: str) -> None:
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            if inst is None or inst.state not in m.DRIVER_STATES:
                return
            cluster = cluster_by_id(session, None, inst.cluster_id)
            if cluster is None:
                self._fail_instance(session, inst, "the cluster was deleted")
                session.commit()
                return
            session.expunge(cluster)
            ctx, template = self.context(session, inst, cluster)
            if inst.cancel_requested:
                self._finish_cancel(session, inst)
                session.commit()
                return
            state, login = inst.state, inst.cluster_login
        conn = owner_connector(cluster, login)
        if state in (m.NEW, m.STAGING_IN):
            self._set_state(instance_id, m.STAGING_IN, "staging inputs")
            self._stage_in(instance_id, conn, ctx, template)
        self._set_state(instance_id, m.SUBMITTING, "submitting steps")
        self._submit_steps(instance_id, conn, cluster, ctx, template)

    def _set_state(self, instance_id: str, state: str, detail: str) -> None:
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            if m.set_instance_state(session, inst, state, detail):
                session.commit()

    def _cancelled(self, instance_id: str) -> bool:
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            return inst is None or inst.cancel_requested

    def _stage_in(self, instance_id: str, conn: ClusterConnector, ctx: Context, template: Template) -> None:
        """The instance dir, the template's files and every input file (idempotent: rewritten whole)."""
        folders = [ctx.workdir, f"{ctx.workdir}/outputs", f"{ctx.workdir}/logs", f"{ctx.workdir}/.heroes"]
        for param in template.parameters:
            if param.type == "file" and param.name in ctx.values:
                folders.append(f"{ctx.workdir}/inputs/{param.name}")
        _mkdirs(conn, folders)
        for name, text in template.files.items():
            conn.put_stream(io.BytesIO(text.encode()), f"{ctx.workdir}/{name}")
        self._stage_collector(conn, ctx, template)
        for param in template.parameters:
            if param.type != "file" or param.name not in ctx.values:
                continue
            if self._cancelled(instance_id):
                raise StagingCancelled()
            ref = ctx.values[param.name]
            size = self.staging.stage_in(conn, ref, f"{ctx.workdir}/{staged_path(param.name, ref['key'])}")
            with self.sessions() as session:
                session.add(m.WorkflowEvent(instance_id=instance_id, from_state=m.STAGING_IN, to_state=m.STAGING_IN,
                                            detail=f"staged input {param.name} ({size} bytes)"))
                session.commit()

    def _stage_collector(self, conn: ClusterConnector, ctx: Context, template: Template) -> None:
        """Put the EAR-lite collector (a zipapp of the stdlib-only heroes_energy) into the instance dir when
        the energy hook runs it from there and a step asks for energy: no install on the cluster needed."""
        if any(step.energy for step in template.steps) and any("{collector}" in e for e in ctx.energy_command):
            conn.put_stream(io.BytesIO(collector_zipapp()), f"{ctx.workdir}/{COLLECTOR_PATH}")

    def _submit_steps(self, instance_id: str, conn: ClusterConnector, cluster: Cluster, ctx: Context,
                      template: Template) -> None:
        slurm = SlurmClient(conn, timeout=60)
        for spec in template.ordered_steps():
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                rows = {s.name: s for s in inst.steps}
                step = rows[spec.name]
                if step.job_id:
                    continue
                if inst.cancel_requested:
                    self._finish_cancel(session, inst)
                    session.commit()
                    return
                if step.state == m.STEP_SUBMITTING:
                    # an earlier attempt recorded the intent: the job may exist. Never submit blindly.
                    found = find_job(conn, step.job_name, ctx.workdir, step.name)
                    if found:
                        step.job_id = found
                        m.set_step_state(session, step, "PENDING", f"job {found} found by name "
                                                                   f"{step.job_name}; not resubmitted")
                        session.commit()
                        continue
                deps = [rows[d].job_id for d in spec.depends_on]
                if any(not d for d in deps):
                    raise RuntimeError(f"step {spec.name}: a dependency has no job id")
                script, options = render(ctx, spec, deps)
                step.script, step.options = script, options
                step.submitted_at = utcnow()
                m.set_step_state(session, step, m.STEP_SUBMITTING, "intent recorded; sbatch next")
                session.commit()
            job_id = slurm.submit(script, options)  # a drop mid-command raises: the step stays SUBMITTING
            with self.sessions() as session:
                step = session.scalars(select(m.WorkflowStep).where(m.WorkflowStep.instance_id == instance_id,
                                                                    m.WorkflowStep.name == spec.name)).one()
                step.job_id = job_id
                m.set_step_state(session, step, "PENDING", f"sbatch -> job {job_id}")
                session.commit()
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            if inst.state == m.SUBMITTING:
                m.set_instance_state(session, inst, m.QUEUED, "every step submitted")
                session.commit()

    # --- cancel --------------------------------------------------------------------------------------
    def cancel(self, instance_id: str, conn: ClusterConnector | None = None) -> dict:
        """Request cancellation: scancel every submitted step (as its owner); the reconciler records the
        final states. Steps never submitted are cancelled at once."""
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            if inst is None or inst.state in m.INSTANCE_FINAL:
                return {"cancelled": []}
            if not inst.cancel_requested:
                inst.cancel_requested = True
                session.add(m.WorkflowEvent(instance_id=inst.id, from_state=inst.state, to_state=inst.state,
                                            detail="cancel requested"))
            job_ids = [s.job_id for s in inst.steps if s.job_id and s.state not in m.STEP_FINAL]
            cluster = cluster_by_id(session, None, inst.cluster_id)
            login = inst.cluster_login
            session.commit()
        if job_ids and cluster is not None:
            conn = conn or owner_connector(cluster, login)
            SlurmClient(conn).cancel(job_ids)
        if not self.owned(instance_id):
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                if inst.state in m.DRIVER_STATES:
                    self._finish_cancel(session, inst)
                    session.commit()
        return {"cancelled": job_ids}

    def _finish_cancel(self, session: Session, inst: m.WorkflowInstance) -> None:
        """Steps without a job become CANCELLED; the instance too once nothing runs any more."""
        for step in inst.steps:
            if not step.job_id and step.state not in m.STEP_FINAL:
                m.set_step_state(session, step, "CANCELLED", "cancelled before submission")
        if all(s.state in m.STEP_FINAL for s in inst.steps):
            m.set_instance_state(session, inst, m.CANCELLED, "cancelled by the user")
        elif inst.state in m.DRIVER_STATES:
            m.set_instance_state(session, inst, m.QUEUED, "cancelling submitted steps")

    def _fail_instance(self, session: Session, inst: m.WorkflowInstance, reason: str, *,
                       cancel_jobs: bool = False) -> None:
        live = [s for s in inst.steps if s.job_id and s.state not in m.STEP_FINAL]
        if cancel_jobs and live:
            try:
                cluster = cluster_by_id(session, None, inst.cluster_id)
                if cluster is not None:
                    SlurmClient(owner_connector(cluster, inst.cluster_login)).cancel([s.job_id for s in live])
            except ClusterError as exc:
                log.warning("workflow %s: could not cancel jobs of the failed instance: %s", inst.id, exc)
        for step in inst.steps:
            if step.state not in m.STEP_FINAL:
                m.set_step_state(session, step, m.SKIPPED if not step.started_at else "CANCELLED",
                                 "not run: the instance failed")
        inst.reason = reason[:4000]
        m.set_instance_state(session, inst, m.FAILED, reason)

    # --- the reconciler ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the supervisor thread, which keeps one reconciler thread per cluster with live work."""
        if self._supervisor is not None:
            return
        self._stop.clear()
        self._supervisor = threading.Thread(target=self._supervise, name="wf-supervisor", daemon=True)
        self._supervisor.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        for thread in list(self._threads.values()):
            thread.join(timeout)
        self._supervisor = None
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                with self.sessions() as session:
                    cluster_ids = {i.cluster_id for i in m.live_instances(session)}
                for cluster_id in cluster_ids:
                    thread = self._threads.get(cluster_id)
                    if thread is None or not thread.is_alive():
                        thread = threading.Thread(target=self._reconcile_loop, args=(cluster_id,),
                                                  name=f"wf-reconciler-{cluster_id[:8]}", daemon=True)
                        self._threads[cluster_id] = thread
                        thread.start()
            except Exception:  # noqa: BLE001 - the supervisor must survive a database hiccup
                log.exception("workflow supervisor cycle failed")
            self._stop.wait(self.settings.interval_s)

    def _reconcile_loop(self, cluster_id: str) -> None:
        idle = 0
        while not self._stop.is_set():
            try:
                stats = self.reconcile(cluster_id)
                idle = idle + 1 if stats is None else 0
            except Exception:  # noqa: BLE001 - next cycle tries again
                log.exception("workflow reconciler of cluster %s failed", cluster_id)
            if idle >= 3:
                return  # nothing live here: the supervisor restarts the thread when there is
            self._stop.wait(self.settings.interval_s)

    def reconcile(self, cluster_id: str) -> CycleStats | None:
        """One cycle for one cluster; None when it has no live instance."""
        with self.sessions() as session:
            instances = m.live_instances(session, cluster_id)
            if not instances:
                return None
            cluster = cluster_by_id(session, None, cluster_id)
            if cluster is None:
                for inst in instances:
                    self._fail_instance(session, inst, "the cluster was deleted")
                session.commit()
                return None
            session.expunge(cluster)
            stats = CycleStats(cluster.name)
            now = time.monotonic()
            for inst in instances:
                if inst.state in m.DRIVER_STATES and not self.owned(inst.id) \
                        and self._retry_at.get(inst.id, 0) <= now:
                    self.start_drive(inst.id)
                elif inst.state == m.STAGING_OUT and not self.owned(inst.id):
                    self.pool.submit(self.finish, inst.id)
            tracked = [(inst.id, s.id, s.job_id) for inst in instances if not self.owned(inst.id)
                       and inst.state not in (m.STAGING_OUT,) for s in inst.steps
                       if s.job_id and s.state not in m.STEP_FINAL]
        stats.tracked = len(tracked)
        if tracked:
            self._poll(cluster, tracked, stats)
        self._evaluate(cluster, stats)
        self.last_cycles[cluster.name] = stats
        return stats

    def _poll(self, cluster: Cluster, tracked: list[tuple[str, int, str]], stats: CycleStats) -> None:
        slurm = SlurmClient(service_connector(cluster), timeout=60)
        try:
            stats.slurm_commands += 1
            queue = {j.job_id: j for j in slurm.queue()}
        except ClusterError as exc:
            stats.errors.append(f"squeue: {exc}")
            log.warning("workflow reconciler %s: squeue failed: %s", cluster.name, exc)
            return
        need_acct = []
        updates: dict[int, tuple[str, Job | None]] = {}
        for _inst, step_id, job_id in tracked:
            job = queue.get(job_id)
            if job is not None and job.state in ACTIVE_STATES:
                updates[step_id] = ("live", job)
            elif job is not None and job.state == "COMPLETED":
                updates[step_id] = ("final", job)  # exit code 0 by definition
            else:
                need_acct.append(job_id)
        accounted: dict[str, Job] = {}
        if need_acct:
            try:
                stats.slurm_commands += 1
                for row in slurm.accounting(job_ids=need_acct, all_users=True):
                    accounted[row.job_id] = row
            except ClusterError as exc:
                stats.errors.append(f"sacct: {exc}")
                log.warning("workflow reconciler %s: sacct failed: %s", cluster.name, exc)
        for _inst, step_id, job_id in tracked:
            if step_id in updates:
                continue
            row = accounted.get(job_id)
            queued = queue.get(job_id)
            # a just-ended job can have a provisional accounting record (no partition yet): wait a cycle
            if row is not None and row.state in FINAL_STATES and row.partition and row.name != "allocation":
                updates[step_id] = ("final", row)
            elif queued is not None and queued.state in FINAL_STATES:
                updates[step_id] = ("ended", queued)  # accounting not written yet: exit code next cycle
            elif queued is not None:
                updates[step_id] = ("live", queued)
            elif row is not None and row.state not in FINAL_STATES:
                updates[step_id] = ("live", row)
            else:
                updates[step_id] = ("missing", None)
        self._apply(updates, stats)

    def _apply(self, updates: dict[int, tuple[str, Job | None]], stats: CycleStats) -> None:
        with self.sessions() as session:
            for step_id, (kind, job) in updates.items():
                step = session.get(m.WorkflowStep, step_id)
                if step is None or step.state in m.STEP_FINAL:
                    continue
                if kind == "ended":
                    step.missing_cycles += 1
                    if step.missing_cycles < 20:
                        continue
                    kind = "final"  # accounting never came: take squeue's state, exit code unknown
                if kind == "missing":
                    step.missing_cycles += 1
                    if step.missing_cycles >= self.settings.lost_after_cycles:
                        stats.transitions += m.set_step_state(session, step, "LOST",
                                                              f"job {step.job_id} is in neither squeue nor sacct")
                        step.ended_at = utcnow()
                    continue
                step.missing_cycles = 0
                if job.nodes and job.nodes not in ("None assigned", "(null)"):
                    step.nodes = job.nodes
                state = job.state
                if kind == "live":
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
            session.commit()

    def _evaluate(self, cluster: Cluster, stats: CycleStats) -> None:
        """Instance states from step states: failure (with log tail), completion (-> staging out), cancel."""
        failed_instances: list[tuple[str, set[str]]] = []
        with self.sessions() as session:
            for inst in m.live_instances(session, cluster.id):
                if inst.state in m.DRIVER_STATES or inst.state == m.STAGING_OUT or self.owned(inst.id):
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
                    self._fail_instance(session, inst, reason, cancel_jobs=True)
                    stats.transitions += 1
                    failed_instances.append((inst.id, {s.name for s in steps if s.started_at is not None}))
                    continue
                if all(s.state == "COMPLETED" for s in steps):
                    stats.transitions += m.set_instance_state(session, inst, m.STAGING_OUT, "every step completed")
                    session.commit()
                    self.pool.submit(self.finish, inst.id)
                    continue
                target = m.RUNNING if any(s.state == "RUNNING" for s in steps) else (
                    m.RUNNING if any(s.state == "COMPLETED" for s in steps) else m.QUEUED)
                stats.transitions += m.set_instance_state(session, inst, target, "")
            session.commit()
        for instance_id, ran in failed_instances:  # a failed run's energy and memory were spent all the same
            self.pool.submit(self._record_peak_memory, instance_id)
            if self.settings.energy_command:
                self.pool.submit(self._ingest_ran_steps_energy, instance_id, ran)

    def _log_tail(self, cluster: Cluster, inst: m.WorkflowInstance, step: str) -> str:
        try:
            return read_tail(owner_connector(cluster, inst.cluster_login), f"{inst.work_dir}/{log_path(step)}",
                             self.settings.log_tail_bytes)
        except (ClusterError, OSError) as exc:
            return f"(log unavailable: {exc})"

    # --- staging out -----------------------------------------------------------------------------------
    def finish(self, instance_id: str) -> None:
        """Copy outputs (globs) and logs to the user's bucket, then COMPLETED. Re-run safely after a crash."""
        if not self._claim(instance_id):
            return
        try:
            self._finish(instance_id)
        except Exception as exc:  # noqa: BLE001
            if _transient(exc) or isinstance(exc, ApiError) and exc.status == 503:
                log.warning("workflow %s: staging out failed, retried next cycle: %s", instance_id, exc)
            else:
                with self.sessions() as session:
                    inst = session.get(m.WorkflowInstance, instance_id)
                    if inst is not None and inst.state == m.STAGING_OUT:
                        self._fail_instance(session, inst, f"staging out failed: {api_error_text(exc)}")
                        session.commit()
        finally:
            self._release(instance_id)

    def _finish(self, instance_id: str) -> None:
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            if inst is None or inst.state != m.STAGING_OUT:
                return
            cluster = cluster_by_id(session, None, inst.cluster_id)
            session.expunge(cluster)
            template = Template.model_validate(session.get(m.WorkflowTemplate, inst.template_id).spec)
            work_dir, login, bucket, prefix = inst.work_dir, inst.cluster_login, inst.output_bucket, inst.output_prefix
            org = inst.organization
        conn = owner_connector(cluster, login)
        entries = self.staging.walk(conn, work_dir)
        chosen = [e for e in entries if outputs_match(template.outputs, e.path) or e.path.startswith("logs/")]
        room = self.staging.room(org)
        total = sum(e.size for e in chosen)
        if room is not None and total > room:
            raise ApiError(f"the outputs ({total} bytes) do not fit in the organization's quota ({room} left)",
                           status=413)
        stored = []
        for entry in chosen:
            key = f"{prefix}{entry.path}"
            self.staging.stage_out(conn, f"{work_dir}/{entry.path}", bucket, key)
            stored.append({"key": key, "size": entry.size})
        if self.settings.energy_command:
            for step in template.steps:
                if step.energy:
                    self._ingest_step_energy(instance_id, conn, cluster.name, work_dir, step.name)
        self._record_peak_memory(instance_id, cluster)
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            inst.outputs = stored
            inst.exit_code = 0
            m.set_instance_state(session, inst, m.COMPLETED, f"{len(stored)} file(s) staged to {bucket}/{prefix}")
            session.commit()

    # --- what finished steps used ----------------------------------------------------------------------
    def _record_peak_memory(self, instance_id: str, cluster: Cluster | None = None) -> None:
        """Each step's peak memory (largest MaxRSS of its Slurm steps) from the accounting, with one ``sacct``
        as the service account: the history right-sizing learns memory from. Read when the instance ends,
        when the accounting of its jobs is settled; a failure is logged and leaves the peaks unknown."""
        try:
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                if inst is None:
                    return
                jobs = {s.job_id: s.id for s in inst.steps if s.job_id and s.started_at is not None}
                if cluster is None:
                    cluster = cluster_by_id(session, None, inst.cluster_id)
                    session.expunge(cluster)
            if not jobs:
                return
            peaks = SlurmClient(service_connector(cluster), timeout=60).peak_memory(list(jobs))
            with self.sessions() as session:
                for job_id, step_id in jobs.items():
                    step = session.get(m.WorkflowStep, step_id)
                    if step is not None and job_id in peaks:
                        step.max_rss_mb = peaks[job_id]
                session.commit()
        except Exception as exc:  # noqa: BLE001 - a missing peak must never fail or stall the workflow
            log.warning("workflow %s: peak memory of its steps not recorded: %s", instance_id, exc)

    def _ingest_ran_steps_energy(self, instance_id: str, ran: set[str]) -> None:
        """Energy of the steps of a FAILED instance that did start (the collector writes its record
        whatever the step's exit status)."""
        try:
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                cluster = cluster_by_id(session, None, inst.cluster_id) if inst is not None else None
                if cluster is None:
                    return
                session.expunge(cluster)
                template = Template.model_validate(session.get(m.WorkflowTemplate, inst.template_id).spec)
                work_dir, login = inst.work_dir, inst.cluster_login
            conn = owner_connector(cluster, login)
            for step in template.steps:
                if step.energy and step.name in ran:
                    self._ingest_step_energy(instance_id, conn, cluster.name, work_dir, step.name)
        except Exception as exc:  # noqa: BLE001 - never let energy disturb the reconciler
            log.warning("workflow %s: energy of the failed instance not ingested: %s", instance_id,
                        api_error_text(exc))

    def _ingest_step_energy(self, instance_id: str, conn: ClusterConnector, cluster: str, work_dir: str,
                            step: str) -> None:
        """Fetch the files the collector wrote for ``step`` and ingest them for the instance's owner; the
        outcome is an event of the step. Energy is a by-product: a missing or refused file never fails the
        workflow (ingestion skips rows already stored, so a re-run after a crash adds nothing)."""
        from ..energy.service import MAX_FILES, ingest_for_owner

        try:
            files = fetch_energy_files(conn, f"{work_dir}/{energy_dir(step)}", self.settings.energy_max_file_bytes,
                                       MAX_FILES)
        except (ClusterError, OSError, ValueError) as exc:
            self._energy_event(instance_id, step, f"energy not ingested: cannot fetch the step's files: "
                                                  f"{api_error_text(exc)}")
            return
        if not files:
            self._energy_event(instance_id, step, f"energy not ingested: the collector left no file in "
                                                  f"{energy_dir(step)}")
            return
        try:
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                result = ingest_for_owner(session, organization=inst.organization, username=inst.username,
                                          files=files, cluster=cluster, instance_id=instance_id)
                session.add(_event(inst, step, f"energy ingested from {len(files)} file(s): {result['stored']} "
                                               f"node record(s), {result['samples_stored']} sample(s) stored, "
                                               f"{result['duplicates']} already known"))
                session.commit()
        except Exception as exc:  # noqa: BLE001 - energy must never fail the workflow: record why, go on
            log.warning("workflow %s: energy of step %s not ingested: %s", instance_id, step, api_error_text(exc))
            self._energy_event(instance_id, step, f"energy not ingested: {api_error_text(exc)}")

    def _energy_event(self, instance_id: str, step: str, detail: str) -> None:
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            if inst is not None:  # deleted meanwhile: nothing to record on
                session.add(_event(inst, step, detail))
                session.commit()


def _event(inst: m.WorkflowInstance, step: str, detail: str) -> m.WorkflowEvent:
    """An event that records something about a step without changing the instance's state."""
    return m.WorkflowEvent(instance_id=inst.id, step=step, from_state=inst.state, to_state=inst.state,
                           detail=detail[:4000])


@lru_cache(maxsize=1)
def collector_zipapp() -> bytes:
    """heroes_energy as an executable zip (``python3 heroes_energy.pyz --out DIR -- CMD``): only the
    standard library is needed on the cluster, and the step's own PYTHONPATH is left alone."""
    import heroes_energy

    package = Path(heroes_energy.__file__).parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__main__.py", "import sys\nfrom heroes_energy.collect import main\nsys.exit(main())\n")
        for source in sorted(package.glob("*.py")):
            archive.write(source, f"heroes_energy/{source.name}")
    return buffer.getvalue()


def fetch_energy_files(conn: ClusterConnector, folder: str, max_bytes: int, max_files: int = 100) -> dict[str, bytes]:
    """The regular ``*.csv`` files of a step's energy folder (name -> content; symlinks are not followed); {}
    when the folder is absent. The step writes that folder, so ValueError when the files exceed ``max_bytes``
    in all or ``max_files`` in number: everything is held in memory for the ingestion."""
    with conn.sftp() as sftp:
        try:
            entries = sftp.listdir_attr(folder)
        except FileNotFoundError:
            return {}
        chosen = sorted((e for e in entries if e.filename.endswith(".csv") and stat.S_ISREG(e.st_mode or 0)),
                        key=lambda e: e.filename)
        total = sum(e.st_size or 0 for e in chosen)
        if len(chosen) > max_files or total > max_bytes:
            raise ValueError(f"{len(chosen)} file(s) of {total} bytes in all, more than the {max_files} files or "
                             f"{max_bytes} bytes fetched for ingestion")
        files: dict[str, bytes] = {}
        for entry in chosen:
            with sftp.open(f"{folder}/{entry.filename}", "rb") as handle:
                handle.prefetch(entry.st_size)
                data = handle.read(max_bytes + 1)
            max_bytes -= len(data)
            if max_bytes < 0:
                raise ValueError(f"{entry.filename} grew past the {total} bytes listed while it was read")
            files[entry.filename] = data
    return files


# --- cluster helpers ------------------------------------------------------------------------------------
def _mkdirs(conn: ClusterConnector, folders: list[str]) -> None:
    """``mkdir -p`` over SFTP (no shell): each missing component is created in order."""
    with conn.sftp() as sftp:
        made: set[str] = set()
        for folder in folders:
            parts = folder.split("/")
            for i in range(1, len(parts) + 1):
                path = "/".join(parts[:i])
                if not path or path in made:
                    continue
                try:
                    sftp.stat(path)
                except FileNotFoundError:
                    try:
                        sftp.mkdir(path, 0o750)
                    except OSError:
                        sftp.stat(path)  # created concurrently by another instance: fine
                made.add(path)


def read_tail(conn: ClusterConnector, path: str, size: int) -> str:
    with conn.sftp() as sftp:
        try:
            with sftp.open(path, "rb") as handle:
                total = handle.stat().st_size or 0
                handle.seek(max(0, total - size))
                return handle.read(size).decode(errors="replace")
        except FileNotFoundError:
            return ""


def find_job(conn: ClusterConnector, name: str, workdir: str, step: str) -> str | None:
    """The job id of a step whose sbatch may have run, looked up by its unique name (three sources)."""
    slurm = SlurmClient(conn, timeout=60)
    ids = {j.job_id for j in slurm.queue(name=name, user=conn.login) if j.name == name}
    if not ids:
        ids = {j.job_id for j in slurm.accounting(name=name, user=conn.login, since="now-7days") if j.name == name}
    if not ids:
        try:
            with conn.sftp() as sftp, sftp.open(f"{workdir}/.heroes/{step}.jobid", "r") as handle:
                text = handle.read().decode().strip()
                if text.isdigit():
                    ids = {text}
        except FileNotFoundError:
            pass
    if len(ids) > 1:
        log.error("duplicate jobs named %s: %s (keeping the first)", name, sorted(ids))
    return min(ids, key=int) if ids else None


__all__ = ["WorkflowEngine", "CycleStats", "owner_connector", "find_job", "read_tail"]
