"""The Welcome app (Voila: notebooks/welcome.ipynb), the gateway's start page: the navigation bar, one card
per app the user may use (the Admin card only for an organization's admins), and what is ready for them:
the clusters of their organization (ready, or why not: unreachable, refused), the templates they can run,
their recent runs with live states, and the energy their runs used this month.

Why one page: a newcomer should see at a glance what they can do and whether it will work, without
knowing any app's address. The recent runs are polled on a timer in the kernel (a daemon thread), so a
state never stays "QUEUED" after the job has finished. Cluster readiness comes from the decision API
(Slurm's own ``sbatch --test-only`` per cluster, as the user), checked once in the background so the page
shows at once.

Widgets a browser test needs carry CSS classes ``heroes-welcome-*`` and ``heroes-card-<app>``.
"""
from __future__ import annotations

import html
import threading
from datetime import datetime, timezone

import ipywidgets as widgets

from .api_client import ApiClient, ServiceCallError
from .nav import APPS, App, app_url, apps_for, nav_bar, server_prefix, who_am_i
from .ui import AppShell, css

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
COLORS = {"COMPLETED": "#060", "FAILED": "#b00", "CANCELLED": "#a60", "RUNNING": "#06c", "QUEUED": "#555"}
RECENT = 6

CARD_STYLE = """<style>
.heroes-cards {display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px;margin:8px 0 16px}
.heroes-card {display:block;border:1px solid #c9d6e6;border-radius:6px;padding:12px 14px;background:#f7faff;
  color:#1f3a5f;text-decoration:none;font-family:sans-serif}
.heroes-card:hover {border-color:#1f3a5f;box-shadow:0 2px 6px rgba(0,0,0,.15)}
.heroes-card b {font-size:16px;display:block;margin-bottom:4px}
.heroes-card span {font-size:13px;color:#333}
.heroes-ready h4 {margin:10px 0 4px}
.heroes-ready li {margin:2px 0}
</style>"""


def state_html(state: str) -> str:
    return f"<b style='color:{COLORS.get(state, '#444')}'>{html.escape(state)}</b>"


def cards_html(apps: list[App], prefix: str) -> str:
    """One card per app (the start page itself left out): its title, what it is for, a link to it."""
    cards = "".join(f"<a class='heroes-card heroes-card-{a.key}' href='{html.escape(app_url(a, prefix))}'>"
                    f"<b>{a.icon} {html.escape(a.title)}</b><span>{html.escape(a.about)}</span></a>"
                    for a in apps if a.key != "welcome")
    return f"{CARD_STYLE}<div class='heroes-cards'>{cards}</div>"


def month_start(now: datetime | None = None) -> str:
    """The first instant of this month (UTC), ISO 8601: where "this month's energy" starts."""
    now = now or datetime.now(timezone.utc)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).isoformat()


def clusters_html(clusters: list[dict], readiness: dict[str, str] | None) -> str:
    """The organization's clusters, each with its readiness (``None``: still being checked)."""
    if not clusters:
        return ("<li>No cluster is enrolled for your organization yet: ask your organization's admin "
                "(Admin app, Clusters tab).</li>")
    items = []
    for c in clusters:
        state = "<i>checking…</i>" if readiness is None else readiness.get(c["name"], "<i>not checked</i>")
        items.append(f"<li class='heroes-welcome-cluster' data-name='{html.escape(c['name'])}'>"
                     f"<b>{html.escape(c['name'])}</b> ({html.escape(c.get('container_runtime', ''))}, "
                     f"speed {c.get('relative_speed', 1):g}): {state}</li>")
    return "".join(items)


def readiness_of(decision: dict) -> dict[str, str]:
    """Per cluster, what the decision API found: ready (with the predicted wait) or the reason it is not."""
    out = {}
    for cand in decision.get("candidates") or []:
        if cand.get("eligible"):
            wait = cand.get("wait_s")
            when = "starts at once" if not wait else f"waits about {wait / 60:.0f} min" if wait >= 60 \
                else f"waits about {wait:.0f} s"
            out[cand["cluster"]] = f"<span style='color:#060'>&#10004; ready</span> ({when})"
        else:
            out[cand["cluster"]] = (f"<span style='color:#b00'>&#10008; not usable now</span>: "
                                    f"{html.escape(cand.get('reason') or 'unknown')}")
    return out


def templates_html(templates: list[dict], submit_link: str) -> str:
    if not templates:
        return "<li>No workflow template is published for your organization yet.</li>"
    return "".join(f"<li class='heroes-welcome-template'><a href='{html.escape(submit_link)}'>"
                   f"{html.escape(t.get('title') or t['name'])}</a> <small>(v{t['version']})</small></li>"
                   for t in templates)


def recent_html(instances: list[dict], monitor_link: str) -> str:
    """The user's latest runs, newest first, each with its live state."""
    if not instances:
        return "<li>No run yet: start one from the Submit card.</li>"
    latest = sorted(instances, key=lambda i: str(i.get("created_at")), reverse=True)[:RECENT]
    return "".join(f"<li class='heroes-welcome-run' data-id='{html.escape(i['id'])}'>{state_html(i['state'])} "
                   f"<a href='{html.escape(monitor_link)}'>{html.escape(i.get('name') or i['id'][:8])}</a> "
                   f"— {html.escape(i['template_name'])} on {html.escape(i['cluster'])}, "
                   f"<small>{html.escape(str(i['created_at'])[:16].replace('T', ' '))}</small></li>"
                   for i in latest)


