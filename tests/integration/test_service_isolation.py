"""Tenant isolation of the whole API, generated from the app's own OpenAPI route list.

Every operation the served OpenAPI document lists is called by five callers: anonymous, a user of
another organization, a user, an org admin and a platform admin. The status each must get comes from
the access table (api/access.py) read through the matrix below; path parameters are filled with the ids
of the organization the caller does NOT belong to, so an allowed caller must still find nothing (404),
and no body may name the other organization's names or ids. Runs on SQLite and on PostgreSQL.

A route added to the app shows up here by itself: nothing in this file lists routes.
"""
from __future__ import annotations

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
