"""Decision history through the real service app (``create_app`` on SQLite and on the stack's PostgreSQL, real
Keycloak tokens of the demo users: alice is acme's org admin, bob an acme member, carol in globex).

Shows: an org admin imports an SWF trace (the start of KTH-SP2) and a real ``sacct -P`` dump of the embedded
cluster alpha; a bad line is refused with its line number and nothing is stored; a file sent twice adds
nothing; plain members cannot import and anonymous callers get 401; another organization sees none of it,
and its estimates stay on template defaults while acme's learn from the imported history; right-sizing never
goes below the template's minimums; deleting an organization deletes its imported history.
"""
from __future__ import annotations

import pwd
import subprocess

import pytest

from heroes_dev.components import slurm
from heroes_dev.settings import shared_data_dir
from heroes_service.auth import Principal
from heroes_service.clusters.models import Cluster
from heroes_service.decision.estimates import clear_cache, estimate
from heroes_service.decision.service_models import REGISTRY
from heroes_service.workflows.templates import parse_template
from heroes_service.decision.service_history import HistoryJob
from service_support import (DEMO_PASSWORDS, database_url, drop_tenant, make_tenant, root_api,  # noqa: F401
                             service)

pytestmark = pytest.mark.integration
IMPORT = "/organization/admin/decision/history"
SUMMARY = "/organization/decision/history/summary"
KTH_JOBS = 1500
CLUSTER = "kth"


@pytest.fixture(scope="module")
def users(service):
    return {name: service.login(name, DEMO_PASSWORDS[name]) for name in ("alice", "bob", "carol")}


