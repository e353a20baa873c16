"""The spawner's poll, in-process against the RUNNING service and real Slurm on alpha: the hub's spawner
class with its real configuration (the service's URL, the hub's service token) and a real job of bob's
(a remote-kernel cluster job, which stays alive until cancelled):

* the service unreachable: the server is UNKNOWN and kept with its job, asked again next poll (batchspawner#315;
  what a failed ``squeue`` or an unreachable login node does to the service's reconciler is in
  test_cluster_jobs_reconciler.py);
* the job cancelled behind the hub's back is reported gone on the hub's next poll (the service's reconciler,
  one ``squeue`` per cluster, notices it within its cycle).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from types import SimpleNamespace

import pytest

from heroes_dev.components.jupyterhub import JupyterHub
from cluster_testing import free_port
from spawner_support import ensure_enrolled, hub_service_token, service_api_url, slurm, wait_until

pytestmark = pytest.mark.integration
#: c.HeroesSpawner.poll_interval of the embedded hub (hub_config/jupyterhub_config.py)
POLL_S = 15


def new_spawner(stack):
    from heroes_spawner.spawner import HeroesSpawner

    user = SimpleNamespace(name="bob", groups=[SimpleNamespace(name="acme")], url="/user/bob/")
    spawner = HeroesSpawner(user=user, service_api_url=service_api_url(stack), service_token=hub_service_token(stack))
    spawner.target, spawner.cluster_name = "cluster:alpha", "alpha"
    return spawner


@pytest.fixture
def job(require, stack_settings):
    """A live cluster job of bob's on alpha, submitted through the service as the hub would."""
    for name in ("jupyterhub", "slurm-alpha", "login-alpha"):
        require(name)
    ensure_enrolled(stack_settings, "alpha")
    spawner = new_spawner(stack_settings)
    python = str(JupyterHub(stack_settings).singleuser_env / "bin" / "python")
    created = asyncio.run(spawner.service().submit("bob", "kernel", "alpha", {"minutes": 5, "memory_mb": 512},
                                                   {"key": uuid.uuid4().hex, "python": python,
                                                    "bind_ip": "127.0.0.1"}, ref="poll-test"))
    spawner.cluster_job, spawner.job_id = created["id"], created["job_id"]
    wait_until("the job in the queue", lambda: asyncio.run(spawner.poll()) is None
               and (spawner.state_isrunning() or spawner.state_ispending()), 60)
    yield spawner
    asyncio.run(spawner.service().cancel("bob", created["id"]))


def test_an_unreachable_service_keeps_the_server(stack_settings, job):
    spawner = new_spawner(stack_settings)
    spawner.load_state(job.get_state())
    spawner.service_api_url = f"http://127.0.0.1:{free_port()}/services/heroes/api/v1"
    assert asyncio.run(spawner.poll()) is None  # None: still running, as far as the hub is concerned
    assert spawner.state_isunknown() and spawner.job_id == job.job_id and spawner.cluster_job == job.cluster_job
    assert asyncio.run(job.poll()) is None and (job.state_isrunning() or job.state_ispending())


def test_a_cancelled_job_is_gone_at_the_next_poll(stack_settings, job):
    assert slurm(stack_settings, "alpha", "scancel", job.job_id).returncode == 0
    cancelled = time.monotonic()
    wait_until("the hub's poll to report the job gone", lambda: asyncio.run(job.poll()) == 1, POLL_S, every=0.5)
    print(f"gone {time.monotonic() - cancelled:.1f} s after scancel (hub poll interval {POLL_S} s)")
    assert job.cluster_job == "" and job.job_id == ""
