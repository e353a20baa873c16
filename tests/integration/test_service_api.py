"""The service's identity API against real Keycloak and the real hub, on SQLite and on PostgreSQL.

Auth (login, me, refresh, logout that revokes), organization admin (users, groups, roles), platform admin
(organizations, OAuth clients, storage servers), the clear errors (409, 422 with the rule, 404, 503
"Keycloak unreachable"), and nothing half-done when a later step fails.
"""
from __future__ import annotations

import secrets
import socket
import uuid

import pytest
import requests
from sqlalchemy import inspect, text

from heroes_dev.components import keycloak as kc
from heroes_service.app import create_app
from heroes_service.identity import lifecycle
from service_support import (DEMO_PASSWORDS, Api, TestClient, database_url, root_api, service,  # noqa: F401
                             service_settings, tenants)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hub_group(stack_settings, name: str):
    from heroes_dev.components.jupyterhub import admin_token
    r = requests.get(f"http://127.0.0.1:{stack_settings.ports.hub_api}/hub/api/groups/{name}", timeout=10,
                     headers={"Authorization": f"token {admin_token(stack_settings)}"})
    return r.json() if r.status_code == 200 else None


def keycloak_groups_named(name: str, stack_settings) -> list[dict]:
    admin = kc.AdminClient(stack_settings)
    status, body = admin.call("GET", f"/groups?search={name}&exact=true")
    import json
    return [g for g in json.loads(body) if g["name"] == name] if status == 200 else []


