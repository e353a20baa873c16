"""Unit tests of the spawner's pure parts: the spawn form (targets, resources as typed, HTML), the service's
job states as the hub reads them, and the strict port report. The batch script, the resources' checks
against partitions and Slurm's answers are the service's now: tests/unit/test_cluster_jobs_units.py."""
from __future__ import annotations

import subprocess

import pytest
from batchspawner import JobStatus

from heroes_spawner import form
from heroes_spawner.api import valid_port
from heroes_spawner.spawner import classify

PARTS = [{"name": "compute", "default": True, "available": True, "time_limit": "2:00:00", "nodes": 2,
          "cpus_per_node": 2, "memory_mb": 2048, "gres": ""},
         {"name": "gpu", "default": False, "available": True, "time_limit": "1-00:00:00", "nodes": 1,
          "cpus_per_node": 8, "memory_mb": 64000, "gres": "gpu:a100:2(S:0)"}]
def test_form_gateway_and_cluster_choices():
    assert form.target_cluster({}) is None and form.target_cluster({"target": "gateway"}) is None
    assert form.target_cluster({"target": "cluster:alpha"}) == "alpha"
    assert form.resources({"target": "cluster:alpha", "cores": "1", "minutes": "10", "gpus": ""}) == {
        "cores": "1", "minutes": "10"}


def test_form_unknown_target():
    with pytest.raises(form.OptionsError):
        form.target_cluster({"target": "cluster:../../etc"})
    with pytest.raises(form.OptionsError):
        form.target_cluster({"target": "somewhere"})


def test_form_html_escapes_and_parses():
    html = form.render_form([{"name": "alpha<b>", "partitions": PARTS, "default_partition": "compute",
                              "estimate": "expected start <now>"}])
    assert "<b>" not in html and "&lt;now&gt;" in html and 'value="cluster:alpha&lt;b&gt;"' in html
    assert form.parse_form({"target": ["gateway"], "cores": ["4"]}) == {"target": "gateway"}
    assert form.parse_form({"target": ["cluster:alpha"], "cores": ["1"], "minutes": ["10"], "gpus": [""]}) == {
        "target": "cluster:alpha", "cores": "1", "minutes": "10"}


@pytest.mark.parametrize("answer, status, host", [
    ({"state": "RUNNING", "node": "alpha-n1", "node_addr": "10.0.0.1"}, JobStatus.RUNNING, "10.0.0.1"),
    ({"state": "RUNNING", "node": "alpha-n1", "node_addr": ""}, JobStatus.RUNNING, "alpha-n1"),
    ({"state": "PENDING", "node": ""}, JobStatus.PENDING, ""),
    ({"state": "SUBMITTING"}, JobStatus.PENDING, ""),
    ({"state": "CANCELLED", "node": "alpha-n1"}, JobStatus.NOTFOUND, "alpha-n1"),
    ({"state": "LOST"}, JobStatus.NOTFOUND, ""),
    ({"state": "GONE"}, JobStatus.NOTFOUND, ""),  # the service answered 404
    (None, JobStatus.UNKNOWN, ""),                 # the service did not answer: keep the server
])
def test_job_states_from_the_service(answer, status, host):
    found, _, where = classify(answer)
    assert found == status and where == host


def test_port_report_accepts_only_unprivileged_int_ports():
    assert valid_port(52215) == 52215
    for bad in (True, 80, 70000, "8888", 12.5, None):
        with pytest.raises(ValueError):
            valid_port(bad)


def test_gateway_state_saved_before_the_switch_is_kept():
    """A server started by HeroesLocalSpawner (state {"pid": N}) keeps its pid under HeroesSpawner."""
    from types import SimpleNamespace

    from heroes_spawner.spawner import HeroesSpawner

    spawner = HeroesSpawner(user=SimpleNamespace(name="bob", groups=[], url="/user/bob/"))
    spawner.load_state({"pid": 4242})
    assert spawner.target == "gateway" and spawner._gateway().pid == 4242
    assert spawner.get_state()["gateway"]["pid"] == 4242
