"""Fixtures of the workflow tests: the service in-process (SQLite) with its reconciler running, alpha and
beta enrolled by alice (per-user certificates from a throw-away CA), the example templates published,
and helpers to wait for instances and read their outputs from S3 through the data API.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from heroes_dev.settings import shared_data_dir
from heroes_dev.components.login import host_key_fingerprint, ssh_port
from heroes_service.clusters import identity
from cluster_testing import isolated_secrets
from heroes_service.settings import get_settings
from heroes_service.workflows.config import get_workflow_settings
from service_support import DEMO_PASSWORDS, Api, service_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "extensions" / "heroes_service" / "workflows" / "examples"
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def enroll(alice: Api, stack, cluster: str) -> str:
    r = alice.post("/organization/admin/cluster/host-key", json={"host": stack.host, "port": ssh_port(stack, cluster)})
    assert r.status_code == 200, r.text
    assert r.json()["fingerprint"] == host_key_fingerprint(stack, cluster)
    r = alice.post("/organization/admin/cluster/", json={
        "name": cluster, "host": stack.host, "port": ssh_port(stack, cluster),
        "host_key_fingerprint": r.json()["fingerprint"], "work_dir": "heroes-work/{login}",
        "container_runtime": "charliecloud", "relative_speed": 1.0 if cluster == "alpha" else 1.6})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def publish(alice: Api, source: str | dict) -> dict:
    body = {"source": source} if isinstance(source, str) else {"template": source}
    r = alice.post("/organization/admin/workflow/template", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def wait_final(api: Api, instance_ids: list[str], timeout: float = 300) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict] = {}
    while time.monotonic() < deadline and len(done) < len(instance_ids):
        for iid in instance_ids:
            if iid in done:
                continue
            r = api.get(f"/organization/workflow/instance/{iid}")
            assert r.status_code == 200, r.text
            if r.json()["state"] in FINAL:
                done[iid] = r.json()
        time.sleep(1)
    missing = [i for i in instance_ids if i not in done]
    assert not missing, {i: api.get(f"/organization/workflow/instance/{i}").json() for i in missing[:3]}
    return done


def submit(api: Api, template: str, cluster: str, **body) -> str:
    """Submit ``template`` on ``cluster`` (more of the submit body in ``body``); the new instance's id."""
    r = api.post("/organization/workflow/submit", json={"template": template, "cluster": cluster, **body})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def run_to_end(api: Api, template: str, cluster: str, timeout: float = 240, **body) -> dict:
    """Submit and wait until the instance is final; its body."""
    iid = submit(api, template, cluster, **body)
    return wait_final(api, [iid], timeout=timeout)[iid]


def wait_state(api: Api, iid: str, states: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/organization/workflow/instance/{iid}").json()
        if body["state"] in states:
            return body
        time.sleep(0.5)
    raise AssertionError(f"instance {iid} never reached {states}: {body}")


def download(api: Api, bucket: str, key: str) -> bytes:
    r = api.get("/organization/data/download", params={"bucket": bucket, "key": key})
    assert r.status_code == 200, (key, r.status_code, r.text[:300])
    return r.content


def own_bucket(api: Api) -> str:
    r = api.get("/organization/data/list")
    assert r.status_code == 200, r.text
    return next(b["bucket"] for b in r.json()["buckets"] if b["kind"] == "user" and b["default"])


def upload(api: Api, bucket: str, key: str, data: bytes) -> None:
    r = api.post("/organization/data/upload", params={"bucket": bucket, "key": key}, content=data)
    assert r.status_code == 201, r.text


def swf_csv(rows: int = 3000) -> bytes:
    """A real regression data set: KTH SP2 jobs (requested processors, requested time, user) -> run time."""
    lines = ["procs,requested_s,user,queue,runtime_s"]
    for line in open(str(shared_data_dir() / "KTH-SP2-1996.swf")):
        if line.startswith(";") or not line.strip():
            continue
        f = line.split()
        run, procs, req, user, queue = f[3], f[7], f[8], f[11], f[14]
        if min(float(run), float(procs), float(req)) <= 0:
            continue
        lines.append(f"{procs},{req},{user},{queue},{run}")
        if len(lines) > rows:
            break
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def wf(stack_settings, require, tmp_path_factory):
    """The service in-process with a 1 s reconciler; alice/bob/carol APIs; alpha and beta enrolled."""
    yield from workflow_service(stack_settings, require, f"sqlite:///{tmp_path_factory.mktemp('wf-db') / 'heroes.db'}")


def workflow_service(stack_settings, require, db: str):
    """Body of the ``wf`` fixtures (SQLite here, PostgreSQL in test_workflows_postgres): yields the dict they give."""
    from fastapi.testclient import TestClient

    from heroes_service.app import create_app

    for name in ("keycloak", "jupyterhub", "s3", "slurm-alpha", "slurm-beta", "login-alpha", "login-beta", "image"):
        require(name)
    os.environ["HEROES_STATE_DIR"] = str(stack_settings.state)
    os.environ["HEROES_SERVICE_WORKFLOWS_INTERVAL_S"] = "1"
    get_settings.cache_clear()
    get_workflow_settings.cache_clear()
    with isolated_secrets() as secrets_dir:
        identity.set_cluster_login_resolver(None)
        app = create_app(service_settings(stack_settings, db))
        with TestClient(app, raise_server_exceptions=False) as client:
            client.app_ref = app
            anon = Api(client)
            apis = {n: anon.login(n, DEMO_PASSWORDS[n]) for n in ("alice", "bob", "carol")}
            clusters = {c: enroll(apis["alice"], stack_settings, c) for c in ("alpha", "beta")}
            yield {"apis": apis, "clusters": clusters, "app": app, "stack": stack_settings, "db": db,
                   "secrets": secrets_dir, "anon": anon}
            for cluster_id in clusters.values():
                apis["alice"].delete(f"/organization/admin/cluster/{cluster_id}")
        app.state.engine.dispose()
    os.environ.pop("HEROES_SERVICE_WORKFLOWS_INTERVAL_S", None)
    get_workflow_settings.cache_clear()