# --- database ---------------------------------------------------------------------------------------------
def test_migrations_created_the_tables(service):
    engine = service.client.app_ref.state.engine
    tables = set(inspect(engine).get_table_names())
    assert {"organizations", "organization_clients", "storage_servers", "revoked_sessions",
            "alembic_version"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


# --- auth -------------------------------------------------------------------------------------------------
def test_login_me_refresh_and_logout_revokes(service, tenants):
    a = tenants["a"]
    r = service.post("/organization/auth/login", json={"username": a.user, "password": a.password})
    assert r.status_code == 200, r.text
    tokens = r.json()
    me = service.as_bearer(tokens["access_token"]).get("/organization/auth/me")
    assert me.status_code == 200
    assert me.json() == {"username": a.user, "organization": a.name, "groups": sorted([a.name, f"{a.name}.{a.group}"]),
                         "roles": ["user"], "via": "keycloak"}
    r = service.get("/organization/auth/refresh_token", headers={"X-Refresh-Token": tokens["refresh_token"]})
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert service.as_bearer(fresh["access_token"]).get("/organization/auth/me").status_code == 200
    r = service.as_bearer(fresh["access_token"]).post("/organization/auth/logout",
                                                     json={"refresh_token": fresh["refresh_token"]})
    assert r.status_code == 204, r.text
    # the old and the refreshed access tokens of that session are refused at once, the refresh token is dead
    for token in (tokens["access_token"], fresh["access_token"]):
        r = service.as_bearer(token).get("/organization/auth/me")
        assert r.status_code == 401 and "logged out" in r.json()["detail"]
    r = service.get("/organization/auth/refresh_token", headers={"X-Refresh-Token": fresh["refresh_token"]})
    assert r.status_code == 401


def test_bad_credentials_are_401_with_a_clear_message(service, stack_settings):
    r = service.post("/organization/auth/login", json={"username": "alice", "password": "wrong"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid username or password"
    assert service.get("/organization/auth/me").json()["detail"].startswith("authentication required")
    r = service.get("/organization/auth/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401 and "invalid bearer token" in r.json()["detail"]
    r = service.get("/organization/auth/me", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert r.status_code == 401 and "unsupported Authorization scheme" in r.json()["detail"]
    r = service.get("/organization/auth/me", headers={"Authorization": "token not-a-hub-token"})
    assert r.status_code == 401 and "JupyterHub token" in r.json()["detail"]
    # a real token of another realm (master) is refused: its key is not the heroes realm's
    master = requests.post(f"{kc.base_url(stack_settings)}/realms/master/protocol/openid-connect/token", timeout=10,
                           data={"grant_type": "password", "client_id": "admin-cli", "username": "admin",
                                 "password": kc.admin_password(stack_settings)}).json()["access_token"]
    r = service.get("/organization/auth/me", headers={"Authorization": f"Bearer {master}"})
    assert r.status_code == 401
    # a tampered token is refused
    token = service.post("/organization/auth/login", json={"username": "bob", "password": "bob-pass"}).json()
    header, payload, signature = token["access_token"].split(".")
    r = service.get("/organization/auth/me", headers={"Authorization": f"Bearer {header}.{payload}.{signature[::-1]}"})
    assert r.status_code == 401


def test_demo_users_resolve_to_their_organization(service):
    for user, org, roles in (("alice", "acme", ["org-admin", "user"]), ("carol", "globex", ["user"]),
                             ("root", None, ["platform-admin", "user"])):
        me = service.login(user, DEMO_PASSWORDS[user]).get("/organization/auth/me").json()
        assert (me["organization"], me["roles"]) == (org, roles)


# --- organization admin -----------------------------------------------------------------------------------
def test_user_lifecycle(service, tenants):
    a = tenants["a"]
    admin = a.apis["org_admin"]
    name = f"new{secrets.token_hex(3)}"
    r = admin.post("/organization/admin/users/", json={"username": name, "password": "Secret-pass-1",
                                                      "email": f"{name}@example.org", "groups": [a.group]})
    assert r.status_code == 201, r.text
    user = r.json()
    assert (user["username"], user["groups"], user["roles"]) == (name, [a.group], ["user"])
    assert admin.post("/organization/admin/users/", json={"username": name}).status_code == 409
    r = admin.post("/organization/admin/users/", json={"username": "Not Valid!"})
    assert r.status_code == 422 and r.json()["rule"].startswith("username: 2-31 characters: lowercase letters")
    r = admin.post("/organization/admin/users/", json={"username": f"x{name}", "groups": ["no-such-group"]})
    assert r.status_code == 422 and r.json()["rule"] == "groups must exist in your organization"
    # the new user logs in with the password and sees organization and group at once
    me = service.login(name, "Secret-pass-1").get("/organization/auth/me").json()
    assert me["organization"] == a.name and f"{a.name}.{a.group}" in me["groups"]
    r = admin.patch(f"/organization/admin/users/{user['id']}", json={"first_name": "Neo", "enabled": False})
    assert r.status_code == 200 and r.json()["first_name"] == "Neo" and r.json()["enabled"] is False
    assert service.post("/organization/auth/login", json={"username": name, "password": "Secret-pass-1"}).status_code == 401
    assert admin.delete(f"/organization/admin/users/{user['id']}").status_code == 204
    assert admin.get(f"/organization/admin/users/{user['id']}").status_code == 404
    assert admin.delete(f"/organization/admin/users/{user['id']}").status_code == 404
    r = admin.delete(f"/organization/admin/users/{a.admin_id}")
    assert r.status_code == 409 and "your own account" in r.json()["detail"]


def test_group_membership_shows_on_the_next_call_and_in_the_hub(service, tenants, stack_settings):
    a = tenants["a"]
    admin, user = a.apis["org_admin"], a.apis["user"]
    name = f"g{secrets.token_hex(3)}"
    r = admin.post("/organization/admin/groups/", json={"name": name})
    assert r.status_code == 201, r.text
    group = r.json()
    assert group["hub_group"] == f"{a.name}.{name}" and group["members"] == []
    assert hub_group(stack_settings, group["hub_group"]) is not None  # mirrored at once
    assert admin.post("/organization/admin/groups/", json={"name": name}).status_code == 409
    r = admin.post("/organization/admin/groups/", json={"name": "-bad"})
    assert r.status_code == 422 and "starting with a letter" in r.json()["rule"]
    before = user.get("/organization/auth/me").json()["groups"]
    assert group["hub_group"] not in before
    r = admin.patch(f"/organization/admin/groups/{group['id']}", json={"add_members": [a.user]})
    assert r.status_code == 200 and r.json()["members"] == [a.user]
    assert group["hub_group"] in user.get("/organization/auth/me").json()["groups"]  # the very next call
    r = admin.patch(f"/organization/admin/groups/{group['id']}", json={"add_members": ["carol"]})
    assert r.status_code == 422 and r.json()["rule"] == "members must be users of your organization"
    r = admin.patch(f"/organization/admin/groups/{group['id']}", json={"remove_members": [a.user]})
    assert r.status_code == 200 and r.json()["members"] == []
    assert group["hub_group"] not in user.get("/organization/auth/me").json()["groups"]
    assert admin.delete(f"/organization/admin/groups/{group['id']}").status_code == 204
    assert hub_group(stack_settings, group["hub_group"]) is None
    assert admin.get(f"/organization/admin/groups/{group['id']}").status_code == 404


def test_roles_take_effect_on_the_next_call(service, tenants):
    a = tenants["a"]
    admin, user = a.apis["org_admin"], a.apis["user"]
    assert user.get("/organization/admin/users/").status_code == 403
    r = admin.post("/organization/admin/roles/", json={"role": "org-admin", "username": a.user})
    assert r.status_code == 201 and a.user in r.json()["members"]
    assert admin.post("/organization/admin/roles/", json={"role": "org-admin", "username": a.user}).status_code == 409
    assert user.get("/organization/admin/users/").status_code == 200
    assert a.user in admin.get("/organization/admin/roles/org-admin").json()["members"]
    assert admin.delete(f"/organization/admin/roles/org-admin/users/{a.user_id}").status_code == 204
    assert user.get("/organization/admin/users/").status_code == 403
    r = admin.post("/organization/admin/roles/", json={"role": "platform-admin", "username": a.user})
    assert r.status_code == 422 and r.json()["rule"] == "roles must be among org-admin, user"
    assert admin.get("/organization/admin/roles/platform-admin").status_code == 404
    r = admin.delete(f"/organization/admin/roles/org-admin/users/{a.admin_id}")
    assert r.status_code == 409


# --- platform admin ---------------------------------------------------------------------------------------
def test_organization_lifecycle_clients_and_servers(service, root_api, stack_settings):
    name = f"o{secrets.token_hex(4)}"
    r = root_api.post("/heroes/admin/organizations/", json={"name": name, "display_name": "Org O"})
    assert r.status_code == 201, r.text
    org = r.json()
    try:
        assert root_api.post("/heroes/admin/organizations/", json={"name": name}).status_code == 409
        r = root_api.post("/heroes/admin/organizations/", json={"name": "Acme Corp"})
        assert r.status_code == 422 and r.json()["detail"] == ("invalid name: 2-32 characters: lowercase letters, "
                                                               "digits and '-', starting with a letter, not ending with '-'")
        assert keycloak_groups_named(name, stack_settings) and hub_group(stack_settings, name) is not None
        assert root_api.get(f"/heroes/admin/organizations/{uuid.uuid4()}").status_code == 404
        # an OAuth client for scripts: client-credentials tokens act as a user of the organization
        r = root_api.post(f"/heroes/admin/organizations/{org['id']}/clients/", json={"name": "ci"})
        assert r.status_code == 201, r.text
        client = r.json()
        assert client["client_id"] == f"{name}-ci" and client["client_secret"]
        assert root_api.post(f"/heroes/admin/organizations/{org['id']}/clients/", json={"name": "ci"}).status_code == 409
        listed = root_api.get(f"/heroes/admin/organizations/{org['id']}/clients/").json()
        assert [c["client_id"] for c in listed] == [client["client_id"]] and listed[0]["client_secret"] is None
        token = requests.post(client["token_url"], timeout=10, data={
            "grant_type": "client_credentials", "client_id": client["client_id"],
            "client_secret": client["client_secret"]}).json()["access_token"]
        me = service.as_bearer(token).get("/organization/auth/me").json()
        assert me["organization"] == name and me["roles"] == ["user"]
        assert root_api.delete(f"/heroes/admin/organizations/{org['id']}/clients/{client['id']}").status_code == 204
        assert service.as_bearer(token).get("/organization/auth/me").status_code == 401
        # storage servers
        r = root_api.post(f"/heroes/admin/organizations/{org['id']}/servers/",
                          json={"name": "s3", "endpoint_url": "http://127.0.0.1:9000"})
        assert r.status_code == 201, r.text
        server = r.json()
        assert root_api.post(f"/heroes/admin/organizations/{org['id']}/servers/",
                             json={"name": "s3", "endpoint_url": "http://127.0.0.1:9000"}).status_code == 409
        r = root_api.post(f"/heroes/admin/organizations/{org['id']}/servers/",
                          json={"name": "s4", "endpoint_url": "ftp://x"})
        assert r.status_code == 422
        assert root_api.get(f"/heroes/admin/organizations/{org['id']}/servers/{server['id']}").json()["name"] == "s3"
        detail = root_api.get(f"/heroes/admin/organizations/{org['id']}").json()
        assert (detail["clients"], detail["servers"]) == (0, 1)
        assert root_api.delete(f"/heroes/admin/organizations/{org['id']}/servers/{server['id']}").status_code == 204
    finally:
        assert root_api.delete(f"/heroes/admin/organizations/{org['id']}").status_code == 204
    assert root_api.get(f"/heroes/admin/organizations/{org['id']}").status_code == 404
    assert not keycloak_groups_named(name, stack_settings) and hub_group(stack_settings, name) is None


def test_delete_with_running_work_needs_force(service, root_api):
    name = f"w{secrets.token_hex(4)}"
    org = root_api.post("/heroes/admin/organizations/", json={"name": name}).json()

    def busy(_session, organization):
        return [f"workflow 42 running on alpha"] if organization.name == name else []

    lifecycle.register_work_checker(busy)
    try:
        r = root_api.delete(f"/heroes/admin/organizations/{org['id']}")
        assert r.status_code == 409 and "running work" in r.json()["detail"] and "force=true" in r.json()["detail"]
        assert root_api.get(f"/heroes/admin/organizations/{org['id']}").status_code == 200
        assert root_api.delete(f"/heroes/admin/organizations/{org['id']}", params={"force": "true"}).status_code == 204
    finally:
        lifecycle.WORK_CHECKERS.remove(busy)


def test_deleting_an_organization_deletes_its_accounts(service, root_api):
    name, admin = f"d{secrets.token_hex(4)}", f"dadm{secrets.token_hex(3)}"
    org = root_api.post("/heroes/admin/organizations/", json={
        "name": name, "admins": [{"username": admin, "password": "Admin-pass-1"}]}).json()
    assert service.login(admin, "Admin-pass-1").get("/organization/auth/me").json()["organization"] == name
    assert root_api.delete(f"/heroes/admin/organizations/{org['id']}").status_code == 204
    r = service.post("/organization/auth/login", json={"username": admin, "password": "Admin-pass-1"})
    assert r.status_code == 401


# --- nothing half-done ------------------------------------------------------------------------------------
def test_failing_hook_undoes_the_organization_everywhere(service, root_api, stack_settings):
    name = f"f{secrets.token_hex(4)}"

    def storage_fails(_session, organization):
        if organization.name == name:
            raise RuntimeError("storage backend refused")

    lifecycle.register_created(storage_fails)
    try:
        r = root_api.post("/heroes/admin/organizations/", json={
            "name": name, "admins": [{"username": f"u{name}", "password": "Admin-pass-1"}]})
    finally:
        lifecycle.CREATED[:] = [h for h in lifecycle.CREATED if h[0] is not storage_fails]
    assert r.status_code == 500 and "was undone" in r.json()["detail"]
    assert "Traceback" not in r.text and "storage backend refused" not in r.text
    assert name not in {o["name"] for o in root_api.get("/heroes/admin/organizations/").json()}
    assert not keycloak_groups_named(name, stack_settings)
    assert hub_group(stack_settings, name) is None
    assert service.post("/organization/auth/login", json={"username": f"u{name}",
                                                          "password": "Admin-pass-1"}).status_code == 401


def test_keycloak_conflict_leaves_the_database_unchanged(service, root_api, tenants, stack_settings):
    """A client id taken in Keycloak behind the API's back: 409, and no row in the database."""
    a = tenants["a"]
    admin = kc.AdminClient(stack_settings)
    status, _ = admin.call("POST", "/clients", {"clientId": f"{a.name}-taken", "enabled": True})
    assert status == 201
    try:
        r = root_api.post(f"/heroes/admin/organizations/{a.id}/clients/", json={"name": "taken"})
        assert r.status_code == 409, r.text
        assert root_api.get(f"/heroes/admin/organizations/{a.id}/clients/").json() == []
    finally:
        kc_id = admin.client(f"{a.name}-taken")["id"]
        admin.call("DELETE", f"/clients/{kc_id}")


def test_hub_down_undoes_the_keycloak_group(database_url, stack_settings, tenants):
    a = tenants["a"]
    settings = service_settings(stack_settings, database_url, hub_api_url=f"http://127.0.0.1:{free_port()}/hub/api")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        api = Api(client).login(a.admin, a.password)
        name = f"h{secrets.token_hex(3)}"
        r = api.post("/organization/admin/groups/", json={"name": name})
        assert r.status_code == 503 and "JupyterHub unreachable" in r.json()["detail"]
        assert "was undone" in r.json()["detail"]
        assert name not in [g["name"] for g in api.get("/organization/admin/groups/").json()]


def test_keycloak_unreachable_is_503_with_a_message(database_url, stack_settings):
    settings = service_settings(stack_settings, database_url, keycloak_url=f"http://127.0.0.1:{free_port()}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        api = Api(client)
        r = api.post("/organization/auth/login", json={"username": "alice", "password": "alice-pass"})
        assert r.status_code == 503 and "Keycloak unreachable" in r.json()["detail"]
        r = api.get("/organization/auth/me", headers={"Authorization": "Bearer a.b.c"})
        assert r.status_code in (401, 503)
        token = requests.post(f"{kc.issuer_url(stack_settings)}/protocol/openid-connect/token", timeout=10, data={
            "grant_type": "password", "client_id": kc.CLIENT_ID, "client_secret": kc.client_secret(stack_settings),
            "username": "alice", "password": "alice-pass"}).json()["access_token"]
        r = api.get("/organization/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503 and "Keycloak unreachable" in r.json()["detail"]