class WelcomeApp(AppShell):
    def __init__(self, client: ApiClient | None = None, refresh_s: float = 3.0, auto: bool = True):
        self.client = client or ApiClient()
        self.refresh_s = refresh_s
        self.me = who_am_i(self.client)
        self.prefix = server_prefix()
        links = {a.key: app_url(a, self.prefix) for a in APPS}
        self.submit_link, self.monitor_link = links["submit"], links["monitor"]
        self.clusters: list[dict] = []
        self.templates: list[dict] = []
        self.readiness: dict[str, str] | None = None
        name = (self.me or {}).get("username") or "there"
        org = (self.me or {}).get("organization")
        self.greeting = css(widgets.HTML(f"<h2 class='heroes-greeting'>Welcome, {html.escape(name)}!</h2>"
                                         + (f"<p>Organization <b>{html.escape(org)}</b>. Pick what you want to do:"
                                            "</p>" if org else "<p>Pick what you want to do:</p>")),
                            "heroes-welcome-greeting")
        self.cards = css(widgets.HTML(cards_html(apps_for(self.me), self.prefix)), "heroes-welcome-cards")
        self.clusters_box = css(widgets.HTML(""), "heroes-welcome-clusters")
        self.templates_box = css(widgets.HTML(""), "heroes-welcome-templates")
        self.recent = css(widgets.HTML(""), "heroes-welcome-recent")
        self.energy = css(widgets.HTML(""), "heroes-welcome-energy")
        self.status = css(widgets.HTML(""), "heroes-welcome-status")
        self.refresh_button = css(widgets.Button(description="Check again", icon="refresh"), "heroes-welcome-refresh")
        self.refresh_button.on_click(lambda _b: self.check_again())
        ready = widgets.VBox([
            widgets.HTML("<h3>Ready for you</h3><h4>Clusters</h4>"), self.clusters_box,
            widgets.HTML("<h4>Templates you can run</h4>"), self.templates_box])
        runs = widgets.VBox([widgets.HTML("<h3>Your recent runs</h3>"), self.recent,
                             widgets.HTML("<h4>Your energy this month</h4>"), self.energy])
        ready.layout.margin = "0 48px 0 0"
        columns = widgets.HBox([ready, runs], layout=widgets.Layout(flex_flow="row wrap"))
        self.widget = css(widgets.VBox([nav_bar("welcome", self.client, self.me), self.greeting, self.cards,
                                        css(columns, "heroes-ready"), self.refresh_button, self.status]),
                          "heroes-welcome")
        self._stop = threading.Event()
        self.load()
        if auto:
            threading.Thread(target=self.check_clusters, daemon=True).start()
            threading.Thread(target=self._loop, daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    # --- what is ready ------------------------------------------------------------------------------------
    def load(self) -> None:
        try:
            self.clusters = self.client.call("GET", "/organization/cluster/")
            self.templates = self.client.call("GET", "/organization/workflow/template")
        except ServiceCallError as exc:
            self.report(exc.detail, True)
        self.clusters_box.value = f"<ul>{clusters_html(self.clusters, self.readiness)}</ul>"
        self.templates_box.value = f"<ul>{templates_html(self.templates, self.submit_link)}</ul>"
        self.refresh()

    def check_again(self) -> None:
        """The button: read everything again and re-check the clusters now."""
        self.readiness = None
        self.load()
        self.check_clusters()
        self.report(f"checked again at {datetime.now(timezone.utc):%H:%M:%S} UTC")

    def check_clusters(self) -> None:
        """Ask the decision API whether each cluster would take the first template now (as this user)."""
        if not self.clusters:
            return
        if not self.templates:
            self.readiness = {c["name"]: "enrolled (no template to try it with yet)" for c in self.clusters}
        else:
            try:
                self.readiness = readiness_of(self.client.decide(self.templates[0]["id"]))
            except ServiceCallError as exc:
                self.readiness = {c["name"]: f"cannot check: {html.escape(exc.detail)}" for c in self.clusters}
        self.clusters_box.value = f"<ul>{clusters_html(self.clusters, self.readiness)}</ul>"

    # --- live part: runs and energy -------------------------------------------------------------------------
    def refresh(self) -> None:
        try:
            instances = self.client.call("GET", "/organization/workflow/instance", params={"limit": RECENT})
        except ServiceCallError as exc:
            self.report(exc.detail, True)
            return
        self.recent.value = f"<ul>{recent_html(instances, self.monitor_link)}</ul>"
        self.energy.value = self._energy_html()

    def _energy_html(self) -> str:
        user = (self.me or {}).get("username")
        try:
            groups = self.client.energy_summary("user", user=user, start=month_start())
        except ServiceCallError as exc:
            return f"<i>energy not available: {html.escape(exc.detail)}</i>"
        total = sum(g.get("energy_kwh") or 0 for g in groups)
        steps = sum(g.get("steps") or 0 for g in groups)
        estimated = any(g.get("estimated") for g in groups)
        if not steps:
            return "<p>No energy recorded for your runs this month yet.</p>"
        energy_link = app_url(next(a for a in APPS if a.key == "energy"), self.prefix)
        return (f"<p><b style='font-size:20px'>{total:.4f} kWh</b>{' (partly estimated)' if estimated else ''} "
                f"over {steps} step(s) — <a href='{html.escape(energy_link)}'>details in the Energy app</a></p>")

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()
