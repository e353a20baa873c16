"""The spawner's poll against real Slurm on alpha, in-process: a failed ``squeue`` (Slurm answering with
an error, or the command missing) keeps the server as UNKNOWN with its job id, and the same job killed
with ``scancel`` is reported gone on the very next poll.

The spawner object is the hub's class with a minimal user (name + hub groups); its commands go through the
real connector with the running service's CA and cluster records (the hub's own path).
"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from heroes_service.clusters import identity
from heroes_service.clusters.config import get_clusters_settings
from spawner_support import ensure_enrolled, slurm, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spawner(require, stack_settings):
    for name in ("jupyterhub", "slurm-alpha", "login-alpha"):
        require(name)
    ensure_enrolled(stack_settings, "alpha")
    mp = pytest.MonkeyPatch()
    mp.setenv("HEROES_STATE_DIR", str(stack_settings.state))  # what the hub's environment says
    get_clusters_settings.cache_clear()
    identity.forget_secrets()
    from heroes_spawner.slurm import HeroesSpawner

    user = SimpleNamespace(name="bob", groups=[SimpleNamespace(name="acme")], url="/user/bob/")
    sp = HeroesSpawner(user=user)
    sp.target, sp.cluster_name = "cluster:alpha", "alpha"
    yield sp
    mp.undo()
    get_clusters_settings.cache_clear()
    identity.forget_secrets()


@pytest.fixture
def job(stack_settings, spawner):
    """A real job of bob's on alpha, alive (pending or running: the cluster is shared) until cancelled."""
    out = slurm(stack_settings, "alpha", "sbatch", "--parsable", "--job-name=heroes-poll-test", "--time=5",
                "--wrap=sleep 300", user="bob")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().split(";")[0]
    spawner.job_id = job_id
    wait_until("the job in the queue", lambda: asyncio.run(spawner.poll()) is None
               and (spawner.state_isrunning() or spawner.state_ispending()), 60)
    yield job_id
    slurm(stack_settings, "alpha", "scancel", job_id)


@pytest.mark.parametrize("broken", [["squeue", "--clusters=no-such-cluster"], ["/nonexistent/squeue"]])
def test_a_failed_squeue_keeps_the_server(spawner, job, broken):
    spawner.squeue_argv = broken
    try:
        assert asyncio.run(spawner.poll()) is None  # None: still running, as far as the hub is concerned
        assert spawner.state_isunknown() and spawner.job_id == job
    finally:
        spawner.squeue_argv = ["squeue"]
    assert asyncio.run(spawner.poll()) is None and (spawner.state_isrunning() or spawner.state_ispending())


def test_an_unreachable_login_node_keeps_the_server(spawner, job, monkeypatch):
    """The cluster's login node stops answering (its record now names a closed port): UNKNOWN, kept."""
    import dataclasses

    from heroes_service.clusters.testing import free_port
    from heroes_spawner import access

    real = access.cluster_for

    def moved(groups, name):
        view = real(groups, name)
        view.record.port = free_port()
        return dataclasses.replace(view)

    monkeypatch.setattr(access, "cluster_for", moved)
    monkeypatch.setenv("HEROES_SERVICE_CLUSTERS_CONNECT_ATTEMPTS", "1")
    get_clusters_settings.cache_clear()
    try:
        assert asyncio.run(spawner.poll()) is None and spawner.state_isunknown() and spawner.job_id == job
    finally:
        get_clusters_settings.cache_clear()


def test_a_cancelled_job_is_gone_at_the_next_poll(stack_settings, spawner, job):
    assert slurm(stack_settings, "alpha", "scancel", job).returncode == 0
    assert asyncio.run(spawner.poll()) == 1
    assert spawner.job_id == ""
