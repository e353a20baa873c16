"""bob's JupyterLab as a Slurm job on alpha, through the RUNNING hub (real Keycloak-backed hub, real sshd,
real Slurm): the job runs under bob's cluster identity, Voila renders there, a hub restart leaves it
reachable, stopping removes the job, and a job killed behind the hub's back is noticed within one poll.

The hub runs the committed code: after changing extensions/heroes_spawner restart it
(heroes dev down jupyterhub && heroes dev up jupyterhub).
"""
from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from heroes_dev.components.jupyterhub import hub_url
from spawner_support import (SERVER_JOB, ensure_enrolled, hub_admin, jobs_named, server_job, server_of, server_token,
                                  slurm, start_cluster_server, wait_until)

pytestmark = pytest.mark.integration
OPTIONS = {"target": "cluster:alpha", "cores": "1", "minutes": "10", "memory_mb": "1024"}
#: c.HeroesSpawner.poll_interval of the embedded hub (hub_config/jupyterhub_config.py)
POLL_S = 15
WHERE_NOTEBOOK = {"cells": [{"cell_type": "code", "execution_count": None, "id": "where", "metadata": {},
                             "outputs": [], "source": "import os\nprint('node=' + os.environ['SLURMD_NODENAME'])"}],
                  "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
                  "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def stack(require, stack_settings):
    for name in ("jupyterhub", "slurm-alpha", "login-alpha"):
        require(name)
    ensure_enrolled(stack_settings, "alpha")
    return stack_settings


def start_on_alpha(stack) -> dict:
    return start_cluster_server(stack, OPTIONS)


@pytest.fixture(scope="module")
def running(stack):
    server = start_on_alpha(stack)
    yield server
    with hub_admin(stack) as api:
        api.delete("/users/bob/server")


def user_get(stack, path: str, **kwargs) -> httpx.Response:
    token = server_token(stack, "bob")
    return httpx.get(hub_url(stack).rstrip("/") + f"/user/bob/{path}", headers={"Authorization": f"token {token}"},
                     timeout=120, **kwargs)


def test_bobs_server_is_a_slurm_job_of_bob_on_an_alpha_node(stack, running):
    job_id = running["state"]["job_id"]
    jobs = jobs_named(stack, "alpha", server_job(running))
    assert [j["id"] for j in jobs] == [job_id]
    assert jobs[0]["user"] == "bob" and jobs[0]["state"] == "RUNNING" and jobs[0]["node"].startswith("alpha-n")
    # bob himself sees it too (PrivateData=jobs: his own jobs only)
    assert job_id in slurm(stack, "alpha", "squeue", "-h", "-o", "%i", user="bob").stdout.split()
    assert user_get(stack, "api/status").status_code == 200


def test_voila_renders_on_the_node(stack, running):
    token = server_token(stack, "bob")
    r = httpx.put(hub_url(stack).rstrip("/") + "/user/bob/api/contents/where-am-i.ipynb", timeout=60,
                  headers={"Authorization": f"token {token}"}, json={"type": "notebook", "content": WHERE_NOTEBOOK})
    assert r.status_code in (200, 201), r.text
    page = user_get(stack, "voila/render/where-am-i.ipynb")
    assert page.status_code == 200
    node = jobs_named(stack, "alpha", server_job(running))[0]["node"]
    assert f"node={node}" in page.text
    assert "SLURMD_NODENAME" not in page.text  # Voila strips sources: only the output is there


def test_hub_restart_leaves_the_server_reachable(stack, running):
    job_id = running["state"]["job_id"]
    cli = [sys.executable, "-m", "heroes_dev.cli", "dev"]
    subprocess.run([*cli, "down", "jupyterhub"], check=True, capture_output=True, timeout=120)
    assert [j["id"] for j in jobs_named(stack, "alpha", server_job(running))] == [job_id]  # it outlives the hub
    subprocess.run([*cli, "up", "jupyterhub"], check=True, capture_output=True, timeout=300)
    server = wait_until("the hub to know bob's server again", lambda: server_of(stack, "bob"), 60)
    assert server["ready"] and server["state"]["job_id"] == job_id
    assert wait_until("bob's server through the new proxy", lambda: user_get(stack, "api/status").status_code == 200,
                      60)


def test_stopping_removes_the_job(stack, running):
    with hub_admin(stack) as api:
        assert api.delete("/users/bob/server").status_code in (202, 204)
    wait_until("the server to stop", lambda: server_of(stack, "bob") is None, 60)
    assert wait_until("the job to leave the queue", lambda: not jobs_named(stack, "alpha", server_job(running)), 30)


def test_a_killed_job_is_noticed_within_one_poll(stack):
    server = start_on_alpha(stack)
    job_id = server["state"]["job_id"]
    assert slurm(stack, "alpha", "scancel", job_id).returncode == 0
    killed = time.monotonic()
    wait_until("the hub to notice the dead job", lambda: server_of(stack, "bob") is None, POLL_S + 10, every=0.5)
    assert time.monotonic() - killed <= POLL_S + 10


def test_a_request_the_cluster_cannot_hold_is_refused_with_the_rule(stack):
    """The service checks the resources against the partition (the hub has no rule of its own): the spawn
    answers 400 with the rule, and no job is left behind."""
    with hub_admin(stack) as api:
        api.request("DELETE", "/users/bob/servers/too-big", json={"remove": True})
        before = {j["id"] for j in jobs_named(stack, "alpha", SERVER_JOB)}
        r = api.post("/users/bob/servers/too-big", json={"user_options": {"target": "cluster:alpha", "cores": "99"}})
        try:
            assert r.status_code == 400, r.text
            assert "2 cores per node; you asked for 99" in r.json()["message"], r.text
            assert {j["id"] for j in jobs_named(stack, "alpha", SERVER_JOB)} <= before
        finally:
            api.request("DELETE", "/users/bob/servers/too-big", json={"remove": True})
