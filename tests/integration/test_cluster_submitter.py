"""The two-half sbatch (``clusterjobs/submitter.py``) and its spares (``clusters/warm.py``) against real Slurm.

* the script written after the start becomes a job with the script's own ``#SBATCH`` name, and options and
  folders sent ahead arrive verbatim (a folder with a space and shell characters is made, an option with one
  reaches sbatch as one argument);
* no script, no job: a submission abandoned after sbatch started, or whose connection drops before the
  script, submits nothing - real sbatch reads an empty input - and leaves no process of ours on the login node;
* spares: after one submission a spare waits on the login node; the next submission takes it (its sbatch
  was running before the call) and the next spare follows once that call's channel closed; an unused
  spare is closed after ``warm_exec_idle_s`` and leaves nothing running; closing the pool (a disabled user)
  closes its spare.
"""
from __future__ import annotations

import time
import uuid

import pytest

from heroes_service.auth import Principal
from heroes_service.clusterjobs.submitter import start_submission
from heroes_service.clusters import identity
from heroes_service.clusters.config import get_clusters_settings
from heroes_service.clusters.connector import ClusterConnector, ConnectionPool
from heroes_service.clusters.errors import CommandFailed
from heroes_service.clusters.slurm import SlurmClient
from cluster_testing import embedded_cluster, isolated_secrets, trust_ca

pytestmark = pytest.mark.integration
BOB = Principal(username="bob", organization="acme", roles=frozenset({"user"}))


@pytest.fixture(scope="module")
def alpha(stack_settings, require):
    for name in ("slurm-alpha", "login-alpha"):
        require(name)
    with isolated_secrets():
        identity.set_cluster_login_resolver(None)
        trust_ca(stack_settings)
        yield embedded_cluster(stack_settings, "alpha")


@pytest.fixture()
def conn(alpha):
    """bob's connector on a pool of its own whose spares live 2 s (the process-wide pool is left alone)."""
    shared = identity.connector_for(alpha, BOB)
    settings = get_clusters_settings().model_copy(update={"warm_exec_idle_s": 2.0})
    pool = ConnectionPool(shared._pool.endpoint, shared._pool.credential, settings)
    yield ClusterConnector(pool)
    pool.close()


@pytest.fixture()
def jobs(conn):
    made: list[str] = []
    yield made
    if made:
        SlurmClient(conn).cancel(made)


def script(name: str) -> str:
    return f"#!/bin/sh\n#SBATCH --job-name={name}\n#SBATCH --time=1\n#SBATCH --mem=64M\n#SBATCH --hold\n" \
           f"#SBATCH --output=/dev/null\ntrue\n"


def named(conn, name: str) -> list[str]:
    """Job ids Slurm knows (queue or accounting) under ``name`` for bob."""
    slurm = SlurmClient(conn)
    ids = {j.job_id for j in slurm.queue(name=name, user="bob") if j.name == name}
    ids |= {j.job_id for j in slurm.accounting(name=name, user="bob", since="now-1hour") if j.name == name}
    return sorted(ids)


def our_processes(conn) -> list[str]:
    """bob's processes on the login node still running the submitter's text (spares, leftovers)."""
    result = conn.run(["ps", "-u", "bob", "-o", "pid=,args="], timeout=30)
    assert result.ok, result.stderr
    return [line for line in result.stdout.splitlines() if "exec sbatch --parsable" in line or
            line.split(None, 1)[-1].startswith("sbatch --parsable")]


def wait_for(predicate, timeout: float = 15.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def test_the_script_sent_after_the_start_becomes_the_job_with_what_was_sent_ahead(conn, jobs):
    name = f"heroes.submitter.{uuid.uuid4().hex[:10]}"
    folder = f"heroes-work/bob/submitter test $(id) {uuid.uuid4().hex[:6]}"
    started = start_submission(conn)
    started.prepare([folder, f"{folder}/logs"])
    started.options([f"--comment=one argument; with `spaces` and $(shell)"])
    job_id = started.submit(script(name))
    jobs.append(job_id)
    assert named(conn, name) == [job_id]
    shown = conn.run(["scontrol", "show", "job", job_id], timeout=30).stdout
    assert "Comment=one argument; with `spaces` and $(shell)" in shown
    listing = conn.run(["ls", "-ld", "--", folder, f"{folder}/logs"], timeout=30)
    assert listing.ok and listing.stdout.count("drwxr-x---") == 2, listing.stdout + listing.stderr
    conn.run(["rm", "-rf", "--", folder], timeout=30)


def test_sbatch_refusing_the_job_is_reported_with_its_message(conn):
    started = start_submission(conn, options_in_script=True)
    with pytest.raises(CommandFailed) as refused:
        started.submit("#!/bin/sh\n#SBATCH --partition=no-such-partition-here\ntrue\n")
    assert refused.value.rc != 0 and "partition" in (refused.value.stderr or "").lower()


def test_no_script_no_job_abandoned_or_dropped(conn):
    abandoned, dropped = (f"heroes.submitter.{uuid.uuid4().hex[:10]}" for _ in range(2))
    started = start_submission(conn)
    started.prepare([])
    started.options([f"--job-name={abandoned}"])   # sbatch itself is up, waiting for its script
    time.sleep(0.5)
    started.abandon()
    other = start_submission(conn)
    other.prepare([])
    other.options([f"--job-name={dropped}"])
    time.sleep(0.5)
    other.channel.get_transport().close()   # the connection drops before the script
    time.sleep(2)
    assert named(conn, abandoned) == [] and named(conn, dropped) == []
    assert wait_for(lambda: not our_processes(conn), timeout=10), our_processes(conn)


def test_a_spare_is_taken_then_replaced_expires_unused_and_goes_with_its_pool(alpha, conn, jobs):
    first = start_submission(conn, options_in_script=True)
    jobs.append(first.submit(script(f"heroes.submitter.{uuid.uuid4().hex[:10]}")))
    assert wait_for(lambda: len(conn._pool.spares) == 1), "no spare after the first submission"
    assert len(our_processes(conn)) == 1   # its sbatch is up on the login node, waiting

    second = start_submission(conn, options_in_script=True)
    assert len(conn._pool.spares) == 0, "the second submission did not take the spare"
    name = f"heroes.submitter.{uuid.uuid4().hex[:10]}"
    jobs.append(second.submit(script(name)))
    assert named(conn, name) == [jobs[-1]]
    assert wait_for(lambda: len(conn._pool.spares) == 1), "no next spare after the second submission closed"

    # unused, it is closed after warm_exec_idle_s (2 s here) and nothing of ours is left on the login node
    assert wait_for(lambda: len(conn._pool.spares) == 0, timeout=10)
    assert wait_for(lambda: not our_processes(conn), timeout=10), our_processes(conn)

    # a pool closed (a user disabled, a cluster removed) takes its spare with it
    third = start_submission(conn, options_in_script=True)
    jobs.append(third.submit(script(f"heroes.submitter.{uuid.uuid4().hex[:10]}")))
    assert wait_for(lambda: len(conn._pool.spares) == 1)
    conn._pool.close()
    assert len(conn._pool.spares) == 0
    shared = identity.connector_for(alpha, BOB)   # another pool looks at the login node
    assert wait_for(lambda: not our_processes(shared), timeout=10), our_processes(shared)
