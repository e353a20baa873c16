"""The driver: NEW -> STAGING_IN -> SUBMITTING -> QUEUED, one instance at a time per thread.

Before each ``sbatch`` the step is committed as SUBMITTING with its job name (the intent). If the service dies,
or the SSH channel drops, between that commit and the job id's commit, the next driver run looks the job up BY
NAME (``clusterjobs.submit.find_by_name``: ``squeue --name``, ``sacct --name``, then the job's own
``.heroes/<step>.jobid`` file) and adopts it; only when none of the three knows it is the step submitted again.
Submission itself is the one path of every cluster job (``clusterjobs.submitter``, ``clusterjobs.submit``).

Why the driver is a loop of transactions: each commit is a round trip to the database, and each SSH command
one to the cluster, so the driver writes what it learnt (a job id) and what it will do next (the next
state, the next step's intent) in ONE commit, then does one cluster command. An instance with nothing to
upload (no input files, no template files) costs two commits and one SSH command per step, and the login
node works while the service does: at submission the submitter is started (``clusterjobs.submitter``, mostly
a spare already waiting) as soon as the instance's folder is known, and makes the folders and links the
energy collector while the instance is recorded; each step's options follow with its intent, so sbatch is
up before its script is sent after the commit; the next transaction reads the instance while sbatch
submits, then takes the job id. Every step's submitter makes the folders again, so a step submitted again
after a crash finds them whatever happened before; the sequential way (``cluster_files.prepare_argv`` in
front of ``sbatch_once``) is left for when the submitter cannot be started early. What a drive carries
between its transactions, and the actions it takes, are in ``actions.py``; a submission's last job id takes
the short way of ``recorded.py`` (no read of what the driver already holds).
"""
from __future__ import annotations

import io
import logging
import time
from concurrent.futures import Future
from functools import partial
from typing import Callable

from ..clusterjobs.submit import owner_connector, owner_principal, sbatch_once
from ..clusterjobs.submitter import StartedSubmission
from ..clusters.connector import ClusterConnector
from ..clusters.models import Cluster, cluster_by_id
from . import models as m
from .actions import (Adopt, CollectorGone, Run, Sent, Stage, Submit, abandon, find_job, is_transient, preparing,
                      utcnow)
from .cluster_files import mkdirs
from .recorded import EVERY_STEP_SUBMITTED, SUBMITTED, Recorded, queue_recorded
from .render import render
from .staging import StagingCancelled, api_error_text, earlier_transfers, record_transfer
from .templates import Template, staged_path

log = logging.getLogger("heroes_service.workflows")

