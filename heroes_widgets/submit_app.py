"""The Submit app (Voila: notebooks/submit.ipynb): pick a template, fill the form generated from its
parameter schema, pick inputs from your storage, choose a cluster (or auto), submit, and watch the
instance go through staging and submission. It calls the HEROES API only (:mod:`heroes_widgets.api_client`).

Widgets a browser test needs carry CSS classes ``heroes-submit-*``; each parameter's widget also carries
``heroes-submit-param-<name>``. Validation happens twice: the form checks bounds as you type (messages
under the field), and the service's 422 answer is shown verbatim when it refuses.

Right-sizing inline: once a template and a cluster (or auto) are chosen, the app asks the decision API
(``POST /organization/decision/decide``) what the history says the job needs and shows it next to what the
template asks, with an "accept" checkbox (sent as ``accept_rightsizing``) and, where the service advises a
lower CPU frequency, a second checkbox (sent as ``cpu_freq_khz``). When the service gives no advice, the box
stays hidden and the submission is the template's own.
"""
from __future__ import annotations

import html
import math
import re
import threading
import time
from typing import Any
from urllib.parse import quote

import ipywidgets as widgets

from .api_client import ApiClient, ServiceCallError
from .data_browser import InputPicker
from .nav import APPS, app_url
from .ui import AppShell, css as _css, message as _msg

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
PROGRESS = ["NEW", "STAGING_IN", "SUBMITTING", "QUEUED", "RUNNING", "STAGING_OUT", "COMPLETED"]


def monitor_link(instance_id: str) -> str:
    """The Monitor app opened on one instance (it reads ``?instance=`` from Voila's query string)."""
    return f"{app_url(next(a for a in APPS if a.key == 'monitor'))}?instance={quote(instance_id)}"


def _limit(seconds) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.0f} min" if seconds < 2 * 3600 else f"{seconds / 3600:.1f} h"


def advice_html(rs: dict | None, freq: dict, cluster: str | None, auto: bool) -> str:
    """The recommendation in one short block: recommended against asked, where it comes from."""
    where = (f"auto would choose <b>{html.escape(cluster)}</b>. " if auto and cluster
             else f"on <b>{html.escape(cluster)}</b>: " if cluster else "")
    parts = []
    if rs:
        asked = rs.get("requested") or {}
        basis = (f"from {rs.get('history_jobs', 0)} finished run(s)" if rs.get("basis") == "history"
                 else "no history yet: the template's values")
        parts.append(f"Right-sizing ({html.escape(basis)}): time limit <b>{_limit(rs.get('time_limit_s'))}</b> "
                     f"(template {_limit(asked.get('time_limit_s'))}), memory <b>{rs.get('memory_mb', '?')} MiB</b> "
                     f"(template {asked.get('memory_mb', '?')} MiB), cores <b>{rs.get('cores', '?')}</b>, "
                     f"nodes <b>{rs.get('nodes', '?')}</b>"
                     + (f" — {html.escape(rs['note'])}" if rs.get("note") else ""))
        for warning in rs.get("warnings") or []:
            parts.append(f"<span class='heroes-submit-limit-warning' style='color:#a60'>&#9888; {html.escape(warning)}</span>")
    if freq.get("recommended_khz"):
        parts.append(f"CPU frequency: --cpu-freq={int(freq['recommended_khz'])} saves about "
                     f"{freq.get('saving_pct', 0):.0f} % energy for about {freq.get('slowdown_pct', 0):.0f} % more "
                     "run time")
    return f"<p><small>{where}{'<br>'.join(parts)}</small></p>"


def fetch_template(app, template_id: str) -> dict | None:
    """A template's full description, kept in ``app.templates``; None once ``app.report`` has said why it
    could not be read, or when no template is chosen (the Submit and Decision apps load templates alike)."""
    if not template_id:
        return None
    try:
        template = app.client.call("GET", f"/organization/workflow/template/{template_id}")
    except ServiceCallError as exc:
        app.report(exc.detail, True)
        return None
    app.templates[template_id] = template
    return template


INT_LIMIT = 2 ** 63 - 1  # what the service's JSON and the clusters' integers hold


