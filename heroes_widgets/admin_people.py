"""The Admin app's Users, Groups and Roles tabs (an organization admin's people), calling
``/organization/admin/{users,groups,roles}``.

A group just created is put in the drop-down from the service's own answer, selected, and a deleted one is
taken out at once: the lists are not read again for that (a list read straight after a write could still be
the old one), so what the admin just did is what the tab shows.
"""
from __future__ import annotations

import html

import ipywidgets as widgets

from .admin_forms import api_call
from .api_client import ApiClient
from .grid import Column, Table
from .ui import css, message

ORG = "/organization/admin"


class PeopleTabs:
    """``users_box``, ``groups_box`` and ``roles_box``: one widget per tab."""

    def __init__(self, client: ApiClient, report):
        self.client, self.report = client, report
        self.users: list[dict] = []
        self.groups: list[dict] = []
        self._build_users()
        self._build_groups()
        self._build_roles()

    # --- building -------------------------------------------------------------------------------------
    def _build_users(self) -> None:
        self.user_list = css(widgets.Select(options=[], rows=8, description="Users"), "heroes-admin-users")
        self.new_username = css(widgets.Text(placeholder="username"), "heroes-admin-new-username")
        self.new_password = css(widgets.Password(placeholder="initial password (8+)"), "heroes-admin-new-password")
        create = css(widgets.Button(description="Create user", button_style="primary"), "heroes-admin-create-user")
        delete = css(widgets.Button(description="Delete selected", button_style="danger"), "heroes-admin-delete-user")
        create.on_click(lambda _: self.create_user(self.new_username.value, self.new_password.value))
        delete.on_click(lambda _: self.delete_user(self.user_list.value))
        self.users_box = widgets.VBox([self.user_list, widgets.HBox([self.new_username, self.new_password, create]),
                                       delete])

    def _build_groups(self) -> None:
        self.group_pick = css(widgets.Dropdown(options=[], description="Group"), "heroes-admin-group")
        self.group_members = css(widgets.HTML(""), "heroes-admin-members")
        self.member_pick = css(widgets.Dropdown(options=[], description="User"), "heroes-admin-user")
        add = css(widgets.Button(description="Add to group", button_style="primary"), "heroes-admin-add")
        remove = css(widgets.Button(description="Remove from group"), "heroes-admin-remove")
        self.new_group = css(widgets.Text(placeholder="new group name"), "heroes-admin-new-group")
        create_group = css(widgets.Button(description="Create group"), "heroes-admin-create-group")
        delete_group = css(widgets.Button(description="Delete group", button_style="danger"),
                           "heroes-admin-delete-group")
        yes = css(widgets.Button(description="Yes, delete it", button_style="danger"), "heroes-admin-delete-group-yes")
        keep = widgets.Button(description="Keep it")
        self.delete_question = widgets.HTML("")
        self.delete_confirm = css(widgets.HBox([self.delete_question, yes, keep],
                                               layout=widgets.Layout(display="none")),
                                  "heroes-admin-delete-group-confirm")
        self.group_pick.observe(lambda _: self._show_group(), names="value")
        add.on_click(lambda _: self.change_members(self.group_pick.value, add=[self.member_pick.value]))
        remove.on_click(lambda _: self.change_members(self.group_pick.value, remove=[self.member_pick.value]))
        create_group.on_click(lambda _: self.create_group(self.new_group.value))
        delete_group.on_click(lambda _: self.ask_delete_group(self.group_pick.value))
        yes.on_click(lambda _: self.delete_group(self.group_pick.value))
        keep.on_click(lambda _: setattr(self.delete_confirm.layout, "display", "none"))
        self.groups_box = widgets.VBox([widgets.HBox([self.group_pick, delete_group]), self.delete_confirm,
                                        self.group_members, widgets.HBox([self.member_pick, add, remove]),
                                        widgets.HBox([self.new_group, create_group])])

    def _build_roles(self) -> None:
        self.role_user = css(widgets.Dropdown(options=[], description="User"), "heroes-admin-role-user")
        self.role_pick = css(widgets.Dropdown(options=["user", "org-admin"], description="Role"), "heroes-admin-role")
        grant = css(widgets.Button(description="Grant", button_style="primary"), "heroes-admin-grant")
        revoke = css(widgets.Button(description="Revoke"), "heroes-admin-revoke")
        self.role_table = Table([Column("name", "Role", 120), Column("holders", "Holders", 480)], "heroes-admin-roles")
        grant.on_click(lambda _: self.grant(self.role_user.value, self.role_pick.value))
        revoke.on_click(lambda _: self.revoke(self.role_user.value, self.role_pick.value))
        self.roles_box = widgets.VBox([widgets.HBox([self.role_user, self.role_pick, grant, revoke]),
                                       self.role_table.widget])

    # --- reading --------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload users, groups and roles from the API."""
        self.users = api_call(self.report, lambda: self.client.call("GET", f"{ORG}/users/")) or []
        self.groups = api_call(self.report, lambda: self.client.call("GET", f"{ORG}/groups/")) or []
        names = [u["username"] for u in self.users]
        self.user_list.options = names
        self.member_pick.options = names
        self.role_user.options = names
        self._set_groups(self.group_pick.value)
        self._show_roles()

    def _set_groups(self, select: str | None) -> None:
        """The drop-down from ``self.groups``, with ``select`` chosen when it is there."""
        self.groups.sort(key=lambda g: g["name"])
        ids = [g["id"] for g in self.groups]
        self.group_pick.options = [(g["name"], g["id"]) for g in self.groups]
        self.group_pick.value = select if select in ids else (ids[0] if ids else None)
        self._show_group()

    def _user_id(self, username: str | None) -> str | None:
        return next((u["id"] for u in self.users if u["username"] == username), None)

    def _show_group(self, group: dict | None = None) -> None:
        """The chosen group's members (``group``: an answer that already has them)."""
        group_id = self.group_pick.value
        if not group_id:
            self.group_members.value = "<i>no group yet: create one below</i>"
            return
        group = group or api_call(self.report, lambda: self.client.call("GET", f"{ORG}/groups/{group_id}"))
        if group:
            members = ", ".join(html.escape(m) for m in group.get("members") or []) or "<i>nobody</i>"
            self.group_members.value = f"Members of <b>{html.escape(group['name'])}</b>: {members}"

    def _show_roles(self) -> None:
        roles = api_call(self.report, lambda: self.client.call("GET", f"{ORG}/roles/")) or []
        self.role_table.update([{"name": r["name"], "holders": ", ".join(r["members"])} for r in roles], keep="name")

    # --- users ----------------------------------------------------------------------------------------
    def create_user(self, username: str, password: str) -> None:
        body = {"username": username.strip()}
        if password:
            body["password"] = password
        if api_call(self.report, lambda: self.client.call("POST", f"{ORG}/users/", json=body),
                    f"user {username} created"):
            self.new_username.value = self.new_password.value = ""
            self.refresh()

    def delete_user(self, username: str | None) -> None:
        user_id = self._user_id(username)
        if user_id and api_call(self.report, lambda: self.client.call("DELETE", f"{ORG}/users/{user_id}"),
                                f"user {username} deleted"):
            self.refresh()

    # --- groups ---------------------------------------------------------------------------------------
    def create_group(self, name: str) -> dict | None:
        """Create the group and show it at once, chosen in the drop-down (from the service's answer)."""
        group = api_call(self.report, lambda: self.client.call("POST", f"{ORG}/groups/", json={"name": name.strip()}),
                         f"group {name.strip()} created: add its members below")
        if not group:
            return None
        self.new_group.value = ""
        self.groups = [g for g in self.groups if g["id"] != group["id"]] + [group]
        self._set_groups(group["id"])
        self._show_group(group)
        return group

    def ask_delete_group(self, group_id: str | None) -> None:
        group = next((g for g in self.groups if g["id"] == group_id), None)
        if group is None:
            self.report("pick a group first", True)
            return
        self.delete_question.value = (f"Delete the group <b>{html.escape(group['name'])}</b>? Its members stay in "
                                      "the organization; what was shared with the group is no longer shared.")
        self.delete_confirm.layout.display = None

    def delete_group(self, group_id: str | None) -> bool:
        self.delete_confirm.layout.display = "none"
        group = next((g for g in self.groups if g["id"] == group_id), None)
        if group is None:
            return False
        if not api_call(self.report, lambda: self.client.call("DELETE", f"{ORG}/groups/{group_id}"),
                        f"group {group['name']} deleted"):
            return False
        self.groups = [g for g in self.groups if g["id"] != group_id]
        self._set_groups(None)
        return True

    def change_members(self, group_id: str | None, add=(), remove=()) -> None:
        if not group_id:
            self.report("pick a group first (or create one)", True)
            return
        body = {"add_members": [u for u in add if u], "remove_members": [u for u in remove if u]}
        who = ", ".join(body["add_members"] + body["remove_members"])
        verb = "added to" if body["add_members"] else "removed from"
        group = api_call(self.report, lambda: self.client.call("PATCH", f"{ORG}/groups/{group_id}", json=body))
        if group:
            self.report(f"{who} {verb} {group['name']}")
            self._show_group(group)

    # --- roles ----------------------------------------------------------------------------------------
    def grant(self, username: str | None, role: str) -> None:
        if api_call(self.report, lambda: self.client.call("POST", f"{ORG}/roles/", json={"role": role,
                                                                                          "username": username}),
                    f"{username} now has the role {role}"):
            self._show_roles()

    def revoke(self, username: str | None, role: str) -> None:
        user_id = self._user_id(username)
        api_call(self.report, lambda: self.client.call("DELETE", f"{ORG}/roles/{role}/users/{user_id}"),
                 f"role {role} taken from {username}")
        self._show_roles()


def status_line(text: str, error: bool = False) -> str:
    """The app's status line (kept here so every tab words it alike)."""
    return message(("Error: " if error else "") + text, error)
