"""The Monitor app (Voila: notebooks/monitor.ipynb): your workflow instances with live state, the detail
of one (steps, job ids, nodes, exit codes, events), step logs, cancel, and the outputs with download links.
It calls the HEROES API only (:mod:`heroes_widgets.api_client`).

Widgets a browser test needs carry CSS classes ``heroes-monitor-*``.
"""
from __future__ import annotations

import html
import threading

import ipywidgets as widgets

from .api_client import ApiClient, ApiError
from .ui import css as _css

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
COLORS = {"COMPLETED": "#060", "FAILED": "#b00", "CANCELLED": "#a60", "RUNNING": "#06c"}


def _state(state: str) -> str:
    return f"<b style='color:{COLORS.get(state, '#444')}'>{html.escape(state)}</b>"


class MonitorApp:
    def __init__(self, client: ApiClient | None = None, refresh_s: float = 3.0, auto: bool = True):
        self.client = client or ApiClient()
        self.refresh_s = refresh_s
        self.instances: list[dict] = []
        self.detail: dict | None = None
        self.status = _css(widgets.HTML(""), "heroes-monitor-status")
        self.table = _css(widgets.HTML(""), "heroes-monitor-table")
        self.select = _css(widgets.Dropdown(description="Instance", options=[], layout=widgets.Layout(width="640px")),
                           "heroes-monitor-select")
        self.refresh_button = _css(widgets.Button(description="Refresh", icon="refresh"), "heroes-monitor-refresh")
        self.cancel_button = _css(widgets.Button(description="Cancel", button_style="danger", icon="stop"),
                                  "heroes-monitor-cancel")
        self.steps = _css(widgets.HTML(""), "heroes-monitor-steps")
        self.events = _css(widgets.HTML(""), "heroes-monitor-events")
        self.outputs = _css(widgets.HTML(""), "heroes-monitor-outputs")
        self.log_step = _css(widgets.Dropdown(description="Log of", options=[]), "heroes-monitor-log-step")
        self.log_button = _css(widgets.Button(description="Show log", icon="file-text"), "heroes-monitor-log-button")
        self.log = _css(widgets.Textarea(value="", layout=widgets.Layout(width="100%", height="240px")),
                        "heroes-monitor-log")
        self.auto = _css(widgets.Checkbox(value=auto, description="auto refresh"), "heroes-monitor-auto")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.log_button.on_click(lambda _b: self.show_log())
        self.select.observe(lambda change: self.open(change["new"]), names="value")
        self.widget = widgets.VBox([
            widgets.HTML("<h3>Workflow instances</h3>"), widgets.HBox([self.refresh_button, self.auto]), self.table,
            self.select, self.cancel_button, self.steps, self.outputs, widgets.HBox([self.log_step, self.log_button]),
            self.log, widgets.HTML("<b>Events</b>"), self.events, self.status])
        self._stop = threading.Event()
        self.refresh()
        if auto:
            threading.Thread(target=self._loop, daemon=True).start()

    def display(self):
        from IPython.display import display

        display(self.widget)
        return self

    def close(self) -> None:
        self._stop.set()

    def report(self, text: str, error: bool = False) -> None:
        self.status.value = f"<span style='color:{'#b00' if error else '#060'}'>{html.escape(text)}</span>"

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            if self.auto.value:
                self.refresh()

    # --- list ------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        try:
            self.instances = self.client.call("GET", "/organization/workflow/instance")
        except ApiError as exc:
            self.report(exc.detail, True)
            return
        rows = "".join(
            f"<tr class='heroes-monitor-row' data-id='{html.escape(i['id'])}'><td><code>{html.escape(i['id'][:8])}</code>"
            f"</td><td>{html.escape(i['name'] or '')}</td><td>{html.escape(i['template_name'])} v{i['template_version']}"
            f"</td><td>{html.escape(i['cluster'])}</td><td>{_state(i['state'])}</td>"
            f"<td>{html.escape(str(i['created_at'])[:19])}</td></tr>" for i in self.instances)
        self.table.value = ("<table><tr><th>id</th><th>label</th><th>template</th><th>cluster</th><th>state</th>"
                            f"<th>created</th></tr>{rows}</table>" if rows else "<i>no instance yet</i>")
        options = [(f"{i['id'][:8]} {i['template_name']} — {i['state']}", i["id"]) for i in self.instances]
        current = self.select.value
        self.select.options = options
        if current in {v for _, v in options}:
            self.select.value = current
            self.open(current)

    # --- one instance ------------------------------------------------------------------------------------
    def open(self, instance_id: str | None) -> None:
        if not instance_id:
            return
        try:
            detail = self.client.call("GET", f"/organization/workflow/instance/{instance_id}")
        except ApiError as exc:
            self.report(exc.detail, True)
            return
        self.detail = detail
        self.cancel_button.disabled = detail["state"] in FINAL
        rows = "".join(
            f"<tr class='heroes-monitor-step'><td>{html.escape(s['name'])}</td><td>{_state(s['state'])}</td>"
            f"<td>{html.escape(s['job_id'] or '')}</td><td>{html.escape(s['nodes'])}</td>"
            f"<td>{'' if s['exit_code'] is None else s['exit_code']}</td></tr>" for s in detail["steps"])
        head = (f"<p>{_state(detail['state'])} on {html.escape(detail['cluster'])}"
                + (f" — {html.escape(detail['reason'])}" if detail["reason"] else "") + "</p>")
        failed = [s for s in detail["steps"] if s["log_tail"]]
        tails = "".join(f"<p>Log tail of <b>{html.escape(s['name'])}</b>:</p><pre>{html.escape(s['log_tail'])}</pre>"
                        for s in failed)
        self.steps.value = (head + "<table><tr><th>step</th><th>state</th><th>job</th><th>nodes</th><th>exit</th></tr>"
                            f"{rows}</table>{tails}")
        self.events.value = "<br>".join(
            f"<small>{html.escape(str(e['at'])[11:19])} {html.escape(e['step'] or 'instance')}: "
            f"{html.escape(e['from_state'])} → {html.escape(e['to_state'])} {html.escape(e['detail'])}</small>"
            for e in detail["events"][-40:])
        names = [s["name"] for s in detail["steps"]]
        if list(self.log_step.options) != names:
            self.log_step.options = names
        self.outputs.value = self._outputs_html(detail)

    def _outputs_html(self, detail: dict) -> str:
        if not detail["outputs"]:
            return ""
        items = []
        for output in detail["outputs"]:
            key = output["key"]
            items.append(f"<li class='heroes-monitor-output'><code>{html.escape(key[len(detail['output_prefix']):])}"
                         f"</code> ({output['size']} bytes)</li>")
        return (f"<p>Outputs in <code>{html.escape(detail['output_bucket'])}/{html.escape(detail['output_prefix'])}"
                f"</code> (Data app):</p><ul>{''.join(items)}</ul>")

    def show_log(self) -> None:
        if not self.detail or not self.log_step.value:
            return
        try:
            response = self.client.request("GET", f"/organization/workflow/instance/{self.detail['id']}/log/"
                                                  f"{self.log_step.value}", params={"tail": 65536})
            self.log.value = response.text
        except ApiError as exc:
            self.report(exc.detail, True)

    def cancel(self) -> None:
        if not self.detail:
            return
        try:
            answer = self.client.call("DELETE", f"/organization/workflow/instance/{self.detail['id']}")
            self.report(f"cancel requested; scancel sent for {len(answer['scancelled'])} job(s)")
        except ApiError as exc:
            self.report(exc.detail, True)
        self.open(self.detail["id"])
