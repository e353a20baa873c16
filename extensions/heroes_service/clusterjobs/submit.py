"""The one submit path: ``sbatch`` at most once per recorded intent.

The caller commits the intent (its row in SUBMITTING, with the job's unique name) BEFORE calling
``sbatch_once``; if the SSH channel drops, or the service dies, between that commit and the job id's
commit, the job may or may not exist. ``find_by_name`` then asks Slurm by that name (``squeue --name``,
then ``sacct --name``) and the caller adopts what it finds; only when neither knows the name may the
intent be submitted again. Nothing here touches the database: the intent belongs to the caller's table.
"""
from __future__ import annotations

import logging

from ..clusters.connector import ClusterConnector, build_command
from ..clusters.identity import PER_USER, SERVICE_ACCOUNT, connector_as
from ..clusters.errors import CommandFailed
from ..clusters.slurm import SlurmClient, parse_job_id
from ..errors import Unavailable
from .submitter import start_submission

log = logging.getLogger("heroes_service.clusterjobs")


def owner_principal(row) -> str | None:
    """The gateway principal ``<username>@<organization>`` of the user a row (a workflow instance, a cluster
    job, a desktop session) belongs to; None when the row names no organization."""
    username, organization = getattr(row, "username", ""), getattr(row, "organization", "")
    return f"{username}@{organization}" if username and organization else None


def owner_connector(cluster, login: str, acting_for: str | None = None, *, user_id: str = "") -> ClusterConnector:
    """The account a job and its files belong to (the user's own login in per-user mode).

    ``acting_for``: the owner's gateway principal (``owner_principal(row)``), which the certificate names.
    Pass it: without it the principal is guessed from what this process resolved before and what an
    embedded login node publishes, which a fresh process on a real site does not know."""
    if cluster.identity_mode == PER_USER:
        return connector_as(cluster, login, mode=PER_USER, acting_for=acting_for, user_id=user_id)
    return connector_as(cluster, cluster.service_login, mode=SERVICE_ACCOUNT)


def sbatch_once(conn: ClusterConnector, script: str, options: list[str] | tuple[str, ...] = (),
                timeout: float = 60, *, prepared_by: list[str] | tuple[str, ...] = ()) -> str:
    """``sbatch --parsable [options]`` with the script on stdin; the job id. Call only after the intent is
    committed: a drop mid-command raises and leaves the intent for ``find_by_name``.

    It goes through the submitter (``submitter.py``), taking a spare that has sbatch running already when one
    is ready. Callers that can start the submitter before their intent's commit do so themselves
    (``ClusterJobs.submit``, the workflow driver) and call this only when that start failed.

    ``prepared_by``: an argv of ours that ends by running the argv after it (``exec "$@"``, e.g. making the
    job's folders first, ``workflows.cluster_files.prepare_argv``), so the folders and the submission cost one
    SSH command, not two. Its own refusal (a non-zero exit before sbatch ran) raises ``CommandFailed`` with
    its exit status, like sbatch's."""
    if not prepared_by:
        started = start_submission(conn, options_in_script=not options)
        if options:
            started.options(list(options))
        return started.submit(script, timeout)
    sbatch = ["sbatch", "--parsable", *options]
    result = conn.run([*prepared_by, *sbatch], stdin=script, timeout=timeout)
    if result.rc != 0:  # named by the sbatch part: the fixed preparation text tells a reader nothing
        raise CommandFailed(build_command(sbatch), result.rc, result.stderr or result.stdout)
    return parse_job_id(result.stdout)


def find_by_name(conn: ClusterConnector, name: str, *, extra_ids: set[str] | None = None) -> str | None:
    """The job id of the job named ``name`` of the connector's account (None: Slurm does not know it).

    ``extra_ids`` are ids from the caller's own evidence (a job-id file the job wrote). Two jobs of one name
    mean a duplicate slipped through elsewhere: logged, the oldest kept."""
    slurm = SlurmClient(conn, timeout=60)
    ids = {j.job_id for j in slurm.queue(name=name, user=conn.login) if j.name == name}
    if not ids:
        ids = {j.job_id for j in slurm.accounting(name=name, user=conn.login, since="now-7days") if j.name == name}
    if not ids and extra_ids:
        ids = set(extra_ids)
    if len(ids) > 1:
        log.error("duplicate jobs named %s: %s (keeping the first)", name, sorted(ids))
    return min(ids, key=int) if ids else None


def scancel(conn: ClusterConnector, job_id: str, timeout: float = 60) -> None:
    """The one cancel: ``scancel`` as the job's owner. A job Slurm no longer knows is already over (not an
    error); any other refusal raises ``Unavailable``. The caller's reconciler records the final state."""
    result = conn.run(["scancel", job_id], timeout=timeout)
    if not result.ok and "invalid job id" not in (result.stderr or "").lower():
        raise Unavailable(f"scancel failed on {conn.cluster}: {(result.stderr or '').strip()[:200]}")
