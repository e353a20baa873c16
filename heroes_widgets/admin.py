"""The Admin app (Voila: notebooks/admin.ipynb): an org admin manages the users, groups and roles, the
clusters and the workflow templates of the organization; a platform admin manages organizations. It calls
the HEROES API only.

Every action ends in the status line (class ``heroes-admin-status``): what was done, or the service's own
error message (409 duplicate or in use, 422 with the broken rule, 503 Keycloak unreachable...).
The tabs live in their own modules: admin_people.py (users, groups, roles), admin_clusters.py and
admin_templates.py.
"""
from __future__ import annotations

import html

import ipywidgets as widgets

from .admin_clusters import ClustersTab
from .admin_forms import api_call
from .admin_people import PeopleTabs, status_line
from .admin_templates import TemplatesTab
from .api_client import ApiClient
from .ui import AppShell, css

PLATFORM = "/heroes/admin/organizations/"


class AdminApp(AppShell):
    """Tabs for what the caller may administer (decided by ``/organization/auth/me``)."""

    def __init__(self, client: ApiClient | None = None):
        self.client = client or ApiClient()
        self.status = css(widgets.HTML(""), "heroes-admin-status")
        me = api_call(self.report, lambda: self.client.call("GET", "/organization/auth/me"))
        self.me = me if isinstance(me, dict) else {}
        roles = set(self.me.get("roles", []))
        tabs, titles = [], []
        if "org-admin" in roles and self.me.get("organization"):
            self.people = PeopleTabs(self.client, self.report)
            self.clusters = ClustersTab(self.client, self.report)
            self.templates = TemplatesTab(self.client, self.report)
            tabs += [self.people.users_box, self.people.groups_box, self.people.roles_box, self.clusters.widget,
                     self.templates.widget]
            titles += ["Users", "Groups", "Roles", "Clusters", "Templates"]
        if "platform-admin" in roles:
            self._build_platform_admin()
            tabs.append(self.orgs_box)
            titles.append("Organizations")
        who = html.escape(f"{self.me.get('username', '?')} ({self.me.get('organization') or 'no organization'})")
        header = widgets.HTML(f"<p>Signed in as <b>{who}</b>, roles: "
                              f"{html.escape(', '.join(sorted(roles)) or 'none')}</p>")
        if tabs:
            self.tabs = widgets.Tab(children=tabs)
            for i, title in enumerate(titles):
                self.tabs.set_title(i, title)
            body = self.tabs
        else:
            body = widgets.HTML("<p>You administer nothing here: ask your organization's admin.</p>")
        self.widget = widgets.VBox([header, self.status, body])
        if tabs:
            self.refresh()

    def report(self, text: str, error: bool = False) -> None:
        self.status.value = status_line(text, error)

    def refresh(self) -> None:
        """Reload every list from the API."""
        if hasattr(self, "people"):
            self.people.refresh()
            self.clusters.refresh()
            self.templates.refresh()
            self.templates.check()
        if hasattr(self, "orgs_box"):
            self.orgs = api_call(self.report, lambda: self.client.call("GET", PLATFORM)) or []
            self.org_pick.options = [(o["name"], o["id"]) for o in self.orgs]
            self.org_list.value = "<br>".join(html.escape(o["name"]) for o in self.orgs) or "<i>none</i>"

    # --- platform admin -------------------------------------------------------------------------------
    def _build_platform_admin(self) -> None:
        self.org_list = css(widgets.HTML(""), "heroes-admin-orgs")
        self.new_org = css(widgets.Text(placeholder="organization name"), "heroes-admin-new-org")
        create = css(widgets.Button(description="Create organization", button_style="primary"),
                     "heroes-admin-create-org")
        self.org_pick = css(widgets.Dropdown(options=[], description="Organization"), "heroes-admin-org")
        self.force = widgets.Checkbox(description="even with running work", value=False)
        delete = css(widgets.Button(description="Delete organization", button_style="danger"),
                     "heroes-admin-delete-org")
        create.on_click(lambda _: self.create_org(self.new_org.value))
        delete.on_click(lambda _: self.delete_org(self.org_pick.value))
        self.orgs_box = widgets.VBox([self.org_list, widgets.HBox([self.new_org, create]),
                                      widgets.HBox([self.org_pick, self.force, delete])])

    def create_org(self, name: str) -> None:
        if api_call(self.report, lambda: self.client.call("POST", PLATFORM, json={"name": name.strip()}),
                    f"organization {name} created"):
            self.new_org.value = ""
            self.refresh()

    def delete_org(self, org_id: str | None) -> None:
        if not org_id:
            return
        name = next((o["name"] for o in self.orgs if o["id"] == org_id), org_id)
        params = {"force": "true"} if self.force.value else None
        if api_call(self.report, lambda: self.client.call("DELETE", f"{PLATFORM}{org_id}", params=params),
                    f"organization {name} deleted"):
            self.refresh()
