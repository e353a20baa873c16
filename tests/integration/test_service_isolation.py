"""Tenant isolation of the whole API, generated from the app's own OpenAPI route list.

Every operation the served OpenAPI document lists is called by five callers: anonymous, a user of
another organization, a user, an org admin and a platform admin. The status each must get comes from
the access table (api/access.py) read through the matrix below; path parameters are filled with the ids
of the organization the caller does NOT belong to, so an allowed caller must still find nothing (404),
and no body may name the other organization's names or ids. Runs on SQLite and on PostgreSQL.

A route added to the app shows up here by itself: nothing in this file lists routes.
"""
from __future__ import annotations

import time
import uuid

import pytest

from heroes_service.api.access import ACCESS
from service_support import DEMO_PASSWORDS, PREFIX, database_url, root_api, service, tenants  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

CALLERS = ("anonymous", "other_org_user", "user", "org_admin", "platform_admin")
#: access level -> callers allowed (the issue's roles: platform-admin, org-admin, user)
ALLOWED = {
    "public": set(CALLERS),
    "user": {"other_org_user", "user", "org_admin", "platform_admin"},
    "org-admin": {"org_admin"},
    "platform-admin": {"platform_admin"},
    "hub-service": set(),  # only the hub's own service token (tests/integration/test_data_server_keys.py)
}


def operations(service) -> list[tuple[str, str, dict]]:
    document = service.get("/openapi.json").json()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                found.append((method.upper(), path[len(PREFIX):], operation))
    # logging out revokes the caller's session: keep it for the very end
    return sorted(found, key=lambda op: op[1] == "/organization/auth/logout")


def fill(path: str, operation: dict, foreign, random_ids: bool) -> str:
    """The path with its parameters set to the foreign organization's objects (or to random ids)."""
    values = {"user_id": foreign.user_id, "group_id": foreign.group_id, "organization_id": foreign.id,
              "role_name": "user"}
    for param in operation.get("parameters", []):
        if param.get("in") != "path":
            continue
        name = param["name"]
        value = str(uuid.uuid4()) if random_ids and name != "role_name" else values.get(name, foreign.name)
        path = path.replace("{" + name + "}", value).replace("{" + name + ":path}", value)
    return path


def body_for(method: str, path: str, foreign) -> dict | None:
    """Bodies that try to reach into the foreign organization where a route takes user names."""
    if method not in {"POST", "PATCH", "PUT"}:
        return None
    if path == "/organization/admin/roles/":
        return {"role": "user", "username": foreign.user}
    if path == "/organization/admin/groups/{group_id}":
        return {"add_members": [foreign.user]}
    if path == "/organization/admin/groups/":
        return {"name": "probe", "members": [foreign.user]}
    return {}


@pytest.fixture
def callers(service, tenants):
    """Fresh sessions for each test (the matrix ends by logging every caller out)."""
    a, b = tenants["a"], tenants["b"]
    # (api, own tenant or None, foreign tenant whose ids go into paths, random ids instead)
    return {
        "anonymous": (service, None, b, False),
        "other_org_user": (service.login(b.user, b.password), b, a, False),
        "user": (service.login(a.user, a.password), a, b, False),
        "org_admin": (service.login(a.admin, a.password), a, b, False),
        "platform_admin": (service.login("root", DEMO_PASSWORDS["root"]), None, b, True),
    }


def test_every_route_has_a_row(service):
    ops = operations(service)
    assert len(ops) >= 30
    missing = [(m, p) for m, p, _ in ops if (m, p) not in ACCESS]
    assert not missing, f"routes without an access row: {missing}"


