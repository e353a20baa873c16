"""The driver: NEW -> STAGING_IN -> SUBMITTING -> QUEUED, one instance at a time per thread.

Before each ``sbatch`` the step is committed as SUBMITTING with its job name (the intent). If the service dies,
or the SSH channel drops, between that commit and the job id's commit, the next driver run looks the job up BY
NAME (``clusterjobs.submit.find_by_name``: ``squeue --name``, ``sacct --name``, then the job's own
``.heroes/<step>.jobid`` file) and adopts it; only when none of the three knows it is the step submitted again.
Submission itself is the one path of every cluster job (``clusterjobs.submit.sbatch_once``).
"""
from __future__ import annotations

import io
import logging
import time
from datetime import datetime, timezone

from sqlalchemy import select

from ..clusterjobs.submit import find_by_name, owner_connector, owner_principal, sbatch_once
from ..clusters.connector import ClusterConnector
from ..clusters.errors import ClusterUnreachable, CommandFailed, CommandTimeout
from ..clusters.models import Cluster, cluster_by_id
from . import models as m
from .cluster_files import collector_zipapp, mkdirs
from .render import COLLECTOR_PATH, Context, render
from .staging import StagingCancelled, api_error_text, earlier_transfers, record_transfer
from .templates import Template, staged_path

log = logging.getLogger("heroes_service.workflows")

#: sbatch/squeue messages that say "the controller is away", not "your job is wrong": retried
_TRANSIENT = ("Unable to contact slurm controller", "Socket timed out", "temporarily unable", "Connection refused",
              "Zero Bytes were transmitted", "slurm_load_jobs error", "Resource temporarily unavailable")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)



def _transient(exc: Exception) -> bool:
    if isinstance(exc, (ClusterUnreachable, CommandTimeout)):
        return True
    if isinstance(exc, CommandFailed):
        return any(t.lower() in (exc.stderr or "").lower() for t in _TRANSIENT)
    return False



class DriverMixin:
    """The driver half of ``WorkflowEngine`` (needs ``sessions``, ``pool``, ``staging``, ownership, ``context``)."""

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
            state, login, owner, user_id = inst.state, inst.cluster_login, owner_principal(inst), inst.user_id
        conn = owner_connector(cluster, login, owner, user_id=user_id)
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
        mkdirs(conn, folders)
        for name, text in template.files.items():
            conn.put_stream(io.BytesIO(text.encode()), f"{ctx.workdir}/{name}")
        self._stage_collector(conn, ctx, template)
        for param in template.parameters:
            if param.type != "file" or param.name not in ctx.values:
                continue
            if self._cancelled(instance_id):
                raise StagingCancelled()
            ref = ctx.values[param.name]
            remote = f"{ctx.workdir}/{staged_path(param.name, ref['key'])}"
            staged = self.staging.stage_in_measured(conn, ref, remote, earlier_transfers(self.sessions, instance_id))
            size = staged.size
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                if inst is not None:   # the measured S3 -> cluster throughput, for the decision's staging time
                    record_transfer(session, organization=inst.organization, cluster_id=inst.cluster_id,
                                    instance_id=instance_id, ref=ref, staged=staged, remote_path=remote)
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
            job_id = sbatch_once(conn, script, options)  # a drop mid-command raises: the step stays SUBMITTING
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



def find_job(conn: ClusterConnector, name: str, workdir: str, step: str) -> str | None:
    """The job id of a step whose sbatch may have run: by its unique name, else the id file the job wrote."""
    from_file: set[str] = set()
    try:
        with conn.sftp() as sftp, sftp.open(f"{workdir}/.heroes/{step}.jobid", "r") as handle:
            text = handle.read().decode().strip()
            if text.isdigit():
                from_file = {text}
    except FileNotFoundError:
        pass
    return find_by_name(conn, name, extra_ids=from_file)
