"""The Monitor app (Voila: notebooks/monitor.ipynb): your workflow instances with live state, the detail
of one (steps, job ids, nodes, exit codes, events), step logs, cancel, and the outputs as links (open in the
Data app's preview, download). It calls the HEROES API only (:mod:`heroes_widgets.api_client`).

What it shows without a click: the instance named in the page's query (``?instance=<id>``, the Submit
app links there) or else the newest one, and the log of its failed step, else of its last step that ran,
so "Show log" is never needed just to see why a run ended. The list and the open instance are polled on a
timer in the kernel (a daemon thread), so no state stays stale. Cancel shows only while the instance can
still be cancelled.

Widgets a browser test needs carry CSS classes ``heroes-monitor-*``.
"""
from __future__ import annotations

import html
import os
import threading
from urllib.parse import parse_qs, urlencode

import ipywidgets as widgets

from .api_client import ApiClient, ServiceCallError
from .grid import Column, Table
from .nav import APPS, app_url
from .ui import AppShell, css as _css

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
COLORS = {"COMPLETED": "#060", "FAILED": "#b00", "CANCELLED": "#a60", "RUNNING": "#06c"}
INSTANCE_COLUMNS = [Column("name", "label", 200), Column("template", "template", 200), Column("cluster", "cluster", 90),
                    Column("state", "state", 110), Column("created", "created (UTC)", 150), Column("id", "id", 260)]
STEP_COLUMNS = [Column("name", "step", 120), Column("state", "state", 110), Column("job_id", "job", 80),
                Column("nodes", "nodes", 160), Column("exit_code", "exit", 60), Column("reason", "reason", 300)]


def _state(state: str) -> str:
    return f"<b style='color:{COLORS.get(state, '#444')}'>{html.escape(state)}</b>"


def instance_rows(instances: list[dict]) -> list[dict]:
    return [{"id": i["id"], "name": i.get("name") or "", "template": f"{i['template_name']} v{i['template_version']}",
             "cluster": i["cluster"], "state": i["state"], "created": str(i["created_at"])[:19].replace("T", " ")}
            for i in instances]