@pytest.fixture(scope="module")
def kth_text() -> str:
    """The KTH-SP2 header and its first KTH_JOBS jobs."""
    lines, jobs = [], 0
    with open(shared_data_dir() / "KTH-SP2-1996.swf", encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith(";"):
                jobs += 1
                if jobs > KTH_JOBS:
                    break
            lines.append(line)
    return "".join(lines)


@pytest.fixture(scope="module")
def sacct_dump(stack_settings, require) -> str:
    """A real dump of alpha's accounting (every user's jobs), as an admin would take it on the login node."""
    require("slurm-alpha")
    conf = slurm.slurm_env(stack_settings, "alpha")["SLURM_CONF"]
    out = subprocess.run(
        ["runuser", "-u", "bob", "--", "env", f"SLURM_CONF={conf}", "sacct", "-M", "alpha", "-a", "-S", "2020-01-01",
         "-P", "-o", "JobID,User,Submit,Start,End,Elapsed,Timelimit,ReqMem,MaxRSS,NCPUS,NNodes,State,Partition"],
        capture_output=True, text=True, timeout=120, cwd=pwd.getpwnam("bob").pw_dir, check=True).stdout
    assert out.startswith("JobID|User|Submit"), out[:200]
    assert any("COMPLETED" in line for line in out.splitlines()[1:]), "alpha has no finished job in sacct"
    return out


def post_file(api, text: str, **params):
    return api.post(IMPORT, params=params, content=text.encode(), headers={"Content-Type": "text/plain"})


def cluster_jobs(api, name: str) -> int:
    r = api.get(SUMMARY)
    assert r.status_code == 200, r.text
    return next((c["jobs"] for c in r.json()["clusters"] if c["cluster"] == name), 0)


def test_anonymous_and_plain_members_cannot_import(service, users, kth_text):
    assert post_file(service, kth_text, format="swf", cluster=CLUSTER).status_code == 401
    assert service.get(SUMMARY).status_code == 401
    r = post_file(users["bob"], kth_text, format="swf", cluster=CLUSTER)
    assert r.status_code == 403, r.text
    assert cluster_jobs(users["alice"], CLUSTER) == 0


def test_a_bad_line_names_the_line_and_stores_nothing(users, kth_text):
    lines = kth_text.splitlines()
    bad_at = next(i for i, line in enumerate(lines) if not line.startswith(";")) + 10
    lines[bad_at] = lines[bad_at].replace(lines[bad_at].split()[3], "ninety", 1)
    r = post_file(users["alice"], "\n".join(lines) + "\n", format="swf", cluster=CLUSTER)
    assert r.status_code == 422, r.text
    body = r.json()
    assert f"line {bad_at + 1}" in body["detail"] and "nothing was stored" in body["detail"]
    assert body["errors"][0]["line"] == bad_at + 1
    short = lines[:bad_at] + [" ".join(lines[bad_at].split()[:17])] + lines[bad_at + 1:]
    r = post_file(users["alice"], "\n".join(short), format="swf", cluster=CLUSTER)
    assert r.status_code == 422 and "expected 18 fields, found 17" in r.json()["detail"], r.text
    assert post_file(users["alice"], kth_text, format="csv", cluster=CLUSTER).status_code == 422
    assert post_file(users["alice"], kth_text, format="swf", cluster="a b;rm").status_code == 422
    assert cluster_jobs(users["alice"], CLUSTER) == 0


def test_swf_import_is_counted_once_and_only_for_its_organization(users, kth_text):
    r = post_file(users["alice"], kth_text, format="swf", cluster=CLUSTER)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["lines"] == KTH_JOBS and first["imported"] + first["not_finished"] == KTH_JOBS
    assert first["imported"] > 0.99 * KTH_JOBS
    again = post_file(users["alice"], kth_text, format="swf", cluster=CLUSTER).json()
    assert again["imported"] == 0 and again["duplicates"] == first["imported"]
    assert cluster_jobs(users["alice"], CLUSTER) == first["imported"]
    assert cluster_jobs(users["bob"], CLUSTER) == first["imported"]      # a member sees the org's counts
    summary = users["carol"].get(SUMMARY).json()                          # another organization sees nothing
    assert summary["jobs"] == 0 and summary["clusters"] == [], summary
    assert post_file(users["carol"], kth_text, format="swf", cluster=CLUSTER).status_code == 403


def test_a_real_sacct_dump_imports_and_a_bad_line_is_refused(users, sacct_dump):
    lines = sacct_dump.splitlines()
    broken = list(lines)
    broken[3] = broken[3].replace("|", "|x|", 1)
    r = post_file(users["alice"], "\n".join(broken), format="sacct", cluster="alpha")
    assert r.status_code == 422 and r.json()["errors"][0]["line"] == 4, r.text
    assert cluster_jobs(users["alice"], "alpha") == 0
    r = post_file(users["alice"], sacct_dump, format="sacct", cluster="alpha")
    assert r.status_code == 201, r.text
    out = r.json()
    allocations = [line for line in lines[1:] if line and "." not in line.split("|")[0]]
    assert out["lines"] == len(allocations)
    finished = [line for line in allocations if line.split("|")[11].split(" ")[0] in
                ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY") and line.split("|")[3] not in
                ("Unknown", "None")]
    assert out["imported"] == len(finished) > 0
    assert cluster_jobs(users["alice"], "alpha") == out["imported"]
    assert users["carol"].get(SUMMARY).json()["jobs"] == 0


TEMPLATE = parse_template({
    "name": "sim", "steps": [{"name": "run", "command": ["python3", "sim.py"],
                              "resources": {"time_minutes": 240, "memory_mb": 2048, "cpus_per_task": 4,
                                            "min_time_minutes": 90, "min_memory_mb": 1536, "min_cores": 2}}]})


def _estimate(service, organization: str, username: str, cluster_name: str):
    cluster = Cluster(name=cluster_name, organization=organization, relative_speed=1.0,
                      energy_profile={"idle_watts_per_node": 90.0, "watts_per_core": 12.0, "pue": 1.2})
    with service.client.app_ref.state.sessions() as session:
        return estimate(session, Principal(username=username, organization=organization, roles=frozenset({"user"})),
                        TEMPLATE, {}, cluster)


def test_estimates_learn_from_the_imports_of_their_own_organization_only(service, users):
    assert users["alice"].get(SUMMARY).json()["jobs"] > KTH_JOBS * 0.99  # the imports above are in place
    assert REGISTRY.wait_idle(600), "the background refit did not finish"
    clear_cache()
    acme = _estimate(service, "acme", "alice", CLUSTER)
    assert acme.basis == "history" and acme.history_jobs >= KTH_JOBS * 0.99, acme
    assert 0.2 < acme.confidence <= 1.0
    assert acme.requested == {"time_limit_s": 14400.0, "memory_mb": 2048.0, "cores": 4, "nodes": 1}
    assert 0 < acme.run_s <= acme.run_limit_s <= 14400.0
    globex = _estimate(service, "globex", "carol", CLUSTER)
    assert globex.basis == "template-defaults" and globex.history_jobs == 0 and globex.confidence == 0.2
    assert globex.run_s == globex.run_limit_s == 14400.0 and globex.energy_estimated
    # energy from the profile: (90 W + 12 W x 4 cores) x 1 node x 4 h x PUE 1.2
    assert globex.energy_j == pytest.approx((90 + 12 * 4) * 14400 * 1.2)


def test_right_sizing_never_goes_below_the_template_minimums(service, users):
    assert REGISTRY.wait_idle(600)
    clear_cache()
    for cluster in (CLUSTER, "alpha"):
        est = _estimate(service, "acme", "alice", cluster)
        assert est.run_limit_s >= 90 * 60 and est.memory_mb >= 1536 and est.cores >= 2, est
        assert est.run_limit_s <= 14400 and est.memory_mb <= 2048


def test_deleting_an_organization_deletes_its_imported_history(service, root_api, kth_text):
    tenant = make_tenant(service, root_api, "h")
    try:
        r = post_file(tenant.apis["org_admin"], kth_text, format="swf", cluster=CLUSTER)
        assert r.status_code == 201 and r.json()["imported"] > 0, r.text
    finally:
        drop_tenant(root_api, tenant)
    assert REGISTRY.wait_idle(600)  # the refit the import started is done before the database goes
    with service.client.app_ref.state.sessions() as session:
        left = session.query(HistoryJob).filter(HistoryJob.organization == tenant.name).count()
    assert left == 0
