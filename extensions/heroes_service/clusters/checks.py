"""The Admin app's "test connection": everything ``service.run_checks`` probes, plus what a workflow needs
next (``sbatch`` accepts a job, ``sacct`` answers from the accounting database), and the partitions the
cluster offers right now (the edit form lists them).

Why two more checks: a login node can accept SSH and answer ``sinfo`` while ``sbatch`` is refused (no
account or QOS for the login, a partition closed to it) or ``slurmdbd`` is down; both surface only when a
user's first workflow fails. ``sbatch --test-only`` asks the scheduler without queueing anything.
"""
from __future__ import annotations

from . import identity
from .config import ClustersSettings, get_clusters_settings
from .connector import ClusterConnector
from .models import Cluster
from .service import Report, probe_connector, run_checks
from .slurm import Partition, SlurmClient

READINESS_ONLY = ("sbatch", "accounting")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def sbatch_test(conn: ClusterConnector, cluster: Cluster, work_dir: str) -> str:
    """``sbatch --test-only`` of a one-minute job in the default partition (nothing is queued)."""
    argv = ["sbatch", "--test-only", "--job-name=heroes-probe", "--time=1", "--ntasks=1", "--output=/dev/null",
            f"--chdir={work_dir}"]
    if cluster.default_partition:
        argv.append(f"--partition={cluster.default_partition}")
    result = conn.run([*argv, "--wrap", "true"], timeout=30).check()
    return _first_line(result.stderr or result.stdout) or "sbatch accepted a test job"


def accounting_test(conn: ClusterConnector) -> str:
    """``sacct`` for the last day: it fails when the accounting database (slurmdbd) does not answer."""
    rows = conn.run(["sacct", "--noheader", "--parsable2", "-X", "-o", "JobID", "--starttime", "now-1days"],
                    timeout=30).check().stdout.split()
    return f"sacct answers ({len(rows)} job(s) of this login in the last day)"


def readiness(cluster: Cluster, login: str, mode: str, settings: ClustersSettings | None = None) -> Report:
    """``run_checks`` and then sbatch and accounting, as ``login`` in ``mode``; skipped when login failed."""
    settings = settings or get_clusters_settings()
    report = run_checks(cluster, login, mode, settings=settings)
    logged_in = any(c.name == "authentication" and c.ok for c in report.checks)
    if not logged_in:
        for name in READINESS_ONLY:
            report.skip(name, "authentication failed or was not tried")
        return report
    conn = probe_connector(cluster, login, mode, settings)
    try:
        report.step("sbatch", lambda: sbatch_test(conn, cluster, cluster.work_dir_for(login)))
        report.step("accounting", lambda: accounting_test(conn))
    finally:
        conn.close()
    return report


def live_partitions(cluster: Cluster, login: str, mode: str,
                    settings: ClustersSettings | None = None) -> list[Partition]:
    """What ``sinfo`` lists now (ClusterError and friends propagate: the route says why it cannot)."""
    settings = settings or get_clusters_settings()
    conn = probe_connector(cluster, login, mode, settings)
    try:
        return SlurmClient(conn, timeout=30).partitions()
    finally:
        conn.close()


def login_for(cluster: Cluster, principal) -> tuple[str, str]:
    """(login, mode) an admin's probe uses: the service account, else the admin's own cluster login
    (``NoClusterAccess`` when the admin has none)."""
    if cluster.identity_mode == identity.SERVICE_ACCOUNT:
        return cluster.service_login, identity.SERVICE_ACCOUNT
    return identity.cluster_login(principal), identity.PER_USER
