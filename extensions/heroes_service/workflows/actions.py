"""What one drive of a workflow instance knows and does between its transactions (``driver.py``).

``Run`` holds the plain values a drive carries from one transaction to the next (no ORM object); the actions
say what the next cluster conversation is: ``Stage`` (put the inputs in place), ``Adopt`` (look a step up by
its job name before anything is submitted again), ``Submit`` (sbatch a step whose intent is committed,
usually into a submitter started before that commit) and ``Sent`` (its script sent; the job id is read in the
transaction that records it). ``find_job`` is the lookup by name after a lost answer.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable


from ..clusterjobs.submit import find_by_name
from ..clusterjobs.submitter import StartedSubmission, start_submission
from ..clusters.connector import ClusterConnector
from ..clusters.errors import ClusterError, ClusterUnreachable, CommandFailed, CommandTimeout
from ..clusters.models import Cluster
from .cluster_files import COLLECTOR_MISSING, account_collector, instance_folders, known_collector, prepare_argv
from .recorded import Recorded
from .render import COLLECTOR_PATH, Context
from .templates import Template

log = logging.getLogger("heroes_service.workflows")

#: sbatch/squeue messages that say "the controller is away", not "your job is wrong": retried
TRANSIENT = ("Unable to contact slurm controller", "Socket timed out", "temporarily unable", "Connection refused",
             "Zero Bytes were transmitted", "slurm_load_jobs error", "Resource temporarily unavailable")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def is_transient(exc: Exception) -> bool:
    if isinstance(exc, (ClusterUnreachable, CommandTimeout)):
        return True
    if isinstance(exc, CommandFailed):
        return any(t.lower() in (exc.stderr or "").lower() for t in TRANSIENT)
    return False


@dataclass
class Run:
    """What one drive of an instance knows between its transactions (plain values, no ORM object)."""

    cluster: Cluster
    ctx: Context
    template: Template
    conn: ClusterConnector
    uploads: bool                  # input or template files to put in place before any sbatch
    needs_collector: bool          # a step runs under the staged energy collector
    staged: bool = False
    collector: str | None = None   # the account's copy, once known (uploaded at most once per account)
    cleared: set[str] = field(default_factory=set)   # SUBMITTING steps Slurm does not know: submit again
    started: StartedSubmission | None = None  # the submitter already making the folders (at submission)
    recorded: Recorded | None = None  # the instance as its submission committed it, until a job id is recorded

    def prepare(self, *, again: bool = False) -> list[str]:
        """The preparation argv (folders, collector) for this instance; uploads the collector when needed."""
        if self.needs_collector and (self.collector is None or again):
            self.collector = account_collector(self.conn, self.cluster.id, again=again)
        return prepare_argv(self.ctx.workdir, self.collector or "", f"{self.ctx.workdir}/{COLLECTOR_PATH}")

    def start_submission(self, options: list[str]) -> StartedSubmission | None:
        """The submitter started on the login node with this instance's folders, collector link and the step's
        options sent: it makes them and starts sbatch while the intent is committed. Called inside the
        transaction, so it does no waiting I/O: None when no connection is up or the account's collector is not
        known to be there yet (the step then goes the sequential way after the commit, which connects, uploads
        and reports failures)."""
        started, self.started = self.started, None
        if started is None:
            started = preparing(self.conn, self.cluster.id, self.ctx.workdir, self.needs_collector)
            if started is None:
                return None
        try:
            started.options(options)
            return started
        except ClusterError as exc:
            started.abandon()
            log.info("sbatch could not be started early on %s (%s): submitting after the intent", self.conn.cluster,
                     exc)
            return None

    def prepared(self, command: Callable[[list[str]], object]):
        """``command(preparation argv)``; when the account's collector was gone, upload it and run once more
        (the preparation stopped before running anything after it)."""
        try:
            return command(self.prepare())
        except CommandFailed as exc:
            if exc.rc != COLLECTOR_MISSING or not self.needs_collector:
                raise
        log.info("the collector of %s on %s was gone: uploaded again", self.conn.login, self.conn.cluster)
        return command(self.prepare(again=True))


@dataclass
class Stage:
    pass


@dataclass
class Adopt:
    step: str
    job_name: str


@dataclass
class Submit:
    step: str
    script: str
    options: list[str]
    started: StartedSubmission | None = None   # sbatch waiting for the script (sent once the intent is committed)


def preparing(conn: ClusterConnector, cluster_id: str, work_dir: str,
              needs_collector: bool) -> StartedSubmission | None:
    """The submitter started with an instance's folders and collector link sent (never connecting); None when
    no connection is up or the account's collector is not known to be there yet (its upload is I/O): the
    caller then submits the sequential way after its commit."""
    collector = known_collector(conn, cluster_id) if needs_collector else ""
    if collector is None:
        return None
    started = None
    try:
        started = start_submission(conn, connect=False)
        started.prepare(instance_folders(work_dir), collector, f"{work_dir}/{COLLECTOR_PATH}")
        return started
    except ClusterError as exc:
        if started is not None:
            started.abandon()
        log.info("the submitter of %s could not be started early (%s): sequential after the commit", work_dir, exc)
        return None


class CollectorGone(Exception):
    """The submitter found the account's collector gone (exit 97): sbatch never ran."""


@dataclass
class Sent:
    """A step's script sent to a started sbatch; its job id is read in the transaction that records it."""

    action: Submit

    def result(self, run: Run) -> tuple[str, str, str]:
        try:
            job_id = self.action.started.job_id()
        except CommandFailed as exc:
            if exc.rc == COLLECTOR_MISSING and run.needs_collector:
                raise CollectorGone() from None
            raise
        return self.action.step, job_id, f"sbatch -> job {job_id}"


def abandon(action) -> None:
    """An action's started submission that will never get its script (a failed commit, a failed drive):
    closed, so sbatch reads an empty input and submits nothing. Harmless after the script was sent."""
    if isinstance(action, Submit) and action.started is not None:
        action.started.abandon()


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
