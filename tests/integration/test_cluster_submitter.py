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


def our_processes(conn) -> dict[str, str]:
    """pid -> command line of bob's submitter processes (spares, leftovers) on the login node that belong to
    ``conn``'s own SSH connection: other connections of bob's (the running service's, earlier tests' pools)
    keep spares of their own, which this must not count. A process belongs to the connection whose sshd
    session process is its nearest ``sshd:`` ancestor."""
    result = conn.run(["sh", "-c", "echo $$; ps -u bob -o pid=,ppid=,args="], timeout=30)
    assert result.ok, result.stderr
    me, *rows = result.stdout.splitlines()
    table = {}
    for row in rows:
        fields = row.split(None, 2)
        if len(fields) == 3:
            table[fields[0]] = (fields[1], fields[2])

    def session(pid: str) -> str | None:
        for _ in range(20):
            if pid not in table:
                return None
            parent, args = table[pid]
            if args.startswith("sshd:"):
                return pid
            pid = parent
        return None

    ours = session(me.strip())
    assert ours is not None, "the sshd session of this connection is not among bob's processes"
    return {pid: args for pid, (_, args) in table.items() if session(pid) == ours and
            ("exec sbatch --parsable" in args or args.startswith("sbatch --parsable"))}


def alive(conn, pids) -> list[str]:
    """Those of ``pids`` still running on the login node (asked over ``conn``, any connection of bob's)."""
    if not pids:
        return []
    result = conn.run(["ps", "-o", "pid=", "-p", ",".join(pids)], timeout=30)
    return result.stdout.split()


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
    waiting = wait_for(lambda: our_processes(conn))
    assert any(args.startswith("sbatch --parsable") for args in waiting.values()), waiting
    started.abandon()
    other = start_submission(conn)
    other.prepare([])
    other.options([f"--job-name={dropped}"])
    waiting = set(wait_for(lambda: set(our_processes(conn)) - set(waiting) or None) or ())
    assert waiting, "the second submitter is not running"
    other.channel.get_transport().close()   # the connection drops before the script
    time.sleep(2)
    assert named(conn, abandoned) == [] and named(conn, dropped) == []
    assert wait_for(lambda: not alive(conn, sorted(waiting)), timeout=10), alive(conn, sorted(waiting))


def test_a_spare_is_taken_then_replaced_expires_unused_and_goes_with_its_pool(alpha, conn, jobs):
    first = start_submission(conn, options_in_script=True)
    jobs.append(first.submit(script(f"heroes.submitter.{uuid.uuid4().hex[:10]}")))
    assert wait_for(lambda: len(conn._pool.spares) == 1), "no spare after the first submission"
    spare = wait_for(lambda: our_processes(conn))
    assert len(spare) == 1 and next(iter(spare.values())).startswith("sbatch --parsable"), spare  # up, waiting

    second = start_submission(conn, options_in_script=True)
    assert len(conn._pool.spares) == 0, "the second submission did not take the spare"
    name = f"heroes.submitter.{uuid.uuid4().hex[:10]}"
    jobs.append(second.submit(script(name)))
    assert named(conn, name) == [jobs[-1]]
    assert wait_for(lambda: len(conn._pool.spares) == 1), "no next spare after the second submission closed"
    following = wait_for(lambda: our_processes(conn))
    assert len(following) == 1 and set(following) != set(spare), (spare, following)

    # unused, it is closed after warm_exec_idle_s (2 s here) and its process ends
    assert wait_for(lambda: len(conn._pool.spares) == 0, timeout=10)
    assert wait_for(lambda: not alive(conn, sorted(following)), timeout=10), alive(conn, sorted(following))

    # a pool closed (a user disabled, a cluster removed) takes its spare with it
    third = start_submission(conn, options_in_script=True)
    jobs.append(third.submit(script(f"heroes.submitter.{uuid.uuid4().hex[:10]}")))
    assert wait_for(lambda: len(conn._pool.spares) == 1)
    last = wait_for(lambda: our_processes(conn))
    assert len(last) == 1, last
    conn._pool.close()
    assert len(conn._pool.spares) == 0
    shared = identity.connector_for(alpha, BOB)   # another connection looks at the login node
    assert wait_for(lambda: not alive(shared, sorted(last)), timeout=10), alive(shared, sorted(last))