def test_isolation_matrix(service, callers, tenants):
    failures, calls = [], 0
    for method, template, operation in operations(service):
        level = ACCESS[(method, template)]
        if method == "POST" and template == "/heroes/admin/organizations/":
            continue  # creating organizations is covered by the API tests (a body here would create one)
        for caller in CALLERS:
            api, own, foreign, random_ids = callers[caller]
            path = fill(template, operation, foreign, random_ids)
            body = body_for(method, template, foreign)
            response = api.request(method, path, json=body) if body is not None else api.request(method, path)
            calls += 1
            status = response.status_code
            where = f"{caller} {method} {template} -> {status} {response.text[:200]}"
            if status >= 500:
                failures.append(f"server error: {where}")
                continue
            if caller in ALLOWED[level]:
                if status in (401, 403) and level != "public":
                    failures.append(f"refused although allowed ({level}): {where}")
                if level == "org-admin" and "_id}" in template and status not in (404, 422):
                    failures.append(f"another organization's object answered: {where}")
            elif caller == "anonymous":
                if status != 401:
                    failures.append(f"anonymous not 401 ({level}): {where}")
            elif status != 403:
                failures.append(f"not 403 for a caller without {level}: {where}")
            if caller != "platform_admin":
                secret = set()
                for tenant in tenants.values():
                    if own is None or tenant is not own:
                        secret |= tenant.secrets()
                sent = path + (str(body) if body else "")
                leaked = sorted(s for s in secret if s in response.text and s not in sent)
                if leaked:
                    failures.append(f"leak of {leaked}: {where}")
    assert calls >= 150
    assert not failures, "\n".join(failures)


def test_org_admin_lists_only_own_organization(callers, tenants):
    a, b = tenants["a"], tenants["b"]
    api = callers["org_admin"][0]
    users = api.get("/organization/admin/users/").json()
    assert {u["username"] for u in users} == {a.admin, a.user}
    groups = api.get("/organization/admin/groups/").json()
    assert [g["name"] for g in groups] == [a.group]
    for role in api.get("/organization/admin/roles/").json():
        assert set(role["members"]) <= {a.admin, a.user}
    for response in (api.get("/organization/admin/users/"), api.get("/organization/admin/groups/"),
                     api.get("/organization/admin/roles/"), api.get("/organization/auth/me")):
        assert not [s for s in b.secrets() if s in response.text]


def test_platform_admin_sees_both_organizations(callers, tenants):
    names = {o["name"] for o in callers["platform_admin"][0].get("/heroes/admin/organizations/").json()}
    assert {tenants["a"].name, tenants["b"].name} <= names


# --- energy records: one tenant can neither learn of nor suppress another's (issue 14) --------------------
ING = "/organization/decision/ingest_ear_files"
STEPS = "/organization/decision/energy/steps"


def _ear_file(job: int, nodes=("n1", "n2")) -> str:
    import random

    from heroes_energy import columns as C
    from heroes_energy import synthetic

    rng = random.Random(job)
    names = C.ear_app_columns(num_gpus=0)
    lines = [C.SEP.join(names)]
    for node in nodes:
        values = synthetic.ear_row_values(job, 0, node, rng)
        lines.append(C.SEP.join(values[n] for n in names))
    return "\n".join(lines) + "\n"


def _ingest(api, job: int, cluster: str, **params):
    return api.post(ING, params={"cluster": cluster, **params},
                    json={"files": [{"name": f"job-{job}.csv", "content": _ear_file(job)}]})


def _steps(api, job: int, cluster: str) -> list[dict]:
    r = api.get(STEPS, params={"cluster": cluster, "job_id": job})
    assert r.status_code == 200, r.text
    return r.json()["steps"]


