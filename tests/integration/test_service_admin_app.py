"""The Admin app (heroes_widgets.admin) driven headlessly against the running service (through the proxy):
an org admin creates a group, adds a user, grants a role; errors show the service's message; a platform
admin creates and deletes an organization. Widgets run outside a kernel (ipywidgets' DummyComm)."""
from __future__ import annotations

import secrets

import pytest

from heroes_widgets.admin import AdminApp
from heroes_widgets.api_client import ApiClient
from service_support import DEMO_PASSWORDS, PREFIX, Api, LiveClient, drop_tenant, hub_public, make_tenant

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live(require, stack_settings):
    require("keycloak")
    require("jupyterhub")
    return Api(LiveClient(hub_public(stack_settings)))


@pytest.fixture(scope="module")
def tenant(live):
    root = live.login("root", DEMO_PASSWORDS["root"])
    tenant = make_tenant(live, root, "w")
    yield tenant
    drop_tenant(root, tenant)


def client_for(live, stack_settings, username, password) -> ApiClient:
    token = live.client.post(PREFIX + "/organization/auth/login",
                             json={"username": username, "password": password}).json()["access_token"]
    return ApiClient(base_url=hub_public(stack_settings) + PREFIX, bearer=token)


def test_org_admin_manages_groups_and_roles(live, tenant, stack_settings):
    admin = AdminApp(client_for(live, stack_settings, tenant.admin, tenant.password))
    assert [admin.tabs.get_title(i) for i in range(len(admin.tabs.children))] == [
        "Users", "Groups", "Roles", "Clusters", "Templates"]
    app, status = admin.people, admin.status  # the Users, Groups and Roles tabs (heroes_widgets/admin_people.py)
    assert set(app.user_list.options) == {tenant.admin, tenant.user}
    name = f"w{secrets.token_hex(3)}"
    app.create_group(name)
    assert f"group {name} created" in status.value
    app.create_group(name)
    assert "Error" in status.value and "already exists" in status.value
    app.group_pick.value = next(v for label, v in app.group_pick.options if label == name)
    app.member_pick.value = tenant.user
    app.change_members(app.group_pick.value, add=[tenant.user])
    assert f"{tenant.user} added to {name}" in status.value and tenant.user in app.group_members.value
    user_api = live.login(tenant.user, tenant.password)
    assert f"{tenant.name}.{name}" in user_api.get("/organization/auth/me").json()["groups"]
    app.grant(tenant.user, "org-admin")
    assert "now has the role org-admin" in status.value
    assert tenant.user in next(r["holders"] for r in app.role_table.rows if r["name"] == "org-admin")
    app.revoke(tenant.user, "org-admin")
    app.create_user("Bad Name", "")
    assert "Error" in status.value and "lowercase" in status.value
    assert app.delete_group(app.group_pick.value) and f"group {name} deleted" in status.value
    assert name not in [label for label, _id in app.group_pick.options]


def test_plain_user_administers_nothing(live, tenant, stack_settings):
    app = AdminApp(client_for(live, stack_settings, tenant.user, tenant.password))
    assert not hasattr(app, "tabs") and "administer nothing" in app.widget.children[-1].value


def test_platform_admin_creates_and_deletes_an_organization(live, stack_settings):
    app = AdminApp(client_for(live, stack_settings, "root", DEMO_PASSWORDS["root"]))
    assert [app.tabs.get_title(i) for i in range(len(app.tabs.children))] == ["Organizations"]
    name = f"app{secrets.token_hex(3)}"
    app.create_org(name)
    assert f"organization {name} created" in app.status.value and name in app.org_list.value
    app.org_pick.value = next(v for label, v in app.org_pick.options if label == name)
    app.delete_org(app.org_pick.value)
    assert f"organization {name} deleted" in app.status.value and name not in app.org_list.value
