"""The embedded Slurm clusters against the real daemons (``heroes dev up slurm-alpha slurm-beta``).

What the gateway relies on: a user such as bob submits with ``sbatch --parsable`` on either cluster
through the stack's own munge socket; the shared slurmdbd keeps each cluster's jobs apart
(``sacct -M alpha`` lists alpha's jobs and never beta's); a cancelled job is recorded as CANCELLED; the
two clusters have the node sizes the decision module expects; secrets are private files.
"""
from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from heroes_dev.components import slurm

pytestmark = pytest.mark.integration

USER = "bob"
ACCOUNTING_DEADLINE = 90.0  # slurmdbd receives job records asynchronously from slurmctld


@pytest.fixture(scope="module")
def clusters(require):
    return {name: require(f"slurm-{name}") for name in ("alpha", "beta")}


@pytest.fixture(scope="module")
def settings(stack_settings):
    return stack_settings


def as_user(settings, cluster: str, user: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a Slurm command as ``user`` in their home, pointed at ``cluster`` only through SLURM_CONF."""
    conf = slurm.slurm_env(settings, cluster)["SLURM_CONF"]
    home = pwd.getpwnam(user).pw_dir
    result = subprocess.run(["runuser", "-u", user, "--", "env", f"SLURM_CONF={conf}", *argv],
                            capture_output=True, text=True, cwd=home, timeout=60)
    if check:
        assert result.returncode == 0, f"{argv} as {user} on {cluster} failed: {result.stdout}{result.stderr}"
    return result


def submit(settings, cluster: str, *args: str, user: str = USER) -> str:
    out = as_user(settings, cluster, user, "sbatch", "--parsable", *args).stdout.strip()
    job_id = out.split(";")[0]
    assert job_id.isdigit(), f"sbatch --parsable printed {out!r}"
    return job_id


def sacct_rows(settings, cluster: str, job_id: str, user: str = USER) -> list[list[str]]:
    """The allocation rows of ``job_id`` recorded for ``cluster`` (JobID, State, Cluster, User)."""
    out = as_user(settings, cluster, user, "sacct", "-M", cluster, "-j", job_id, "-X", "--parsable2", "-n",
                  "-o", "JobID,State,Cluster,User").stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def wait_for(what: str, probe, deadline: float = ACCOUNTING_DEADLINE):
    """Poll ``probe`` until it returns something truthy; fail with the last value seen otherwise."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(1.0)
    pytest.fail(f"timed out after {deadline:.0f}s waiting for {what}; last seen: {last!r}")


def recorded_state(settings, cluster: str, job_id: str, prefix: str):
    rows = sacct_rows(settings, cluster, job_id)
    return rows if rows and rows[0][1].startswith(prefix) else None


def test_both_nodes_of_each_cluster_are_idle_with_their_own_size(clusters, settings):
    expected = {"alpha": ("2", "2048"), "beta": ("4", "4096")}
    for name, component in clusters.items():
        out = as_user(settings, name, USER, "sinfo", "-h", "-N", "-o", "%N|%T|%c|%m|%P").stdout
        rows = {r.split("|")[0]: r.split("|")[1:] for r in out.split()}
        assert set(rows) == {f"{name}-n1", f"{name}-n2"}, out
        for node, (state, cpus, memory, partition) in rows.items():
            assert state in {"idle", "mixed", "allocated", "completing"}, f"{node} is {state}"
            assert (cpus, memory) == expected[name], f"{node}: {cpus} CPUs, {memory} MB"
            assert partition == "compute*", f"{node} partition {partition}"
        ping = as_user(settings, name, USER, "scontrol", "ping").stdout
        assert "UP" in ping, ping


def test_bob_reaches_the_stacks_munge_socket(settings, clusters):
    socket = str(slurm.munge_socket(settings))
    cred = subprocess.run(["runuser", "-u", USER, "--", "munge", "-n", f"--socket={socket}"],
                          capture_output=True, text=True, timeout=20)
    assert cred.returncode == 0, cred.stderr
    decoded = subprocess.run(["unmunge", f"--socket={socket}"], input=cred.stdout, capture_output=True,
                             text=True, timeout=20)
    assert decoded.returncode == 0, decoded.stderr
    assert f"UID:              {USER} " in decoded.stdout or f"{USER} (" in decoded.stdout, decoded.stdout


def test_bobs_jobs_complete_and_sacct_keeps_the_clusters_apart(settings, clusters):
    home = Path(pwd.getpwnam(USER).pw_dir)
    tag = uuid.uuid4().hex[:8]
    outputs = {c: home / f"heroes-test-{c}-{tag}.out" for c in clusters}
    jobs = {c: submit(settings, c, f"--job-name=heroes-test-{tag}", f"--output={outputs[c]}",
                      "--wrap", "id -un; echo SLURM_CLUSTER_NAME=$SLURM_CLUSTER_NAME")
            for c in clusters}
    try:
        alpha_rows = wait_for(f"alpha job {jobs['alpha']} COMPLETED in sacct",
                              lambda: recorded_state(settings, "alpha", jobs["alpha"], "COMPLETED"))
        assert alpha_rows == [[jobs["alpha"], "COMPLETED", "alpha", USER]]
        beta_rows = wait_for(f"beta job {jobs['beta']} COMPLETED in sacct",
                             lambda: recorded_state(settings, "beta", jobs["beta"], "COMPLETED"))
        assert beta_rows == [[jobs["beta"], "COMPLETED", "beta", USER]]

        # the beta job is not an alpha job, even through alpha's client config
        assert sacct_rows(settings, "alpha", jobs["beta"]) == []
        # listing by name (both jobs carry it): only alpha's job comes back for -M alpha
        def listed_by_name():
            return as_user(settings, "alpha", USER, "sacct", "-M", "alpha", "-X", "--parsable2", "-n",
                           "-S", "now-1hours", "-o", "JobID,JobName,Cluster",
                           "--name", f"heroes-test-{tag}").stdout.split()
        listed = wait_for(f"job name heroes-test-{tag} listed", listed_by_name, deadline=30)
        assert listed == [f"{jobs['alpha']}|heroes-test-{tag}|alpha"], listed

        for cluster, path in outputs.items():
            text = wait_for(f"{path} written", lambda: path.exists() and path.read_text(), deadline=20)
            assert text.splitlines() == [USER, f"SLURM_CLUSTER_NAME={cluster}"], text
    finally:
        for path in outputs.values():
            path.unlink(missing_ok=True)


def test_scancel_of_a_running_job_is_recorded_cancelled(settings, clusters):
    job_id = submit(settings, "alpha", "--job-name=heroes-test-cancel", "--output=/dev/null", "--wrap", "sleep 300")
    try:
        def running():
            out = as_user(settings, "alpha", USER, "squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout
            return out.strip() == "RUNNING"
        wait_for(f"job {job_id} RUNNING", running, deadline=60)
        as_user(settings, "alpha", USER, "scancel", job_id)
        rows = wait_for(f"job {job_id} CANCELLED in sacct",
                        lambda: recorded_state(settings, "alpha", job_id, "CANCELLED"))
        assert rows[0][0] == job_id and rows[0][2:] == ["alpha", USER], rows
    finally:
        as_user(settings, "alpha", "root", "scancel", job_id, check=False)


def test_every_demo_user_has_an_association_on_both_clusters(settings, clusters):
    for name, component in clusters.items():
        component.configure()  # idempotent: a second run adds nothing and does not fail
        out = subprocess.run(["sacctmgr", "-n", "-P", "list", "association", f"cluster={name}",
                              "format=account,user"], env={**os.environ, **component.env()},
                             capture_output=True, text=True, timeout=30, check=True).stdout
        pairs = {tuple(line.split("|")) for line in out.splitlines()}
        for user in slurm.CLUSTER_USERS:
            assert (slurm.ACCOUNT, user) in pairs, f"{user} has no {slurm.ACCOUNT} association on {name}"


def test_secrets_are_private_files(settings, clusters):
    def owner_mode(path: Path) -> tuple[str, int]:
        st = path.stat()
        return pwd.getpwuid(st.st_uid).pw_name, stat.S_IMODE(st.st_mode)

    assert owner_mode(slurm.dbd_conf_dir(settings) / "slurmdbd.conf") == (slurm.SLURM_USER, 0o600)
    assert owner_mode(slurm.db_password_path(settings)) == ("root", 0o600)
    assert owner_mode(slurm.munge_key_path(settings)) == (slurm.MUNGE_USER, 0o400)
    password = slurm.db_password_path(settings).read_text().strip()
    for log in settings.logs.glob("*.log"):
        assert password not in log.read_text(errors="replace"), f"storage password leaked into {log}"
    # the cluster configs are public (users read them) and carry no password
    for name in clusters:
        conf = slurm.slurm_conf_path(settings, name)
        assert owner_mode(conf)[1] == 0o644
        assert password not in conf.read_text()


def test_other_tenants_cannot_see_a_job_but_the_service_account_can(settings, clusters):
    """PrivateData=jobs: carol sees none of bob's jobs; the gateway's operator account sees them all."""
    job_id = submit(settings, "alpha", "--job-name=heroes-test-private", "--output=/dev/null", "--wrap", "sleep 120")
    try:
        def listed_for(user: str) -> list[str]:
            out = as_user(settings, "alpha", user, "squeue", "-h", "-o", "%i", check=True).stdout
            return out.split()

        wait_for(f"job {job_id} listed for bob", lambda: job_id in listed_for(USER), deadline=30)
        assert job_id not in listed_for("carol")
        assert job_id in listed_for(slurm.SERVICE_ACCOUNT)
        refused = as_user(settings, "alpha", "carol", "scancel", job_id, check=False)
        assert refused.returncode != 0
        assert job_id in listed_for(USER), "carol's scancel must not have touched bob's job"
    finally:
        as_user(settings, "alpha", "root", "scancel", job_id, check=False)