def test_energy_records_neither_reveal_nor_suppress_another_tenants(callers, tenants):
    a_user, b_user = callers["user"][0], callers["other_org_user"][0]
    a_admin = callers["org_admin"][0]
    cluster = f"shared-{uuid.uuid4().hex[:6]}"
    job_a, job_b = 7_771_000 + uuid.uuid4().int % 100_000, 7_872_000 + uuid.uuid4().int % 100_000
    # existence: B ingesting the same (cluster, job, step, node) as A learns nothing of A's records
    first = _ingest(a_user, job_a, cluster)
    assert first.status_code == 201 and first.json()["stored"] == 2 and first.json()["duplicates"] == 0, first.text
    probe = _ingest(b_user, job_a, cluster)
    assert probe.status_code == 201, probe.text
    assert probe.json()["duplicates"] == 0 and probe.json()["stored"] == 2, "B learned that A ran the job"
    # suppression: B storing a job first does not make A's real records of it disappear
    assert _ingest(b_user, job_b, cluster).json()["stored"] == 2
    real = _ingest(a_user, job_b, cluster)
    assert real.status_code == 201 and real.json()["stored"] == 2 and real.json()["duplicates"] == 0, real.text
    for api, tenant in ((a_user, tenants["a"]), (b_user, tenants["b"])):
        for job in (job_a, job_b):
            steps = _steps(api, job, cluster)
            assert len(steps) == 1 and {s["organization"] for s in steps} == {tenant.name}, steps
    # ingesting again is still a duplicate within one organization
    again = _ingest(a_user, job_a, cluster)
    assert again.json()["duplicates"] == 2 and again.json()["stored"] == 0
    # an org admin may record for a member of their organization only
    assert _ingest(a_admin, job_a + 1, cluster, user=tenants["a"].user).status_code == 201
    foreign = _ingest(a_admin, job_a + 2, cluster, user=tenants["b"].user)
    assert foreign.status_code == 422 and "not a member" in foreign.text, foreign.text
    assert not _steps(b_user, job_a + 2, cluster)
    bad = _ingest(a_user, job_a + 3, "Alpha;rm -rf /")
    assert bad.status_code == 422 and "cluster name" in bad.text


def test_energy_for_another_organizations_cluster_is_refused(service, callers, tenants):
    """A cluster name another organization enrolled, and yours did not, is not yours to record energy on."""
    from heroes_service.clusters.models import Cluster

    sessions = service.client.app_ref.state.sessions
    name = f"own-{uuid.uuid4().hex[:6]}"
    with sessions() as session, session.begin():
        session.add(Cluster(organization=tenants["b"].name, name=name, host="192.0.2.1", port=22, work_dir="w",
                            container_runtime="none", identity_mode="per-user", host_key_type="ssh-ed25519",
                            host_key_b64="AAAA", host_key_fingerprint="SHA256:x"))
    try:
        refused = _ingest(callers["user"][0], 9_000_001, name)
        assert refused.status_code == 422 and "not one of your organization's clusters" in refused.text
        assert _ingest(callers["other_org_user"][0], 9_000_001, name).status_code == 201
    finally:
        with sessions() as session, session.begin():
            session.query(Cluster).filter(Cluster.name == name).delete()


# --- cluster identity: a name an org admin picks never becomes another account (issue 14) -----------------
IMPOSTORS = ("jh-carol", "jh-bob", "postgres", "cloudsdk", "heroes", "daemon")
PROBE_TEMPLATE = {"name": "whoami-probe", "steps": [{"name": "who", "command": ["id", "-un"]}],
                  "container": {"runtime": "none"}}


@pytest.fixture(scope="module")
def acme_alpha(service, stack_settings, require):
    """alice (acme's org admin, the demo realm's) enrolls alpha in per-user mode and publishes a template."""
    from heroes_dev.components.login import host_key_fingerprint, ssh_port
    from heroes_service.clusters import identity
    from cluster_testing import isolated_secrets

    for name in ("slurm-alpha", "login-alpha"):
        require(name)
    with isolated_secrets():
        alice = service.login("alice", DEMO_PASSWORDS["alice"])
        port = ssh_port(stack_settings, "alpha")
        r = alice.post("/organization/admin/cluster/host-key", json={"host": stack_settings.host, "port": port})
        assert r.status_code == 200 and r.json()["fingerprint"] == host_key_fingerprint(stack_settings, "alpha"), r.text
        r = alice.post("/organization/admin/cluster/", json={
            "name": "alpha", "host": stack_settings.host, "port": port, "host_key_fingerprint": r.json()["fingerprint"],
            "work_dir": "heroes-work/{login}", "container_runtime": "none"})
        assert r.status_code == 201, r.text
        cluster_id = r.json()["id"]
        r = alice.post("/organization/admin/workflow/template", json={"template": PROBE_TEMPLATE})
        assert r.status_code == 201, r.text
        yield {"alice": alice, "cluster_id": cluster_id, "service": service}
        alice.delete(f"/organization/admin/workflow/template/{r.json()['id']}")
        assert alice.delete(f"/organization/admin/cluster/{cluster_id}").status_code == 204
        identity.forget_cluster(cluster_id)


