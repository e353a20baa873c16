"""The Admin app (Voila: notebooks/admin.ipynb): an org admin manages the users, groups and roles of the
organization; a platform admin manages organizations. It calls the HEROES API only.

Every action ends in the status line (class ``heroes-admin-status``): what was done, or the service's own
error message (409 duplicate, 422 with the broken rule, 503 Keycloak unreachable...).
"""
from __future__ import annotations

import html

import ipywidgets as widgets

from .api_client import ApiClient, ApiError
from .ui import css as _css

ORG = "/organization/admin"
PLATFORM = "/heroes/admin/organizations/"


class AdminApp:
    """Tabs for what the caller may administer (decided by ``/organization/auth/me``)."""

    def __init__(self, client: ApiClient | None = None):
        self.client = client or ApiClient()
        self.status = _css(widgets.HTML(""), "heroes-admin-status")
        me = self._call(lambda: self.client.call("GET", "/organization/auth/me"))
        self.me = me if isinstance(me, dict) else {}
        roles = set(self.me.get("roles", []))
        tabs, titles = [], []
        if "org-admin" in roles and self.me.get("organization"):
            self._build_org_admin()
            tabs += [self.users_box, self.groups_box, self.roles_box]
            titles += ["Users", "Groups", "Roles"]
        if "platform-admin" in roles:
            self._build_platform_admin()
            tabs.append(self.orgs_box)
            titles.append("Organizations")
        who = html.escape(f"{self.me.get('username', '?')} ({self.me.get('organization') or 'no organization'})")
        header = widgets.HTML(f"<h3>HEROES administration</h3><p>Signed in as <b>{who}</b>, roles: "
                              f"{html.escape(', '.join(sorted(roles)) or 'none')}</p>")
        if tabs:
            self.tabs = widgets.Tab(children=tabs)
            for i, title in enumerate(titles):
                self.tabs.set_title(i, title)
            body = self.tabs
        else:
            body = widgets.HTML("<p>You administer nothing here: ask your organization's admin.</p>")
        self.widget = widgets.VBox([header, body, self.status])
        if tabs:
            self.refresh()

    # --- plumbing -------------------------------------------------------------------------------------
    def _call(self, fn, done: str | None = None):
        """``fn()``'s answer (``True`` for an empty success), or None after showing the service's error."""
        try:
            result = fn()
        except ApiError as exc:
            self.status.value = f"<span style='color:#b00'>Error: {html.escape(exc.detail)}</span>"
            return None
        if done:
            self.status.value = f"<span style='color:#070'>{html.escape(done)}</span>"
        return True if result is None else result

    def display(self):
        from IPython.display import display

        display(self.widget)
        return self

    def refresh(self) -> None:
        """Reload every list from the API."""
        if hasattr(self, "users_box"):
            self.users = self._call(lambda: self.client.call("GET", f"{ORG}/users/")) or []
            self.groups = self._call(lambda: self.client.call("GET", f"{ORG}/groups/")) or []
            names = [u["username"] for u in self.users]
            self.user_list.options = names
            self.member_pick.options = names
            self.role_user.options = names
            self.group_pick.options = [(g["name"], g["id"]) for g in self.groups]
            self._show_group()
            self._show_roles()
        if hasattr(self, "orgs_box"):
            self.orgs = self._call(lambda: self.client.call("GET", PLATFORM)) or []
            self.org_pick.options = [(o["name"], o["id"]) for o in self.orgs]
            self.org_list.value = "<br>".join(html.escape(o["name"]) for o in self.orgs) or "<i>none</i>"

    # --- org admin ------------------------------------------------------------------------------------
    def _build_org_admin(self) -> None:
        self.user_list = _css(widgets.Select(options=[], rows=8, description="Users"), "heroes-admin-users")
        self.new_username = _css(widgets.Text(placeholder="username"), "heroes-admin-new-username")
        self.new_password = _css(widgets.Password(placeholder="initial password (8+)"), "heroes-admin-new-password")
        create = _css(widgets.Button(description="Create user", button_style="primary"), "heroes-admin-create-user")
        delete = _css(widgets.Button(description="Delete selected", button_style="danger"), "heroes-admin-delete-user")
        create.on_click(lambda _: self.create_user(self.new_username.value, self.new_password.value))
        delete.on_click(lambda _: self.delete_user(self.user_list.value))
        self.users_box = widgets.VBox([self.user_list, widgets.HBox([self.new_username, self.new_password, create]),
                                       delete])

        self.group_pick = _css(widgets.Dropdown(options=[], description="Group"), "heroes-admin-group")
        self.group_members = _css(widgets.HTML(""), "heroes-admin-members")
        self.member_pick = _css(widgets.Dropdown(options=[], description="User"), "heroes-admin-user")
        add = _css(widgets.Button(description="Add to group", button_style="primary"), "heroes-admin-add")
        remove = _css(widgets.Button(description="Remove from group"), "heroes-admin-remove")
        self.new_group = _css(widgets.Text(placeholder="new group name"), "heroes-admin-new-group")
        create_group = _css(widgets.Button(description="Create group"), "heroes-admin-create-group")
        self.group_pick.observe(lambda _: self._show_group(), names="value")
        add.on_click(lambda _: self.change_members(self.group_pick.value, add=[self.member_pick.value]))
        remove.on_click(lambda _: self.change_members(self.group_pick.value, remove=[self.member_pick.value]))
        create_group.on_click(lambda _: self.create_group(self.new_group.value))
        self.groups_box = widgets.VBox([self.group_pick, self.group_members,
                                        widgets.HBox([self.member_pick, add, remove]),
                                        widgets.HBox([self.new_group, create_group])])

        self.role_user = _css(widgets.Dropdown(options=[], description="User"), "heroes-admin-role-user")
        self.role_pick = _css(widgets.Dropdown(options=["user", "org-admin"], description="Role"), "heroes-admin-role")
        grant = _css(widgets.Button(description="Grant", button_style="primary"), "heroes-admin-grant")
        revoke = _css(widgets.Button(description="Revoke"), "heroes-admin-revoke")
        self.role_table = _css(widgets.HTML(""), "heroes-admin-roles")
        grant.on_click(lambda _: self.grant(self.role_user.value, self.role_pick.value))
        revoke.on_click(lambda _: self.revoke(self.role_user.value, self.role_pick.value))
        self.roles_box = widgets.VBox([widgets.HBox([self.role_user, self.role_pick, grant, revoke]), self.role_table])

    def _user_id(self, username: str | None) -> str | None:
        return next((u["id"] for u in getattr(self, "users", []) if u["username"] == username), None)

    def _show_group(self) -> None:
        group_id = self.group_pick.value
        if not group_id:
            self.group_members.value = "<i>no group yet</i>"
            return
        group = self._call(lambda: self.client.call("GET", f"{ORG}/groups/{group_id}"))
        if group:
            members = ", ".join(html.escape(m) for m in group["members"]) or "<i>nobody</i>"
            self.group_members.value = f"Members of <b>{html.escape(group['name'])}</b>: {members}"

    def _show_roles(self) -> None:
        roles = self._call(lambda: self.client.call("GET", f"{ORG}/roles/")) or []
        rows = "".join(f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(', '.join(r['members']))}</td></tr>"
                       for r in roles)
        self.role_table.value = f"<table><tr><th>role</th><th>holders</th></tr>{rows}</table>"

    def create_user(self, username: str, password: str) -> None:
        body = {"username": username.strip()}
        if password:
            body["password"] = password
        if self._call(lambda: self.client.call("POST", f"{ORG}/users/", json=body), f"user {username} created"):
            self.new_username.value = self.new_password.value = ""
            self.refresh()

    def delete_user(self, username: str | None) -> None:
        user_id = self._user_id(username)
        if user_id and self._call(lambda: self.client.call("DELETE", f"{ORG}/users/{user_id}"), f"user {username} deleted"):
            self.refresh()

    def create_group(self, name: str) -> None:
        if self._call(lambda: self.client.call("POST", f"{ORG}/groups/", json={"name": name.strip()}), f"group {name} created"):
            self.new_group.value = ""
            self.refresh()

    def change_members(self, group_id: str | None, add=(), remove=()) -> None:
        if not group_id:
            self.status.value = "<span style='color:#b00'>Error: pick a group first</span>"
            return
        body = {"add_members": [u for u in add if u], "remove_members": [u for u in remove if u]}
        who = ", ".join(body["add_members"] + body["remove_members"])
        verb = "added to" if body["add_members"] else "removed from"
        group = self._call(lambda: self.client.call("PATCH", f"{ORG}/groups/{group_id}", json=body))
        if group:
            self.status.value = f"<span style='color:#070'>{html.escape(who)} {verb} {html.escape(group['name'])}</span>"
            self._show_group()

    def grant(self, username: str | None, role: str) -> None:
        if self._call(lambda: self.client.call("POST", f"{ORG}/roles/", json={"role": role, "username": username}),
                      f"{username} now has the role {role}"):
            self._show_roles()

    def revoke(self, username: str | None, role: str) -> None:
        user_id = self._user_id(username)
        self._call(lambda: self.client.call("DELETE", f"{ORG}/roles/{role}/users/{user_id}"),
                   f"role {role} taken from {username}")
        self._show_roles()

    # --- platform admin -------------------------------------------------------------------------------
    def _build_platform_admin(self) -> None:
        self.org_list = _css(widgets.HTML(""), "heroes-admin-orgs")
        self.new_org = _css(widgets.Text(placeholder="organization name"), "heroes-admin-new-org")
        create = _css(widgets.Button(description="Create organization", button_style="primary"),
                      "heroes-admin-create-org")
        self.org_pick = _css(widgets.Dropdown(options=[], description="Organization"), "heroes-admin-org")
        self.force = widgets.Checkbox(description="even with running work", value=False)
        delete = _css(widgets.Button(description="Delete organization", button_style="danger"),
                      "heroes-admin-delete-org")
        create.on_click(lambda _: self.create_org(self.new_org.value))
        delete.on_click(lambda _: self.delete_org(self.org_pick.value))
        self.orgs_box = widgets.VBox([self.org_list, widgets.HBox([self.new_org, create]),
                                      widgets.HBox([self.org_pick, self.force, delete])])

    def create_org(self, name: str) -> None:
        if self._call(lambda: self.client.call("POST", PLATFORM, json={"name": name.strip()}), f"organization {name} created"):
            self.new_org.value = ""
            self.refresh()

    def delete_org(self, org_id: str | None) -> None:
        if not org_id:
            return
        name = next((o["name"] for o in self.orgs if o["id"] == org_id), org_id)
        params = {"force": "true"} if self.force.value else None
        if self._call(lambda: self.client.call("DELETE", f"{PLATFORM}{org_id}", params=params), f"organization {name} deleted"):
            self.refresh()
