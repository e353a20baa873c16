"""The routes behind the Admin app's Clusters and Templates tabs, end to end: real Keycloak tokens, the real
sshd and Slurm of alpha, the service built in-process (SQLite and PostgreSQL, via ``service_support``).

alice (acme's org admin) enrolls alpha's login node under a fresh name; "test connection" (readiness) runs
every check a workflow needs, sbatch and accounting included; the partitions come from sinfo; an edit goes
through enrollment's own rules (refused edits change nothing); bob (a user) and dave (globex's admin) can do
none of it. The template check stores nothing and places every error at its line and column.
"""
from __future__ import annotations

import secrets

import pytest

from heroes_dev.components.login import host_key_fingerprint, ssh_port
from heroes_service.clusters import identity
from cluster_testing import isolated_secrets
from service_support import DEMO_PASSWORDS, database_url, service  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
CHECKS = ["host_key", "authentication", "slurm", "partitions", "work_dir", "sftp", "container_runtime", "sbatch",
          "accounting"]


@pytest.fixture(scope="module")
def env(service, stack_settings, require):
    for name in ("slurm-alpha", "login-alpha"):
        require(name)
    with isolated_secrets():
        identity.set_cluster_login_resolver(None)
        apis = {name: service.login(name, DEMO_PASSWORDS.get(name, f"{name}-pass"))
                for name in ("alice", "bob", "dave")}
        yield {"apis": apis, "stack": stack_settings}


@pytest.fixture(scope="module")
def cluster(env):
    """alpha's login node enrolled again by alice under a fresh name; its record."""
    alice, stack = env["apis"]["alice"], env["stack"]
    body = {"name": f"adm-{secrets.token_hex(3)}", "host": stack.host, "port": ssh_port(stack, "alpha"),
            "host_key_fingerprint": host_key_fingerprint(stack, "alpha"), "work_dir": "heroes-work/{login}",
            "container_runtime": "charliecloud", "relative_speed": 1.2,
            "price_model": {"currency": "EUR", "per_core_hour": 0.02}, "energy_profile": {"pue": 1.3}}
    r = alice.post("/organization/admin/cluster/", json=body)
    assert r.status_code == 201, r.text
    yield r.json()
    alice.delete(f"/organization/admin/cluster/{r.json()['id']}")


def test_readiness_runs_every_check_a_workflow_needs(env, cluster):
    r = env["apis"]["alice"].post(f"/organization/admin/cluster/{cluster['id']}/readiness")
    assert r.status_code == 200, r.text
    report = r.json()
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == CHECKS and report["ok"] is True and report["login"] == "alice", report
    assert all(c["ok"] for c in checks.values()), report
    assert "to start at" in checks["sbatch"]["detail"] or "accepted" in checks["sbatch"]["detail"], checks["sbatch"]
    assert checks["accounting"]["detail"].startswith("sacct answers"), checks["accounting"]


def test_partitions_are_read_from_the_cluster(env, cluster):
    r = env["apis"]["alice"].get(f"/organization/admin/cluster/{cluster['id']}/partitions")
    assert r.status_code == 200, r.text
    assert [(p["name"], p["default"]) for p in r.json()] == [("compute", True)]


def test_an_edit_goes_through_enrollment_rules_and_a_refused_one_changes_nothing(env, cluster):
    alice, path = env["apis"]["alice"], f"/organization/admin/cluster/{cluster['id']}"
    r = alice.patch(path, json={"relative_speed": 2.5, "description": "edited", "partitions": ["compute"],
                                "price_model": {"currency": "EUR", "per_core_hour": 0.04, "per_kwh": 0.3},
                                "energy_profile": {"pue": 1.2, "watts_per_core": 10}})
    assert r.status_code == 200, r.text
    edited = r.json()
    assert edited["relative_speed"] == 2.5 and edited["description"] == "edited"
    assert edited["price_model"]["per_core_hour"] == 0.04 and edited["energy_profile"]["watts_per_core"] == 10
    assert [p["name"] for p in edited["partitions"]] == ["compute"] and edited["default_partition"] == "compute"
    assert edited["host_key_fingerprint"] == cluster["host_key_fingerprint"]
    for bad, words in (({"work_dir": "../etc"}, "work_dir"), ({"work_dir": "{user}/x"}, "work_dir"),
                       ({"partitions": ["nope"]}, "do not exist"), ({"identity_mode": "service-account"},
                                                                    "service_private_key"),
                       ({"relative_speed": 0}, ""), ({"host": "elsewhere"}, ""), ({"price_model": {"kind": "cloud"}},
                                                                                 "instance_type"),
                       ({"service_private_key": "not a key"}, "service_private_key")):
        r = alice.patch(path, json={"description": "half-written?", **bad})
        assert r.status_code == 422, (bad, r.text)
        assert words in r.text, (bad, r.text)
    after = alice.get(path).json()
    assert after["description"] == "edited" and after["work_dir"] == "heroes-work/{login}"
    assert after["identity_mode"] == "per-user" and after["has_service_key"] is False


def test_only_the_organizations_admins_reach_these_routes(env, cluster):
    bob, dave = env["apis"]["bob"], env["apis"]["dave"]
    base = f"/organization/admin/cluster/{cluster['id']}"
    assert bob.post(f"{base}/readiness").status_code == 403
    assert bob.get(f"{base}/partitions").status_code == 403
    assert bob.patch(base, json={"relative_speed": 9}).status_code == 403
    assert bob.post("/organization/admin/workflow/template/check", json={"source": "name: x"}).status_code == 403
    assert dave.post(f"{base}/readiness").status_code == 404  # another organization's cluster does not exist
    assert dave.get(f"{base}/partitions").status_code == 404
    assert dave.patch(base, json={"relative_speed": 9}).status_code == 404
    assert env["apis"]["alice"].get(base).json()["relative_speed"] != 9


def test_the_template_check_places_errors_and_stores_nothing(env):
    alice = env["apis"]["alice"]
    name = f"chk-{secrets.token_hex(3)}"
    good = (f"name: {name}\nparameters:\n  - {{name: n, type: int, min: 1, max: 5, default: 2}}\nsteps:\n"
            "  - name: run\n    command: [echo, '{n}']\n    resources: {memory_mb: 64}\n")
    before = alice.get("/organization/workflow/template", params={"all_versions": "true"}).json()
    r = alice.post("/organization/admin/workflow/template/check", json={"source": good.replace("memory_mb: 64",
                                                                                               "memory_mb: x")})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["ok"] is False and answer["parameters"] == []
    assert [(e["loc"], e["line"], e["column"]) for e in answer["errors"]] == \
        [("steps.0.resources.memory_mb", 7, 17)]
    r = alice.post("/organization/admin/workflow/template/check", json={"source": "name: [unclosed\n"})
    assert r.json()["errors"][0]["message"].startswith("YAML syntax") and r.json()["errors"][0]["line"] == 2
    r = alice.post("/organization/admin/workflow/template/check", json={"source": good})
    answer = r.json()
    assert answer["ok"] is True and answer["name"] == name and answer["next_version"] == 1
    assert [p["name"] for p in answer["parameters"]] == ["n"] and answer["steps"] == ["run"]
    assert alice.get("/organization/workflow/template", params={"all_versions": "true"}).json() == before
    assert alice.post("/organization/admin/workflow/template/check", json={"source": 5}).status_code == 422