def log_step_of(detail: dict) -> str | None:
    """The step whose log matters most: the first failed one, else the last one that got a job."""
    steps = detail.get("steps") or []
    failed = [s for s in steps if s.get("state") in ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED")]
    if failed:
        return failed[0]["name"]
    ran = [s for s in steps if s.get("job_id")]
    return ran[-1]["name"] if ran else (steps[0]["name"] if steps else None)


def query_instance(env: dict | None = None) -> str | None:
    """``?instance=<id>`` of the page (Voila hands the query string to the kernel as QUERY_STRING)."""
    env = os.environ if env is None else env
    values = parse_qs(env.get("QUERY_STRING", "")).get("instance")
    return values[0] if values else None


class MonitorApp(AppShell):
    def __init__(self, client: ApiClient | None = None, refresh_s: float = 3.0, auto: bool = True):
        self.client = client or ApiClient()
        self.refresh_s = refresh_s
        self.instances: list[dict] = []
        self.detail: dict | None = None
        self._links: dict[str, str] = {}  # output key -> presigned download URL (made once per instance)
        self.status = _css(widgets.HTML(""), "heroes-monitor-status")
        self.table = Table(INSTANCE_COLUMNS, "heroes-monitor-table", on_select=lambda row: self.open(row["id"]),
                           empty="no workflow run yet: start one from the Submit app")
        self.refresh_button = _css(widgets.Button(description="Refresh", icon="refresh"), "heroes-monitor-refresh")
        self.cancel_button = _css(widgets.Button(description="Cancel this run", button_style="danger", icon="stop",
                                                 layout=widgets.Layout(display="none")), "heroes-monitor-cancel")
        self.head = _css(widgets.HTML(""), "heroes-monitor-state")
        self.steps = Table(STEP_COLUMNS, "heroes-monitor-steps", empty="")
        self.events = _css(widgets.HTML(""), "heroes-monitor-events")
        self.outputs = _css(widgets.HTML(""), "heroes-monitor-outputs")
        self.log_step = _css(widgets.Dropdown(description="Log of", options=[]), "heroes-monitor-log-step")
        self.log_button = _css(widgets.Button(description="Reload log", icon="refresh"), "heroes-monitor-log-button")
        self.log = _css(widgets.Textarea(value="", layout=widgets.Layout(width="100%", height="240px")),
                        "heroes-monitor-log")
        self.auto = _css(widgets.Checkbox(value=auto, description="live (every few seconds)"), "heroes-monitor-auto")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.log_button.on_click(lambda _b: self.show_log())
        self._quiet = False
        self.log_step.observe(lambda _change: None if self._quiet else self.show_log(), names="value")
        self.widget = widgets.VBox([
            widgets.HTML("<h3>Your workflow runs</h3>"), widgets.HBox([self.refresh_button, self.auto]),
            self.table.widget, widgets.HTML("<hr>"), self.head, self.cancel_button, self.steps.widget, self.outputs,
            widgets.HBox([self.log_step, self.log_button]), self.log, widgets.HTML("<b>Events</b>"), self.events,
            self.status])
        self._stop = threading.Event()
        self.refresh()
        first = query_instance() or (self.instances[0]["id"] if self.instances else None)
        if first:
            self.open(first)
        if auto:
            threading.Thread(target=self._loop, daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            if self.auto.value:
                self.refresh()

    # --- list ------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the list again; the open instance too, while it is not finished (or just changed state)."""
        try:
            self.instances = self.client.call("GET", "/organization/workflow/instance")
        except ServiceCallError as exc:
            self.report(exc.detail, True)
            return
        self.table.update(instance_rows(self.instances), keep="id")
        if self.detail:
            listed = next((i for i in self.instances if i["id"] == self.detail["id"]), None)
            if self.detail["state"] not in FINAL or (listed and listed["state"] != self.detail["state"]):
                self.open(self.detail["id"])

    # --- one instance ------------------------------------------------------------------------------------
    def open(self, instance_id: str | None) -> None:
        if not instance_id:
            return
        try:
            detail = self.client.call("GET", f"/organization/workflow/instance/{instance_id}")
        except ServiceCallError as exc:
            self.report(exc.detail, True)
            return
        changed = (self.detail or {}).get("id") != detail["id"] or (self.detail or {}).get("state") != detail["state"]
        self.detail = detail
        self.cancel_button.layout.display = "none" if detail["state"] in FINAL or detail.get("cancel_requested") \
            else None
        label = f"“{html.escape(detail['name'])}” " if detail.get("name") else ""
        self.head.value = (f"<h4>Run {label}<code>{html.escape(detail['id'][:8])}</code>: {_state(detail['state'])} on "
                           f"{html.escape(detail['cluster'])}</h4>"
                           + (f"<p>{html.escape(detail['reason'])}</p>" if detail["reason"] else "")
                           + self._visualize_link(detail["id"]))
        self.steps.update([{**s, "reason": s.get("reason", "")} for s in detail["steps"]], keep="name")
        self.events.value = "<br>".join(
            f"<small>{html.escape(str(e['at'])[11:19])} {html.escape(e['step'] or 'instance')}: "
            f"{html.escape(e['from_state'])} → {html.escape(e['to_state'])} {html.escape(e['detail'])}</small>"
            for e in detail["events"][-40:])
        self.outputs.value = self._outputs_html(detail)
        names = [s["name"] for s in detail["steps"]]
        if list(self.log_step.options) != names or changed:
            self._quiet = True  # one log read for the new choice, not one per intermediate value
            try:
                self.log_step.options = names
                self.log_step.value = log_step_of(detail)
            finally:
                self._quiet = False
            self.show_log()
        elif detail["state"] not in FINAL:
            self.show_log()  # the log grows while the run goes on

    @staticmethod
    def _visualize_link(instance_id: str) -> str:
        """The Desktop app starting a desktop in this run's folder on its cluster (its outputs there, no copy)."""
        desktop = app_url(next(a for a in APPS if a.key == "desktop"))
        href = f"{desktop}?{urlencode({'instance': instance_id})}"
        return (f"<p><a class='heroes-monitor-visualize' href='{html.escape(href, quote=True)}' target='_blank'>"
                "Visualize: a desktop in this run's folder</a></p>")

    def _download_link(self, bucket: str, key: str) -> str | None:
        if key not in self._links:
            try:
                self._links[key] = self.client.presigned_download(bucket, key)
            except ServiceCallError:
                return None
        return self._links[key]

    def _outputs_html(self, detail: dict) -> str:
        if not detail["outputs"]:
            return "" if detail["state"] not in FINAL else "<p><i>this run left no output</i></p>"
        bucket, prefix = detail["output_bucket"], detail["output_prefix"]
        data_app = app_url(next(a for a in APPS if a.key == "data"))
        items = []
        for output in detail["outputs"][:100]:
            key = output["key"]
            name = html.escape(key[len(prefix):])
            opened = f"{data_app}?{urlencode({'bucket': bucket, 'key': key})}"
            links = [f"<a class='heroes-monitor-output-open' href='{html.escape(opened)}' target='_blank'>open</a>"]
            href = self._download_link(bucket, key)
            if href:
                links.append(f"<a class='heroes-monitor-output-download' href='{html.escape(href, quote=True)}' "
                             f"download='{html.escape(key.rsplit('/', 1)[-1], quote=True)}' target='_blank'>download</a>")
            items.append(f"<li class='heroes-monitor-output'><code>{name}</code> ({output['size']} bytes) "
                         f"{' · '.join(links)}</li>")
        return (f"<p><b>Outputs</b> in <code>{html.escape(bucket)}/{html.escape(prefix)}</code> (also in the Data app):"
                f"</p><ul>{''.join(items)}</ul>")

    def show_log(self) -> None:
        if not self.detail or not self.log_step.value:
            return
        try:
            response = self.client.request("GET", f"/organization/workflow/instance/{self.detail['id']}/log/"
                                                  f"{self.log_step.value}", params={"tail": 65536})
            self.log.value = response.text or f"(the log of {self.log_step.value} is empty so far)"
        except ServiceCallError as exc:
            self.log.value = f"no log of {self.log_step.value} yet: {exc.detail}"

    def cancel(self) -> None:
        if not self.detail:
            return
        try:
            answer = self.client.call("DELETE", f"/organization/workflow/instance/{self.detail['id']}")
            self.report(f"cancel requested; scancel sent for {len(answer['scancelled'])} job(s)")
        except ServiceCallError as exc:
            self.report(exc.detail, True)
        self.open(self.detail["id"])