def _fresh_user(alice, name: str, password: str) -> str:
    """Create ``name`` in acme (removing a leftover of an interrupted run first); its id."""
    for user in alice.get("/organization/admin/users/").json():
        if user["username"] == name:
            alice.delete(f"/organization/admin/users/{user['id']}")
    r = alice.post("/organization/admin/users/", json={"username": name, "password": password})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_users_named_after_other_accounts_run_nothing_as_them(acme_alpha):
    """alice names users after another tenant's gateway account, a system account, the gateway host's account
    and the gateway's service account: each one's submit is refused before anything reaches the cluster."""
    alice, service = acme_alpha["alice"], acme_alpha["service"]
    password = "Pw-" + uuid.uuid4().hex
    created = []
    try:
        for name in IMPOSTORS:
            created.append(_fresh_user(alice, name, password))
            impostor = service.login(name, password)
            r = impostor.post("/organization/workflow/submit", json={"template": PROBE_TEMPLATE["name"],
                                                                      "cluster": "alpha"})
            assert r.status_code == 403, (name, r.status_code, r.text)
            assert f"{name}@acme has no login" in r.text, r.text
            assert impostor.get("/organization/workflow/instance").json() == []  # nothing was even recorded
        # alice's own identity on the cluster is untouched: her test connection logs in as alice
        report = alice.post(f"/organization/admin/cluster/{acme_alpha['cluster_id']}/test").json()
        assert report["login"] == "alice" and report["ok"], report
    finally:
        for user_id in created:
            alice.delete(f"/organization/admin/users/{user_id}")


@pytest.mark.parametrize("how", ["delete", "disable"])
def test_deleting_or_disabling_a_user_ends_their_cluster_sessions(acme_alpha, stack_settings, how):
    from heroes_dev.components.login import principals_dir
    from heroes_service.auth import Principal
    from heroes_service.clusters import embedded, identity
    from heroes_service.clusters.errors import NoClusterAccess
    from cluster_testing import embedded_cluster

    alice = acme_alpha["alice"]
    name, password = f"tmp{uuid.uuid4().hex[:8]}", "Pw-" + uuid.uuid4().hex
    listed = principals_dir(stack_settings, "alpha") / "bob"
    original = listed.read_text()
    user_id = None
    try:
        listed.write_text(original + f"{name}@acme\n")  # the cluster's owner lets the new user act as bob
        embedded.forget_published()
        user_id = _fresh_user(alice, name, password)
        principal = Principal(username=name, organization="acme", roles=frozenset({"user"}))
        alpha = embedded_cluster(stack_settings, "alpha")
        conn = identity.connector_for(alpha, principal)
        assert conn.run(["id", "-un"]).stdout.strip() == "bob"
        channel = conn.open_exec(["sleep", "300"])  # a session that would outlive the user
        if how == "delete":
            assert alice.delete(f"/organization/admin/users/{user_id}").status_code == 204
            user_id = None
        else:
            assert alice.patch(f"/organization/admin/users/{user_id}", json={"enabled": False}).status_code == 200
        deadline = time.monotonic() + 10
        while not channel.closed and channel.get_transport() is not None and channel.get_transport().is_active():
            assert time.monotonic() < deadline, "the user's SSH session is still open"
            time.sleep(0.1)
        assert conn.stats()["connections"] == 0
        with pytest.raises(NoClusterAccess):
            conn.run(["true"], timeout=10)  # not even the connector built before gets a new certificate
        with pytest.raises(NoClusterAccess):
            identity.connector_for(alpha, principal)
    finally:
        listed.write_text(original)
        embedded.forget_published()
        if user_id:
            alice.delete(f"/organization/admin/users/{user_id}")
        identity.restore_user(name, "acme")