def parse_number(text: str, kind: str) -> tuple[int | float | None, str]:
    """``text`` as an ``int`` or ``float`` parameter, or (None, why not): nothing is rounded or changed, so
    12.7 is no whole number and 1e30 too large for one, rather than becoming 127 or 130."""
    text = (text or "").strip()
    if not text:
        return None, "a number is needed"
    if kind == "int":
        if not re.fullmatch(r"[+-]?\d+", text):
            return None, f"{text!r} is not a whole number (digits only, e.g. 12)"
        number = int(text)
        if abs(number) > INT_LIMIT:
            return None, f"{text} is too large for a whole-number field"
        return number, ""
    try:
        number = float(text)
    except ValueError:
        return None, f"{text!r} is not a number (e.g. 0.5 or 1e-3)"
    if not math.isfinite(number):
        return None, f"{text!r} is not a finite number"
    return number, ""


class ParamField:
    """One form field for one template parameter, with its own validation message."""

    def __init__(self, spec: dict, client: ApiClient):
        self.spec = spec
        self.name = spec["name"]
        kind = spec["type"]
        label = spec.get("label") or self.name
        default = spec.get("default")
        style = {"description_width": "160px"}
        if kind in ("int", "float"):
            # a Text, not IntText/FloatText: those silently turn 12.7 into 127 and 1e30 into 130
            start = default if default is not None else (spec.get("min") or 0)
            self.input = widgets.Text(value=f"{start:g}" if kind == "float" else str(int(start)),
                                      description=label, style=style, continuous_update=False)
        elif kind == "bool":
            self.input = widgets.Checkbox(value=bool(default), description=label, style=style)
        elif kind == "enum":
            self.input = widgets.Dropdown(options=spec["choices"], value=default or spec["choices"][0],
                                          description=label, style=style)
        elif kind == "file":
            self.input = InputPicker(client, description=label, css_prefix=f"heroes-submit-picker-{self.name}")
        else:
            self.input = widgets.Text(value=default or "", description=label, style=style,
                                      placeholder=spec.get("description", ""))
        _css(self.input, "heroes-submit-param", f"heroes-submit-param-{self.name}")
        self.message = _css(widgets.HTML(""), "heroes-submit-param-message")
        hint = html.escape(spec.get("description", ""))
        bounds = []
        if spec.get("min") is not None:
            bounds.append(f"min {spec['min']:g}")
        if spec.get("max") is not None:
            bounds.append(f"max {spec['max']:g}")
        if bounds:
            hint = (hint + " " if hint else "") + f"({', '.join(bounds)})"
        self.widget = widgets.VBox([self.input, widgets.HTML(f"<small>{hint}</small>") if hint else widgets.HTML(""),
                                    self.message])
        if kind != "file":
            self.input.observe(lambda _change: self.validate(), names="value")

    @property
    def value(self) -> Any:
        """The value to send: numbers parsed from their text (None while the text is not a valid number)."""
        if self.spec["type"] in ("int", "float"):
            number, _problem = parse_number(self.input.value, self.spec["type"])
            return number
        return self.input.value

    def validate(self) -> bool:
        """Client-side checks (the service checks again): numbers as typed, bounds, lengths, required files."""
        spec, value, problem = self.spec, self.input.value, ""
        if spec["type"] in ("int", "float"):
            value, problem = parse_number(value, spec["type"])
            if problem:
                pass
            elif spec.get("min") is not None and value < spec["min"]:
                problem = f"must be >= {spec['min']:g}"
            elif spec.get("max") is not None and value > spec["max"]:
                problem = f"must be <= {spec['max']:g}"
        elif spec["type"] == "string":
            if len(value) < spec.get("min_length", 0):
                problem = f"at least {spec.get('min_length', 0)} characters"
            elif len(value) > spec.get("max_length", 256):
                problem = f"at most {spec.get('max_length', 256)} characters"
        elif spec["type"] == "file" and spec.get("required") and not value:
            problem = "pick a file"
        self.message.value = _msg(problem, True) if problem else ""
        return not problem