class DriverMixin:
    """The driver half of ``WorkflowEngine`` (needs ``sessions``, ``pool``, ``staging``, ownership, ``context``,
    ``_drives`` and ``_drive_lock``)."""

    # --- the driver ----------------------------------------------------------------------------------
    def start_drive(self, instance_id: str) -> Future | None:
        """Drive ``instance_id`` on the pool; the future of the drive already under way when there is one (a
        caller waiting for the submission waits for the thread working on it, whoever started it); None
        when another kind of work (finishing) owns it."""
        with self._drive_lock:
            running = self._drives.get(instance_id)
            if running is not None and not running.done():
                return running
            if self.owned(instance_id):
                return None
            return self._track_drive(instance_id, self.pool.submit(self.drive, instance_id))

    def submit_recorded(self, record: Callable[[Callable], str],
                        then: Callable[[object, str], object] | None = None) -> tuple[str, Future]:
        """Record a submission and plan its first cluster command in ONE commit, then drive it on the pool.

        ``record(plan)`` validates and adds the instance (``submission.record_submission``) and calls
        ``plan(session, instance)`` just before its commit: the instance is this driver's from before anyone
        can see it (the reconciler's tracker never drives it meanwhile), and its first states and first
        step's intent go into the same commit as the instance itself. The future's result is ``then(session,
        id)``, the caller's answer, made in the drive's last transaction (the rows are loaded there already)
        or after it, or None without ``then``."""
        planned: dict = {}

        def early(conn: ClusterConnector, cluster: Cluster, template: Template, work_dir: str) -> None:
            planned["started"] = self._start_preparing(conn, cluster, template, work_dir)

        def plan(session, inst: m.WorkflowInstance, cluster: Cluster | None = None,
                 template: Template | None = None, conn: ClusterConnector | None = None) -> None:
            self._claim(inst.id)   # a new id: always ours
            planned.update(id=inst.id, run=None, action=None)
            try:
                planned["run"] = run = self._load(session, inst, cluster, template, conn)
                if run is not None:
                    run.started = planned.pop("started", None)
                planned["action"] = self._next_action(session, inst, run) if run is not None else None
                if run is not None:
                    run.recorded = Recorded.pending_in(session, inst)
            except Exception:  # noqa: BLE001 - the drive plans again and records the failure on the instance
                log.exception("workflow %s: planning at submission failed", inst.id)
                planned.update(run=None, action=None)

        try:
            instance_id = record(plan, early)
        except BaseException:
            for started in (planned.get("started"), getattr(planned.get("run"), "started", None)):
                if started is not None:
                    started.abandon()
            abandon(planned.get("action"))
            if "id" in planned:
                self._release(planned["id"])
            raise
        run, action = planned["run"], planned["action"]
        if run is not None and run.started is not None:   # prepared early, but the first action is no sbatch
            run.started.abandon()
            run.started = None

        def work():
            reply = self.drive(instance_id, run=run, action=action, claimed=True, answer=then)
            if reply is None and then is not None:   # the drive failed or stopped early: read what it left
                with self.sessions() as session:
                    reply = then(session, instance_id)
            return reply

        with self._drive_lock:
            return instance_id, self._track_drive(instance_id, self.pool.submit(work))

    def _track_drive(self, instance_id: str, future: Future) -> Future:
        """Keep ``future`` as the drive under way of ``instance_id`` until it ends (call with the lock)."""
        self._drives[instance_id] = future
        future.add_done_callback(partial(self._drive_done, instance_id))
        return future

    def _drive_done(self, instance_id: str, future: Future) -> None:
        with self._drive_lock:
            if self._drives.get(instance_id) is future:
                del self._drives[instance_id]

    def drive(self, instance_id: str, *, run: Run | None = None, action=None, claimed: bool = False,
              answer: Callable[[object, str], object] | None = None):
        """Stage inputs and submit every step not yet submitted. Idempotent; safe to call after a crash.
        ``claimed``: the caller owns the instance already (``submit_recorded``), with ``run`` and the
        ``action`` it committed. Returns ``answer(session, id)`` made in the last transaction (else None)."""
        if not claimed and not self._claim(instance_id):
            return None
        try:
            reply = self._drive(instance_id, run, action, answer)
            self._failures.pop(instance_id, None)
            self._retry_at.pop(instance_id, None)
            return reply
        except StagingCancelled:
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                self._finish_cancel(session, inst)
                session.commit()
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, transient ones retried
            self._driver_failed(instance_id, exc)
        finally:
            self._release(instance_id)
        return None

    def _driver_failed(self, instance_id: str, exc: Exception) -> None:
        transient = is_transient(exc)
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

    def _drive(self, instance_id: str, run: Run | None = None, action=None, answer=None):
        """The committed ``action`` (else the first one a transaction records), then one transaction (record
        what the cluster command gave, decide and record the next action) per cluster command, until nothing
        is left to do. Returns the last transaction's ``answer``."""
        reply = None
        if action is None:
            run, action, reply = self._transaction(instance_id, run, None, answer)
        while action is not None:
            try:
                done = self._act(instance_id, run, action)
                try:
                    run, following, reply = self._transaction(instance_id, run, done, answer)
                except CollectorGone:
                    done = self._sbatch_after_upload(run, action)
                    run, following, reply = self._transaction(instance_id, run, done, answer)
            finally:
                abandon(action)
            action = following
        return reply

    def _transaction(self, instance_id: str, run: Run | None, done: tuple[str, str, str] | Sent | None,
                     answer=None):
        """One commit: ``done`` (step, job id, detail) of the last cluster command, and the next action; when
        none is left, ``answer(session, id)`` too (before the commit: what it shows is what is committed, and
        a failed commit raises instead). ``done`` may be a script ``Sent`` to sbatch: the instance and its
        steps are read while sbatch submits it, then its job id is awaited and the instance's state read again
        (a cancel requested meanwhile is seen). The job id of an instance still as its submission recorded it
        goes the short way of ``recorded.py`` when it can."""
        recorded = run.recorded if run is not None else None
        if recorded is not None:
            run.recorded = None   # used once: from then on, what the driver knows is read from the rows
            if isinstance(done, Sent):
                done = done.result(run)
            if done is not None and queue_recorded(self.sessions, recorded, *done):
                reply = self._answer(answer, None, instance_id, recorded) if answer is not None else None
                return run, None, reply
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            if inst is None:
                return run, None, None
            if isinstance(done, Sent):
                inst.steps  # noqa: B018 - loaded while sbatch works
                done = done.result(run)
                session.refresh(inst, ["state", "cancel_requested"])
            if done is not None:
                step = next(s for s in inst.steps if s.name == done[0])
                step.job_id = done[1]
                m.set_step_state(session, step, SUBMITTED, done[2])
            action = None
            if inst.state in m.DRIVER_STATES:
                if run is None:
                    run = self._load(session, inst)
                if run is not None:
                    action = self._next_action(session, inst, run)
            reply = self._answer(answer, session, instance_id) if action is None and answer is not None else None
            try:
                session.commit()
            except BaseException:
                abandon(action)
                raise
        return run, action, reply

    @staticmethod
    def _answer(answer, session, instance_id: str, recorded: Recorded | None = None):
        """The caller's answer, never at the cost of the commit it rides with (None: it is read afterwards);
        made from ``recorded`` (no session) when the short way committed it."""
        try:
            return answer(session, instance_id, recorded) if recorded is not None else answer(session, instance_id)
        except Exception:  # noqa: BLE001 - the job ids must be committed whatever the answer does
            log.exception("workflow %s: the answer failed in the driver's transaction", instance_id)
            return None

    def _load(self, session, inst: m.WorkflowInstance, cluster: Cluster | None = None,
              template: Template | None = None, conn: ClusterConnector | None = None) -> Run | None:
        """What a drive needs; ``cluster``, ``template`` and the owner's ``conn`` when the caller has them at
        hand (a submission)."""
        if cluster is None:
            cluster = cluster_by_id(session, None, inst.cluster_id)
            if cluster is None:
                self._fail_instance(session, inst, "the cluster was deleted")
                return None
            session.expunge(cluster)
        ctx, template = self.context(session, inst, cluster, template)
        conn = conn or owner_connector(cluster, inst.cluster_login, owner_principal(inst), user_id=inst.user_id)
        uploads = bool(template.files) or any(p.type == "file" and p.name in ctx.values for p in template.parameters)
        needs_collector = self._needs_collector(template)
        return Run(cluster=cluster, ctx=ctx, template=template, conn=conn, uploads=uploads,
                    needs_collector=needs_collector)

    def _needs_collector(self, template: Template) -> bool:
        return any(step.energy for step in template.steps) and \
            any("{collector}" in e for e in self.settings.energy_command)

    def _start_preparing(self, conn: ClusterConnector, cluster: Cluster, template: Template,
                         work_dir: str) -> StartedSubmission | None:
        """At submission, before anything is written: the submitter started on the login node, making the
        instance's folders and linking the collector while the service records the instance (None: the
        first sbatch's way makes them). Only when nothing is staged first, on a connection that is up and with
        the account's collector known: this runs while the user waits for the answer, so it never connects
        or uploads."""
        if template.files or any(p.type == "file" for p in template.parameters):
            return None
        return preparing(conn, cluster.id, work_dir, self._needs_collector(template))

    def _next_action(self, session, inst: m.WorkflowInstance, run: Run):
        """Record the next state or intent on ``inst`` (the caller commits) and say what to do on the cluster."""
        if inst.cancel_requested:
            self._finish_cancel(session, inst)
            return None
        if inst.state in (m.NEW, m.STAGING_IN):
            m.set_instance_state(session, inst, m.STAGING_IN, "staging inputs")
            if run.uploads and not run.staged:
                return Stage()
            m.set_instance_state(session, inst, m.SUBMITTING, "submitting steps" if run.uploads else
                                 "submitting steps (nothing to upload: the first sbatch's command makes the folders)")
        rows = {s.name: s for s in inst.steps}
        spec = next((s for s in run.template.ordered_steps() if not rows[s.name].job_id), None)
        if spec is None:
            m.set_instance_state(session, inst, m.QUEUED, EVERY_STEP_SUBMITTED)
            return None
        step = rows[spec.name]
        if step.state == m.STEP_SUBMITTING and step.name not in run.cleared:
            # an earlier attempt recorded the intent: the job may exist. Never submit blindly.
            return Adopt(step.name, step.job_name)
        deps = [rows[d].job_id for d in spec.depends_on]
        if any(not d for d in deps):
            raise RuntimeError(f"step {spec.name}: a dependency has no job id")
        script, options = render(run.ctx, spec, deps)
        step.script, step.options = script, options
        step.submitted_at = utcnow()
        m.set_step_state(session, step, m.STEP_SUBMITTING, "intent recorded; sbatch next")
        return Submit(step.name, script, options, run.start_submission(options))

    def _act(self, instance_id: str, run: Run, action) -> tuple[str, str, str] | Sent | None:
        """The one cluster conversation of ``action``; (step, job id, detail) when it gave a job id, ``Sent``
        when the script went to a started sbatch (the next transaction reads the job id)."""
        if isinstance(action, Stage):
            self._stage_in(instance_id, run)
            run.staged = True
            return None
        if isinstance(action, Adopt):
            found = find_job(run.conn, action.job_name, run.ctx.workdir, action.step)
            if found:
                return action.step, found, f"job {found} found by name {action.job_name}; not resubmitted"
            run.cleared.add(action.step)
            return None
        # a drop mid-command raises: the step stays SUBMITTING for adoption by name
        if action.started is not None:
            action.started.send(action.script)   # its job id is awaited in the next transaction
            return Sent(action)
        job_id = run.prepared(lambda prepare: sbatch_once(run.conn, action.script, action.options,
                                                          prepared_by=prepare))
        return action.step, job_id, f"sbatch -> job {job_id}"

    @staticmethod
    def _sbatch_after_upload(run: Run, action: Submit) -> tuple[str, str, str]:
        """The account's collector was gone, so the submitter stopped before sbatch: upload it again and
        submit the sequential way."""
        log.info("the collector of %s on %s was gone: uploaded again", run.conn.login, run.conn.cluster)
        run.prepare(again=True)
        job_id = run.prepared(lambda prepare: sbatch_once(run.conn, action.script, action.options,
                                                          prepared_by=prepare))
        return action.step, job_id, f"sbatch -> job {job_id}"

    def _cancelled(self, instance_id: str) -> bool:
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            return inst is None or inst.cancel_requested

    def _stage_in(self, instance_id: str, run: Run) -> None:
        """The instance dir (one command, with the collector), the template's files and every input file
        (idempotent: rewritten whole)."""
        ctx, template, conn = run.ctx, run.template, run.conn
        run.prepared(lambda prepare: conn.run(prepare, timeout=60).check())
        inputs = [p.name for p in template.parameters if p.type == "file" and p.name in ctx.values]
        if inputs:
            mkdirs(conn, [f"{ctx.workdir}/inputs", *(f"{ctx.workdir}/inputs/{name}" for name in inputs)])
        for name, text in template.files.items():
            conn.put_stream(io.BytesIO(text.encode()), f"{ctx.workdir}/{name}")
        for param in template.parameters:
            if param.type != "file" or param.name not in ctx.values:
                continue
            if self._cancelled(instance_id):
                raise StagingCancelled()
            ref = ctx.values[param.name]
            remote = f"{ctx.workdir}/{staged_path(param.name, ref['key'])}"
            staged = self.staging.stage_in_measured(conn, ref, remote, earlier_transfers(self.sessions, instance_id))
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                if inst is not None:   # the measured S3 -> cluster throughput, for the decision's staging time
                    record_transfer(session, organization=inst.organization, cluster_id=inst.cluster_id,
                                    instance_id=instance_id, ref=ref, staged=staged, remote_path=remote)
                session.add(m.WorkflowEvent(instance_id=instance_id, from_state=m.STAGING_IN, to_state=m.STAGING_IN,
                                            detail=f"staged input {param.name} ({staged.size} bytes)"))
                session.commit()