# --- the host-key probe is no port scanner (issue 14) ------------------------------------------------------
def test_host_key_probe_is_no_port_scanner(callers, stack_settings, monkeypatch):
    """Loopback, link-local and metadata addresses are refused; where the platform admin allows local hosts, a
    closed port and an open non-SSH port answer the same sentence; an organization's failed probes are
    rate-limited (successes are not: an admin enrolling many clusters is no scan)."""
    import socket

    from heroes_service.clusters import probes
    from heroes_service.clusters.config import get_clusters_settings
    from cluster_testing import free_port

    admin = callers["org_admin"][0]
    probes.PROBES.clear()

    def probe(host: str, port: int):
        return admin.post("/organization/admin/cluster/host-key", json={"host": host, "port": port})

    def sentence(response, host: str, port: int) -> str:
        assert response.status_code == 422, response.text
        return response.json()["detail"].replace(f"{host}:{port}", "HOST")

    postgres_port = stack_settings.ports.postgres
    for host, port in (("127.0.0.1", postgres_port), ("169.254.169.254", 80), ("0:0:0:0:0:0:0:1", 22), ("localhost", 8080)):
        assert "no SSH host key could be read" in sentence(probe(host, port), host, port)
    # the embedded stack's own login node stays reachable (its clusters are on 127.0.0.1)
    from heroes_dev.components.login import ssh_port

    assert probe(stack_settings.host, ssh_port(stack_settings, "alpha")).status_code == 200
    monkeypatch.setenv("HEROES_SERVICE_CLUSTERS_ALLOW_LOCAL_HOSTS", "true")
    get_clusters_settings.cache_clear()
    try:
        closed = free_port()
        with socket.create_connection(("127.0.0.1", postgres_port), timeout=5):
            pass  # the open, non-SSH port really is open
        answers = {sentence(probe("127.0.0.1", closed), "127.0.0.1", closed),
                   sentence(probe("127.0.0.1", postgres_port), "127.0.0.1", postgres_port)}
        assert len(answers) == 1, answers  # closed and open-but-not-SSH cannot be told apart
    finally:
        monkeypatch.delenv("HEROES_SERVICE_CLUSTERS_ALLOW_LOCAL_HOSTS")
        get_clusters_settings.cache_clear()
    statuses = [probe("127.0.0.1", 1).status_code for _ in range(get_clusters_settings().host_key_probes_per_minute)]
    assert statuses[-1] == 429 and set(statuses[:-1]) <= {422, 429}, statuses
    assert "per minute" in probe("127.0.0.1", 1).text
    # once an organization's failed probes fill the minute, every probe waits, even one that would work
    assert probe(stack_settings.host, ssh_port(stack_settings, "alpha")).status_code == 429
    probes.PROBES.clear()


@pytest.mark.parametrize("login", ["root", "daemon", "postgres", "jh-carol"])
def test_enrollment_refuses_root_system_and_gateway_service_logins(acme_alpha, stack_settings, login):
    from heroes_dev.components.login import host_key_fingerprint, ssh_port

    r = acme_alpha["alice"].post("/organization/admin/cluster/", json={
        "name": "alpha-root", "host": stack_settings.host, "port": ssh_port(stack_settings, "alpha"),
        "host_key_fingerprint": host_key_fingerprint(stack_settings, "alpha"), "work_dir": "heroes-work",
        "container_runtime": "none", "service_login": login})
    assert r.status_code == 422 and "service_login" in r.text and login in r.text, r.text
    names = [c["name"] for c in acme_alpha["alice"].get("/organization/admin/cluster/").json()]
    assert "alpha-root" not in names
