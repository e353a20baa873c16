"""``/organization/admin/cluster/`` end to end: real Keycloak tokens, real sshd and Slurm of alpha and beta,
the service built in-process (SQLite and PostgreSQL, via ``service_support``).

alice (acme's org admin) enrolls alpha and beta in per-user mode (two steps: read the host key, confirm its
fingerprint) and a service-account cluster with the ``heroes`` key; bob uses them, carol (globex) sees
nothing. Every response body and every log record of the run is scanned for key material at the end.
"""
from __future__ import annotations

import base64
import logging
import time

import pytest
from sqlalchemy import select

from heroes_dev.components.login import host_key_fingerprint, ssh_port, user_key_path
from heroes_service.clusters import identity
from heroes_service.clusters.config import get_clusters_settings
from heroes_service.clusters.models import Cluster
from heroes_service.clusters.slurm import SlurmClient
from cluster_testing import free_port, impostor_sshd, isolated_secrets
from service_support import DEMO_PASSWORDS, database_url, service  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


class Recorder(logging.Handler):
    """Keeps every log record of the run (all loggers, DEBUG and up) for the secrets scan."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001
            self.lines.append(str(record.msg))


@pytest.fixture(scope="module")
def env(service, stack_settings, require):
    for name in ("slurm-alpha", "slurm-beta", "login-alpha", "login-beta"):
        require(name)
    recorder = Recorder()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    with isolated_secrets() as secrets_dir:
        identity.set_cluster_login_resolver(None)
        bodies: list[str] = []
        apis = {name: Recording(service.login(name, DEMO_PASSWORDS[name]), bodies)
                for name in ("alice", "bob", "carol")}
        yield {"apis": apis, "bodies": bodies, "log": recorder, "secrets": secrets_dir, "stack": stack_settings,
               "service": service}
        for api in apis.values():
            api.api.headers.clear()
    root.removeHandler(recorder)
    root.setLevel(old_level)


class Recording:
    """Wraps an ``Api`` and keeps every response body (for the secrets scan)."""

    def __init__(self, api, bodies):
        self.api, self.bodies = api, bodies

    def __getattr__(self, method):
        call = getattr(self.api, method)

        def _call(*args, **kwargs):
            response = call(*args, **kwargs)
            self.bodies.append(response.text)
            return response

        return _call


def enroll_body(stack, name: str, cluster: str, fingerprint: str, **extra) -> dict:
    body = {"name": name, "host": stack.host, "port": ssh_port(stack, cluster), "host_key_fingerprint": fingerprint,
            "work_dir": "heroes-work/{login}", "container_runtime": "charliecloud",
            "price_model": {"currency": "EUR", "per_core_hour": 0.02 if cluster == "alpha" else 0.05},
            "energy_profile": {"idle_watts_per_node": 60, "watts_per_core": 12, "pue": 1.3},
            "relative_speed": 1.0 if cluster == "alpha" else 1.6}
    body.update(extra)
    return body


@pytest.fixture(scope="module")
def enrolled(env):
    """alpha and beta enrolled by alice through the two-step flow; their ids."""
    alice, stack = env["apis"]["alice"], env["stack"]
    ids = {}
    for cluster in ("alpha", "beta"):
        r = alice.post("/organization/admin/cluster/host-key", json={"host": stack.host,
                                                                      "port": ssh_port(stack, cluster)})
        assert r.status_code == 200, r.text
        scanned = r.json()
        # the admin compares with what the site publishes: here, the stack's own record of the key
        assert scanned["fingerprint"] == host_key_fingerprint(stack, cluster)
        r = alice.post("/organization/admin/cluster/", json=enroll_body(stack, cluster, cluster, scanned["fingerprint"]))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["name"] == cluster and body["organization"] == "acme"
        assert body["host_key_fingerprint"] == scanned["fingerprint"]
        assert body["slurm_version"] and body["slurm_cluster_name"] == cluster
        assert [p["name"] for p in body["partitions"]] == ["compute"] and body["default_partition"] == "compute"
        assert body["identity_mode"] == "per-user" and body["has_service_key"] is False
        ids[cluster] = body["id"]
    yield ids
    for cluster_id in ids.values():
        alice.delete(f"/organization/admin/cluster/{cluster_id}")


def test_enrolled_clusters_are_listed_and_tested(env, enrolled):
    alice = env["apis"]["alice"]
    listed = alice.get("/organization/admin/cluster/").json()
    assert {c["name"] for c in listed} >= {"alpha", "beta"}
    for cluster, cluster_id in enrolled.items():
        r = alice.get(f"/organization/admin/cluster/{cluster_id}")
        assert r.status_code == 200 and r.json()["relative_speed"] == (1.0 if cluster == "alpha" else 1.6)
        r = alice.post(f"/organization/admin/cluster/{cluster_id}/test")
        assert r.status_code == 200, r.text
        report = r.json()
        checks = {c["name"]: c for c in report["checks"]}
        assert report["ok"] is True and report["login"] == "alice", report
        assert set(checks) == {"host_key", "authentication", "slurm", "partitions", "work_dir", "sftp",
                               "container_runtime"}
        assert all(c["ok"] for c in checks.values()), report
        assert "matches the pinned key" in checks["host_key"]["detail"]
        assert checks["authentication"]["detail"] == "logged in as alice (certificate)"
        assert "heroes-work/alice" in checks["work_dir"]["detail"]


def test_users_see_their_organizations_clusters_only(env, enrolled):
    bob, carol = env["apis"]["bob"], env["apis"]["carol"]
    mine = bob.get("/organization/cluster/")
    assert mine.status_code == 200
    assert {c["name"] for c in mine.json()} >= {"alpha", "beta"}
    assert all("host" not in c and "work_dir" not in c for c in mine.json())
    assert bob.get("/organization/admin/cluster/").status_code == 403
    assert bob.post(f"/organization/admin/cluster/{enrolled['alpha']}/test").status_code == 403
    theirs = carol.get("/organization/cluster/")
    assert theirs.status_code == 200
    assert not {c["id"] for c in theirs.json()} & set(enrolled.values())
    assert carol.get(f"/organization/admin/cluster/{enrolled['alpha']}").status_code == 403
    assert carol.delete(f"/organization/admin/cluster/{enrolled['alpha']}").status_code == 403


def test_bob_submits_through_the_enrolled_cluster_as_bob(env, enrolled):
    """The stored record + bob's real token -> connector_for -> sbatch: the job is bob's on the cluster."""
    app = env["service"].client.app_ref
    bob_principal = app.state.authenticator.authenticate(env["apis"]["bob"].api.headers["Authorization"])
    with app.state.sessions() as session:
        alpha = session.get(Cluster, enrolled["alpha"])
        session.expunge(alpha)
    conn = identity.connector_for(alpha, bob_principal)
    slurm = SlurmClient(conn)
    job_id = slurm.submit("#!/bin/sh\nsleep 3\n", ["--job-name=heroes-api-bob", "--time=1", "--output=/dev/null"])
    (queued,) = slurm.queue(job_ids=[job_id])
    assert queued.user == "bob"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = slurm.accounting(job_ids=[job_id])
        if rows and rows[0].state == "COMPLETED" and rows[0].partition:
            break
        time.sleep(1)
    assert rows[0].user == "bob" and rows[0].state == "COMPLETED", rows


def test_enrollment_refusals(env, enrolled):
    alice, stack = env["apis"]["alice"], env["stack"]
    wrong = host_key_fingerprint(stack, "beta")  # a real fingerprint, of the other node
    r = alice.post("/organization/admin/cluster/", json=enroll_body(stack, "alpha-wrong", "alpha", wrong))
    assert r.status_code == 409 and "not the confirmed" in r.json()["detail"], r.text
    r = alice.post("/organization/admin/cluster/", json=enroll_body(stack, "alpha", "alpha",
                                                                    host_key_fingerprint(stack, "alpha")))
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    dead = enroll_body(stack, "nowhere", "alpha", host_key_fingerprint(stack, "alpha"))
    dead["port"] = free_port()
    r = alice.post("/organization/admin/cluster/", json=dead)
    assert r.status_code == 422 and "cannot reach" in r.json()["detail"]
    r = alice.post("/organization/admin/cluster/host-key", json={"host": stack.host, "port": dead["port"]})
    assert r.status_code == 422
    for bad in ({"name": "Bad Name"}, {"work_dir": "$(touch /tmp/x)"}, {"work_dir": "a;b"},
                {"work_dir": "../../etc"}, {"work_dir": "{user}/x"}, {"host": "-oProxyCommand=x"},
                {"container_runtime": "docker"}, {"identity_mode": "root"}, {"service_login": "root;id"},
                {"relative_speed": 0}, {"price_model": {"per_core_hour": -1}}, {"unexpected": 1}):
        body = enroll_body(stack, "x-bad", "alpha", host_key_fingerprint(stack, "alpha"))
        body.update(bad)
        r = alice.post("/organization/admin/cluster/", json=body)
        assert r.status_code == 422, (bad, r.text)
    r = alice.post("/organization/admin/cluster/", json=enroll_body(
        stack, "svc-nokey", "beta", host_key_fingerprint(stack, "beta"), identity_mode="service-account"))
    assert r.status_code == 422 and "service_private_key" in r.json()["detail"]
    names = {c["name"] for c in alice.get("/organization/admin/cluster/").json()}
    assert not names & {"alpha-wrong", "nowhere", "x-bad", "svc-nokey"}


def test_changed_host_key_shows_in_test_connection(env, enrolled):
    """The node behind an enrolled address presents another key (a second sshd of ours): refused."""
    alice, stack, service = env["apis"]["alice"], env["stack"], env["service"]
    app = service.client.app_ref
    with impostor_sshd(stack, "alpha") as (port, impostor_key):
        with app.state.sessions() as session:  # as if alpha's address now led to the impostor
            session.get(Cluster, enrolled["alpha"]).port = port
            session.commit()
        try:
            r = alice.post(f"/organization/admin/cluster/{enrolled['alpha']}/test")
            report = r.json()
            checks = {c["name"]: c for c in report["checks"]}
            assert r.status_code == 200 and report["ok"] is False
            assert checks["host_key"]["ok"] is False
            assert "changed" in checks["host_key"]["detail"] and impostor_key.fingerprint in checks["host_key"]["detail"]
            assert all(c["ok"] is None for n, c in checks.items() if n != "host_key")
        finally:
            with app.state.sessions() as session:
                session.get(Cluster, enrolled["alpha"]).port = ssh_port(stack, "alpha")
                session.commit()
    assert alice.post(f"/organization/admin/cluster/{enrolled['alpha']}/test").json()["ok"] is True


def test_service_account_cluster_secrets_stay_secret(env, enrolled):
    alice, stack, service = env["apis"]["alice"], env["stack"], env["service"]
    key_text = user_key_path(stack, "heroes").read_text()
    body = enroll_body(stack, "beta-svc", "beta", host_key_fingerprint(stack, "beta"),
                       identity_mode="service-account", service_private_key=key_text)
    r = alice.post("/organization/admin/cluster/", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["has_service_key"] is True and created["identity_mode"] == "service-account"
    try:
        report = alice.post(f"/organization/admin/cluster/{created['id']}/test").json()
        assert report["ok"] is True and report["login"] == "heroes", report
        auth = next(c for c in report["checks"] if c["name"] == "authentication")
        assert auth["detail"] == "logged in as heroes (service key)"
        # at rest: a Fernet token, never the key; it decrypts to the key with the 0600 key file only
        with service.client.app_ref.state.sessions() as session:
            row = session.scalars(select(Cluster).where(Cluster.id == created["id"])).one()
            stored = row.service_key_enc
        assert "PRIVATE KEY" not in stored and key_text.split("\n")[1] not in stored
        assert identity.get_vault().decrypt(stored) == key_text
        key_file = env["secrets"] / "clusters.fernet"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        assert oct(env["secrets"].stat().st_mode & 0o777) == "0o700"
        ca_file = env["secrets"] / "user_ca_ed25519.enc"
        assert oct(ca_file.stat().st_mode & 0o777) == "0o600" and b"PRIVATE KEY" not in ca_file.read_bytes()
    finally:
        assert alice.delete(f"/organization/admin/cluster/{created['id']}").status_code == 204

    # the scan: no response body and no log record of this whole module holds key material
    needles = {line for line in key_text.splitlines() if len(line) > 20 and "PRIVATE KEY" not in line}
    needles |= {(env["secrets"] / "clusters.fernet").read_text().strip()}
    needles |= {stored}
    ca_pem = identity.get_vault().decrypt((env["secrets"] / "user_ca_ed25519.enc").read_text().strip())
    needles |= {line for line in ca_pem.splitlines() if len(line) > 20 and "PRIVATE KEY" not in line}
    needles |= {base64.b64encode(key_text.encode()).decode()[:40]}
    assert len(env["bodies"]) >= 5
    assert any("enrolled for acme by alice" in line for line in env["log"].lines)  # the service's log was seen
    assert any("connected to" in line for line in env["log"].lines)
    for where, texts in (("response bodies", env["bodies"]), ("log records", env["log"].lines)):
        leaked = [n[:12] for n in needles if any(n in text for text in texts)]
        assert not leaked, f"key material in {where}: {leaked}"
    assert not any("PRIVATE KEY" in text for text in env["bodies"] + env["log"].lines)


def test_ca_and_delete(env, enrolled):
    alice = env["apis"]["alice"]
    ca = alice.get("/organization/admin/cluster/ca").json()
    assert ca["public_key"].startswith("ssh-ed25519 ") and ca["fingerprint"].startswith("SHA256:")
    assert ca["certificate_minutes"] == get_clusters_settings().cert_validity_minutes
    r = alice.post("/organization/admin/cluster/", json=enroll_body(env["stack"], "beta-tmp", "beta",
                                                                    host_key_fingerprint(env["stack"], "beta")))
    assert r.status_code == 201
    cluster_id = r.json()["id"]
    assert alice.delete(f"/organization/admin/cluster/{cluster_id}").status_code == 204
    assert alice.get(f"/organization/admin/cluster/{cluster_id}").status_code == 404
    assert alice.post(f"/organization/admin/cluster/{cluster_id}/test").status_code == 404
    assert alice.delete(f"/organization/admin/cluster/{cluster_id}").status_code == 404