class SubmitApp(AppShell):
    def __init__(self, client: ApiClient | None = None, poll_s: float = 1.0):
        self.client = client or ApiClient()
        self.poll_s = poll_s
        self.fields: list[ParamField] = []
        self.templates: dict[str, dict] = {}
        self.instance_id: str | None = None
        self.status = _css(widgets.HTML(""), "heroes-submit-status")
        self.template = _css(widgets.Dropdown(description="Template", options=[], style={"description_width": "160px"},
                                              layout=widgets.Layout(width="520px")), "heroes-submit-template")
        self.about = widgets.HTML("")
        self.form = widgets.VBox([])
        self.cluster = _css(widgets.Dropdown(description="Cluster", options=[("auto (let the gateway choose)", "auto")],
                                             style={"description_width": "160px"}), "heroes-submit-cluster")
        self.label = _css(widgets.Text(description="Instance label", style={"description_width": "160px"}),
                          "heroes-submit-label")
        self.submit_button = _css(widgets.Button(description="Submit", button_style="primary", icon="play"),
                                  "heroes-submit-button")
        self.progress = _css(widgets.IntProgress(min=0, max=len(PROGRESS) - 1, value=0, description="Progress"),
                             "heroes-submit-progress")
        self.state = _css(widgets.HTML(""), "heroes-submit-state")
        self.advice: dict = {}  # the shown recommendation: {"rightsizing": {...}, "cpu_freq_khz": int | None}
        self.rightsizing = _css(widgets.HTML(""), "heroes-submit-rightsizing")
        self.accept_rightsizing = _css(widgets.Checkbox(description="accept the recommended limits", value=False,
                                                        indent=False), "heroes-submit-rightsizing-accept")
        self.accept_cpu_freq = _css(widgets.Checkbox(description="apply the CPU-frequency advice", value=False,
                                                     indent=False), "heroes-submit-cpufreq-accept")
        self.advice_box = _css(widgets.VBox([self.rightsizing, self.accept_rightsizing, self.accept_cpu_freq],
                                            layout=widgets.Layout(display="none")), "heroes-submit-advice")
        self.cluster.observe(lambda _change: self.advise(), names="value")
        self.template.observe(self._template_chosen, names="value")
        self.submit_button.on_click(lambda _b: self.submit())
        self.widget = widgets.VBox([widgets.HTML("<h3>Submit a workflow</h3>"), self.template, self.about, self.form,
                                    self.cluster, self.advice_box, self.label, self.submit_button, self.progress,
                                    self.state, self.status])
        self.load()

    def report(self, text: str, error: bool = False) -> None:
        self.status.value = _msg(text, error)

    # --- loading ---------------------------------------------------------------------------------------
    def load(self) -> None:
        try:
            listed = self.client.call("GET", "/organization/workflow/template")
            clusters = self.client.call("GET", "/organization/cluster/")
        except ServiceCallError as exc:
            self.report(exc.detail, True)
            return
        self.cluster.options = [("auto (let the gateway choose)", "auto")] + [
            (f"{c['name']} ({c['container_runtime']}, speed {c['relative_speed']:g})", c["name"]) for c in clusters]
        self.template.options = [(f"{t['title'] or t['name']} (v{t['version']})", t["id"]) for t in listed]
        if not listed:
            self.report("your organization has published no workflow template yet", True)

    def _template_chosen(self, change) -> None:
        template = fetch_template(self, change["new"])
        if template is None:
            return
        steps = " → ".join(s["name"] for s in template["spec"]["steps"])
        self.about.value = (f"<p>{html.escape(template['description'])}</p><p><small>steps: {html.escape(steps)}"
                            "</small></p>")
        self.fields = [ParamField(spec, self.client) for spec in template["parameters"]]
        self.form.children = [f.widget for f in self.fields]
        for field in self.fields:
            if field.spec["type"] != "file":
                field.input.observe(lambda _change: self.advise(), names="value")
        self.accept_rightsizing.value = self.accept_cpu_freq.value = False
        self.advise()

    # --- right-sizing advice -----------------------------------------------------------------------------
    def advise(self) -> None:
        """Ask the decision API what this template needs on the chosen cluster (or the one auto would pick)
        and show it; hidden when the service cannot say (no decision API, invalid form, no eligible cluster)."""
        if not self.template.value or not self.form_valid():
            self._hide_advice()
            return
        cluster = self.cluster.value
        try:
            answer = self.client.decide(self.template.value, self.parameters(),
                                        clusters=None if cluster == "auto" else [cluster])
        except ServiceCallError:
            self._hide_advice()
            return
        target = answer.get("choice") if cluster == "auto" else cluster
        candidate = next((c for c in answer.get("candidates") or [] if c.get("cluster") == target), None)
        rs = answer.get("rightsizing")
        freq = (candidate or {}).get("cpu_freq") or {}
        if not rs and not freq.get("recommended_khz"):
            self._hide_advice()
            return
        self.advice = {"rightsizing": rs, "cpu_freq_khz": freq.get("recommended_khz"), "cluster": target}
        self.rightsizing.value = advice_html(rs, freq, target, auto=cluster == "auto")
        self.accept_rightsizing.layout.display = None if rs else "none"
        self.accept_cpu_freq.layout.display = None if freq.get("recommended_khz") else "none"
        self.advice_box.layout.display = None

    def _hide_advice(self) -> None:
        self.advice = {}
        self.advice_box.layout.display = "none"

    # --- submitting ------------------------------------------------------------------------------------
    def parameters(self) -> dict:
        return {f.name: f.value for f in self.fields if f.value is not None}

    def form_valid(self) -> bool:
        """Whether every field holds what it should (each field shows its own message when not)."""
        return all([f.validate() for f in self.fields])

    def submit(self, wait: bool = False) -> str | None:
        """Validate, POST /submit, then follow the instance's progress in a thread. Returns its id."""
        if not self.form_valid():
            self.report("nothing was submitted: fix the fields marked in red", True)
            return None
        body = {"template_id": self.template.value, "parameters": self.parameters(), "cluster": self.cluster.value,
                "name": self.label.value, "wait": False}
        if self.accept_rightsizing.value and self.advice.get("rightsizing"):
            body["accept_rightsizing"] = True
        if self.accept_cpu_freq.value and self.advice.get("cpu_freq_khz"):
            body["cpu_freq_khz"] = int(self.advice["cpu_freq_khz"])
        self.submit_button.disabled = True
        try:
            answer = self.client.call("POST", "/organization/workflow/submit", json=body)
        except ServiceCallError as exc:
            self.report(f"refused: {exc.detail}", True)
            self.submit_button.disabled = False
            return None
        self.instance_id = answer["id"]
        self.report(f"instance {answer['id']} submitted to {answer['cluster']}")
        self._show(answer)
        self._submitted = threading.Event()
        follower = threading.Thread(target=self._follow, args=(answer["id"], self._submitted), daemon=True)
        follower.start()
        if wait:  # until Slurm has every step (or the instance ended): the follower goes on polling after
            self._submitted.wait()
        return answer["id"]

    def _show(self, instance: dict) -> None:
        state = instance["state"]
        if state in PROGRESS:
            self.progress.value = PROGRESS.index(state)
        self.progress.bar_style = {"COMPLETED": "success", "FAILED": "danger", "CANCELLED": "warning"}.get(state, "info")
        jobs = ", ".join(f"{s['name']}={s['job_id']}" for s in instance["steps"] if s["job_id"])
        self.state.value = (f"<b>{html.escape(state)}</b> on {html.escape(instance['cluster'])}"
                            + (f" — jobs {html.escape(jobs)}" if jobs else "")
                            + (f"<br><small>{html.escape(instance['reason'])}</small>" if instance["reason"] else "")
                            + f"<br><a class='heroes-submit-monitor-link' href='{html.escape(monitor_link(instance['id']))}'>"
                            "steps, logs and outputs in the Monitor app</a>")

    def _follow(self, instance_id: str, submitted: threading.Event, timeout: float = 24 * 3600) -> None:
        """Poll the instance until it ends (COMPLETED, FAILED, CANCELLED), so the state shown is never stale.
        The Submit button comes back once Slurm has every step; a newer submission ends this follower.
        Polls every ``poll_s`` for the first minute, then every 5 s at most (long jobs)."""
        started = time.monotonic()
        released = False
        try:
            while time.monotonic() - started < timeout and self.instance_id == instance_id:
                instance = self.client.call("GET", f"/organization/workflow/instance/{instance_id}")
                if self.instance_id != instance_id:
                    return
                self._show(instance)
                if not released and instance["state"] not in ("NEW", "STAGING_IN", "SUBMITTING"):
                    self.submit_button.disabled = False
                    released = True
                    submitted.set()
                if instance["state"] in FINAL:
                    return
                time.sleep(self.poll_s if time.monotonic() - started < 60 else max(self.poll_s, 5.0))
        except ServiceCallError as exc:
            self.report(exc.detail, True)
        finally:
            submitted.set()
            if self.instance_id == instance_id:
                self.submit_button.disabled = False
