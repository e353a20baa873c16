"""The Decision & cost app (Voila: notebooks/decision.ipynb): where should this workflow run, when will it
finish, how much energy will it use and what will it cost?

Pick a template (the form is the Submit app's, built from the template's parameter schema), a policy (from
``GET /organization/decision/policies``), an optional deadline and budget, optionally a subset of clusters;
the app asks ``POST /organization/decision/decide`` and shows

- every candidate cluster: wait, run, finish, energy (marked "est." when it comes from the cluster's power
  profile rather than measured history), cost with its currency, confidence, deadline and budget status;
- the choice and the service's reason (or why nothing can be chosen);
- the right-sizing recommendation (time limit, memory, cores, nodes against what the template asks) and the
  ``--cpu-freq`` advice;
- a Pareto plot of finish time against cost, energy as marker size and colour, the non-dominated candidates
  ringed and the chosen one starred.

Changing the policy (or any other input) asks again and updates the table, the choice and the same figure in
place (a plotly ``FigureWidget`` where the kernel has anywidget, so the browser redraws without a new output).
It calls the REST API only, through :mod:`heroes_widgets.api_client`. Widgets a browser test needs carry CSS
classes ``heroes-decision-*``.
"""
from __future__ import annotations

import html
import math
import re

import ipywidgets as widgets

from .api_client import ApiClient, ServiceCallError
from .grid import Column, Table
from .submit_app import ParamField, fetch_template, parse_number
from .ui import css as _css, figure_widget as _figure_widget, message as _msg

STYLE = {"description_width": "160px"}
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
#: marker sizes (px) of the least and the most energy-hungry candidate
SIZE_MIN, SIZE_MAX = 14, 44


# --- formatting -------------------------------------------------------------------------------------------
def duration(seconds) -> str:
    """A duration people read at a glance: seconds, minutes or hours ("—" when unknown)."""
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def money(amount, currency: str | None) -> str:
    """A cost with its currency always written; small amounts keep enough digits to differ."""
    if amount is None:
        return "—"
    digits = 2 if amount == 0 or abs(amount) >= 0.01 else 4
    return f"{amount:.{digits}f} {currency or ''}".strip()


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# --- what the answer says ---------------------------------------------------------------------------------
def plotted(candidates: list[dict]) -> list[dict]:
    """The candidates a point can be drawn for: eligible ones with a finish time and a cost."""
    return [c for c in candidates if c.get("eligible", True)
            and _number(c.get("finish_s")) is not None and _number(c.get("cost")) is not None]


def non_dominated(candidates: list[dict]) -> list[bool]:
    """Pareto flags over (finish time, cost, energy), all minimised: True where no other candidate is at
    least as good on all three and strictly better on one. Unknown energy counts as no advantage."""
    def objectives(c):
        kwh = _number(c.get("energy_kwh"))
        return (float(c["finish_s"]), float(c["cost"]), kwh if kwh is not None else math.inf)

    points = [objectives(c) for c in candidates]
    flags = []
    for i, p in enumerate(points):
        dominated = any(all(q[k] <= p[k] for k in range(3)) and any(q[k] < p[k] for k in range(3))
                        for j, q in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags


def _plain_status(flag, yes: str, no: str) -> str:
    """Deadline/budget status as text: met, missed, or no constraint given (None)."""
    return "—" if flag is None else (f"✓ {yes}" if flag else f"✗ {no}")


def candidate_rows(candidates: list[dict], choice: str | None, deadline: bool = True,
                   budget: bool = True) -> list[dict]:
    """The candidates, best first as the service ordered them, as the grid's rows: the chosen one starred,
    an ineligible one with the service's reason. ``deadline``/``budget``: whether one was asked for
    (without, the status columns say "—" rather than a vacuous "meets")."""
    rows = []
    for c in candidates:
        chosen = c["cluster"] == choice
        confidence = c.get("confidence")
        kwh = c.get("energy_kwh")
        rows.append({
            "cluster": c["cluster"] + (" ★ chosen" if chosen else "" if c.get("eligible", True) else " (not usable)"),
            "wait": duration(c.get("wait_s")), "run": duration(c.get("run_s")), "finish": duration(c.get("finish_s")),
            "energy": "—" if kwh is None else f"{kwh:.4f} kWh" + (" est." if c.get("energy_estimated") else ""),
            "cost": money(c.get("cost"), c.get("currency")),
            "confidence": "—" if confidence is None else f"{confidence:.0%}",
            "deadline": _plain_status(c.get("meets_deadline") if deadline else None, "meets", "misses"),
            "budget": _plain_status(c.get("within_budget") if budget else None, "within", "over"),
            "note": c.get("reason") or c.get("cost_note") or ""})
    return rows


CANDIDATE_GRID = [Column("cluster", "cluster", 150), Column("wait", "wait", 80), Column("run", "run", 80),
                  Column("finish", "finish", 80), Column("energy", "energy", 130), Column("cost", "cost", 100),
                  Column("confidence", "confidence", 90), Column("deadline", "deadline", 90),
                  Column("budget", "budget", 90), Column("note", "note", 260)]


def choice_html(answer: dict) -> str:
    policy = html.escape(answer.get("policy") or "")
    reason = html.escape(answer.get("reason") or "")
    if answer.get("choice"):
        return (f"<p class='heroes-decision-chosen-text'>Policy <b>{policy}</b> chooses "
                f"<b>{html.escape(answer['choice'])}</b>: {reason}</p>")
    return f"<p style='color:#b00'>Policy <b>{policy}</b> chooses no cluster: {reason}</p>"


def rightsizing_html(rs: dict | None, history: dict | None = None) -> str:
    """What the template asks against what the history says is enough (never below the template's minimum:
    the service guarantees it)."""
    if not rs:
        return ""
    asked = rs.get("requested") or {}
    rows = [("time limit", duration(asked.get("time_limit_s")), duration(rs.get("time_limit_s"))),
            ("memory per node", _mib(asked.get("memory_mb")), _mib(rs.get("memory_mb"))),
            ("cores per task", _plain(asked.get("cores")), _plain(rs.get("cores"))),
            ("nodes", _plain(asked.get("nodes")), _plain(rs.get("nodes")))]
    body = "".join(f"<tr><td>{name}</td><td>{html.escape(a)}</td><td><b>{html.escape(r)}</b></td></tr>"
                   for name, a, r in rows)
    runs = rs.get("history_jobs", (history or {}).get("jobs", 0))
    basis = ("learnt from " + f"{runs} finished run{'s' if runs != 1 else ''}" if rs.get("basis") == "history"
             else "no history yet: the template's own values")
    note = rs.get("note") or (history or {}).get("note") or basis  # the service's own words where it gives some
    warnings = "".join(f"<p class='heroes-decision-rs-warning' style='color:#a60'>&#9888; {html.escape(w)}</p>"
                       for w in rs.get("warnings") or [])
    return ("<h4>Right-sizing</h4><table class='heroes-decision-rs-table'><tr><th></th><th>template asks</th>"
            f"<th>recommended</th></tr>{body}</table><p><small>{html.escape(note)}</small></p>{warnings}")


def _mib(value) -> str:
    return "—" if value is None else f"{value:g} MiB"


def _plain(value) -> str:
    return "—" if value is None else f"{value:g}"


def cpu_freq_text(advice: dict | None) -> str:
    """One line of ``--cpu-freq`` advice ("" when the service recommends none)."""
    if not advice or not advice.get("recommended_khz"):
        return ""
    ghz = advice["recommended_khz"] / 1e6
    return (f"--cpu-freq={advice['recommended_khz']} ({ghz:.2f} GHz): about {advice.get('saving_pct', 0):.0f} % "
            f"less energy for about {advice.get('slowdown_pct', 0):.0f} % more run time")


def cpu_freq_html(candidates: list[dict], choice: str | None) -> str:
    lines = [(c["cluster"], cpu_freq_text(c.get("cpu_freq"))) for c in candidates]
    lines = [(name, text) for name, text in lines if text]
    if not lines:
        return ("<h4>CPU frequency</h4><p><small>no frequency advice: the job is not known to be memory-bound "
                "on any cluster</small></p>")
    bold = " style='font-weight:bold'"
    items = "".join(f"<li{bold if name == choice else ''}>{html.escape(name)}: {html.escape(text)}</li>"
                    for name, text in lines)
    return f"<h4>CPU frequency</h4><ul class='heroes-decision-cpufreq-list'>{items}</ul>"


# --- the Pareto figure ------------------------------------------------------------------------------------
def new_figure():
    """The empty figure the app updates in place: candidates, the non-dominated ones, the choice."""
    import plotly.graph_objects as go

    fig = go.Figure(
        data=[go.Scatter(name="candidates", mode="markers+text", x=[], y=[], text=[], textposition="top center",
                         marker=dict(size=[], color=[], colorscale="Viridis", showscale=True, opacity=0.85,
                                     colorbar=dict(title="energy (kWh)"), line=dict(width=1, color="#333")),
                         hovertemplate="%{text}<br>finish %{x:.1f} min<br>cost %{y}<extra></extra>"),
              go.Scatter(name="non-dominated", mode="markers", x=[], y=[], hoverinfo="skip",
                         marker=dict(symbol="circle-open", size=[], color="#d62728", line=dict(width=2))),
              go.Scatter(name="chosen", mode="markers", x=[], y=[], text=[], hoverinfo="text",
                         marker=dict(symbol="star", size=22, color="#ffb000", line=dict(width=1.5, color="#000")))],
        layout=dict(title=dict(text="no decision yet"), height=440, margin=dict(l=60, r=20, t=60, b=50),
                    xaxis=dict(title=dict(text="finish (minutes from now)"), rangemode="tozero"),
                    yaxis=dict(title=dict(text="cost"), rangemode="tozero"),
                    legend=dict(orientation="h", y=-0.2)))
    return fig


def as_widget(fig):
    """A FigureWidget (live, updatable in place) where the kernel can build one, else the figure itself."""
    try:
        import plotly.graph_objects as go

        return go.FigureWidget(fig)
    except ImportError:
        return fig


def update_figure(fig, answer: dict) -> None:
    """Redraw ``fig`` (same object) for a decide answer: one batch, so the browser redraws once."""
    points = plotted(answer.get("candidates") or [])
    front = non_dominated(points)
    kwh = [_number(c.get("energy_kwh")) or 0.0 for c in points]
    top = max(kwh, default=0.0) or 1.0
    sizes = [SIZE_MIN + (SIZE_MAX - SIZE_MIN) * e / top for e in kwh]
    xs = [c["finish_s"] / 60 for c in points]
    ys = [c["cost"] for c in points]
    labels = [c["cluster"] + (" (est.)" if c.get("energy_estimated") else "") for c in points]
    chosen = [i for i, c in enumerate(points) if c["cluster"] == answer.get("choice")]
    currencies = sorted({c.get("currency") for c in points if c.get("currency")})
    with fig.batch_update():
        fig.data[0].x, fig.data[0].y, fig.data[0].text = xs, ys, labels
        fig.data[0].marker.size, fig.data[0].marker.color = sizes, kwh
        fig.data[0].customdata = [[c["cluster"]] for c in points]
        fig.data[1].x = [x for x, f in zip(xs, front) if f]
        fig.data[1].y = [y for y, f in zip(ys, front) if f]
        fig.data[1].marker.size = [max(s, 22) + 12 for s, f in zip(sizes, front) if f]  # a ring around the star
        fig.data[2].x = [xs[i] for i in chosen]
        fig.data[2].y = [ys[i] for i in chosen]
        fig.data[2].text = [points[i]["cluster"] for i in chosen]
        fig.layout.title.text = (f"{answer.get('policy', '')}: chosen {answer['choice']}" if answer.get("choice")
                                 else f"{answer.get('policy', '')}: no cluster chosen")
        fig.layout.yaxis.title.text = "cost (" + (" / ".join(currencies) or "no price") + ")"


# --- the app ----------------------------------------------------------------------------------------------
class DecisionApp:
    """Inputs on top (template, form, policy, constraints, clusters), then the choice, the table, the plot,
    right-sizing and frequency advice."""

    def __init__(self, client: ApiClient | None = None):
        self.status = _css(widgets.HTML(""), "heroes-decision-status")
        self.answer: dict | None = None
        self.asked: dict = {}  # the decide body of the answer shown
        self.fields: list[ParamField] = []
        self.templates: dict[str, dict] = {}
        self._quiet = False  # True while the app itself fills widgets (no decide per filled widget)
        try:
            self.client = client or ApiClient()
        except ServiceCallError as exc:
            self.client = None
            self.report(exc.detail, True)
            self.widget = widgets.VBox([widgets.HTML("<h3>Where should it run?</h3>"), self.status])
            return
        self.template = _css(widgets.Dropdown(description="Template", options=[], style=STYLE,
                                              layout=widgets.Layout(width="520px")), "heroes-decision-template")
        self.about = widgets.HTML("")
        self.form = _css(widgets.VBox([]), "heroes-decision-form")
        self.policy = _css(widgets.Dropdown(description="Policy", options=[], style=STYLE,
                                            layout=widgets.Layout(width="520px")), "heroes-decision-policy")
        self.policy_about = _css(widgets.HTML(""), "heroes-decision-policy-about")
        # Text, not BoundedFloatText: that one silently clamps what it cannot hold
        self.deadline = _css(widgets.Text(description="Deadline (min)", value="0", style=STYLE,
                                          continuous_update=False), "heroes-decision-deadline")
        self.budget = _css(widgets.Text(description="Budget", value="0", style=STYLE, continuous_update=False),
                           "heroes-decision-budget")
        self.currency = _css(widgets.Text(description="Currency", placeholder="the clusters' own", style=STYLE,
                                          layout=widgets.Layout(width="260px")), "heroes-decision-currency")
        self.clusters = _css(widgets.SelectMultiple(description="Clusters", options=[], style=STYLE, rows=4),
                             "heroes-decision-clusters")
        self.decide_button = _css(widgets.Button(description="Decide", button_style="primary", icon="balance-scale"),
                                  "heroes-decision-button")
        self.choice = _css(widgets.HTML(""), "heroes-decision-choice")
        self.table = Table(CANDIDATE_GRID, "heroes-decision-table", empty="no cluster is enrolled for your organization")
        self.rightsizing = _css(widgets.HTML(""), "heroes-decision-rightsizing")
        self.cpu_freq = _css(widgets.HTML(""), "heroes-decision-cpufreq")
        self.history = _css(widgets.HTML(""), "heroes-decision-history")
        self.figure = None
        self.live = False  # the figure becomes a FigureWidget on display()
        self.plot_box = _css(widgets.VBox([]), "heroes-decision-plot")
        try:
            self.figure = new_figure()
        except ImportError as exc:  # no plotly in this kernel: tables only
            self.plot_box.children = [widgets.HTML(f"<i>plot unavailable ({html.escape(str(exc))})</i>")]
        hint = widgets.HTML("<small>0 = no deadline / no budget. The deadline counts from now; the budget is "
                            "in the currency given (blank: each cluster's own).</small>")
        inputs = widgets.VBox([self.template, self.about, self.form, self.policy, self.policy_about,
                               widgets.HBox([self.deadline, self.budget, self.currency]), hint, self.clusters,
                               self.decide_button])
        self.widget = _css(widgets.VBox([widgets.HTML("<h3>Time, energy and cost per cluster</h3>"),
                                         inputs, self.status, self.choice, self.table.widget, self.plot_box,
                                         self.rightsizing, self.cpu_freq, self.history]), "heroes-decision-app")
        self.template.observe(self._template_chosen, names="value")
        for widget in (self.policy, self.deadline, self.budget, self.clusters):
            widget.observe(lambda _change: self._changed(), names="value")
        self.currency.observe(lambda _change: self._changed(), names="value")
        self.decide_button.on_click(lambda _b: self.decide())
        self.load()

    def display(self):
        from IPython.display import display

        self.go_live()
        display(self.widget)
        return self

    def go_live(self) -> None:
        """Turn the figure into a FigureWidget now, with what it shows so far as its initial state: a
        FigureWidget's changes made before its view exists (the first decision, taken while the app is built)
        never reach the browser, so the widget is made only when it is about to be shown."""
        if self.figure is None or self.live:
            return
        self.figure = as_widget(self.figure)
        self.plot_box.children = [_figure_widget(self.figure)]
        self.live = True

    def report(self, text: str, error: bool = False) -> None:
        self.status.value = _msg(text, error)

    # --- loading ---------------------------------------------------------------------------------------
    def load(self) -> None:
        """Policies, clusters and templates; then the first template's decision under the default policy."""
        try:
            policies = self.client.policies()
            listed = self.client.call("GET", "/organization/workflow/template")
            clusters = self.client.call("GET", "/organization/cluster/")
        except ServiceCallError as exc:
            self.report(exc.detail, True)
            return
        self.policies = {p["name"]: p for p in policies.get("policies", [])}
        self._quiet = True
        try:
            self.policy.options = [(p.get("title") or p["name"], p["name"]) for p in self.policies.values()]
            if policies.get("default") in self.policies:
                self.policy.value = policies["default"]
            self.clusters.options = [c["name"] for c in clusters]
        finally:
            self._quiet = False
        self._describe_policy()
        if not listed:
            self.report("your organization has published no workflow template yet", True)
        self.template.options = [(f"{t['title'] or t['name']} (v{t['version']})", t["id"]) for t in listed]
        if listed and self.template.value is None:
            self.template.value = listed[0]["id"]  # builds its form and decides

    def _template_chosen(self, change) -> None:
        template = fetch_template(self, change["new"])
        if template is None:
            return
        self.about.value = f"<p><small>{html.escape(template.get('description') or '')}</small></p>"
        self.fields = [ParamField(spec, self.client) for spec in template["parameters"]]
        for field in self.fields:
            _css(field.input, f"heroes-decision-param-{field.name}")
            if field.spec["type"] != "file":  # a file picker changes nothing the estimate uses
                field.input.observe(lambda _change: self._changed(), names="value")
        self.form.children = [f.widget for f in self.fields]
        self.decide()

    def _describe_policy(self) -> None:
        p = self.policies.get(self.policy.value) if self.policy.value else None
        if not p:
            self.policy_about.value = ""
            return
        weights = ", ".join(f"{k} {v:g}" for k, v in (p.get("weights") or {}).items())
        self.policy_about.value = (f"<small>{html.escape(p.get('description') or '')}"
                                   + (f" (weights: {html.escape(weights)})" if weights else "") + "</small>")

    def _changed(self) -> None:
        if self._quiet:
            return
        self._describe_policy()
        if self.template.value:
            self.decide()

    # --- deciding --------------------------------------------------------------------------------------
    def request(self) -> dict | None:
        """The decide body from the inputs; None (and the problem shown) when an input is wrong."""
        if not all([f.validate() for f in self.fields]):
            self.report("fix the fields marked in red", True)
            return None
        limits = {}
        for name, widget, top in (("deadline", self.deadline, 1e6), ("budget", self.budget, 1e9)):
            number, problem = parse_number(widget.value, "float")
            if not problem and not 0 <= number <= top:
                problem = f"between 0 and {top:g}"
            if problem:
                self.report(f"{name}: {problem}", True)
                return None
            limits[name] = number
        currency = self.currency.value.strip().upper()
        if currency and not CURRENCY_RE.match(currency):
            self.report("currency: three capital letters, e.g. EUR", True)
            return None
        return {"template": self.template.value,
                "parameters": {f.name: f.value for f in self.fields if f.value is not None},
                "policy": self.policy.value or None,
                "deadline_s": limits["deadline"] * 60 if limits["deadline"] > 0 else None,
                "budget": limits["budget"] if limits["budget"] > 0 else None,
                "currency": currency or None,
                "clusters": list(self.clusters.value) or None}

    def decide(self) -> dict | None:
        """Ask the service and show its answer; the previous answer stays on screen when it refuses."""
        body = self.request()
        if body is None:
            return None
        try:
            answer = self.client.decide(**body)
        except ServiceCallError as exc:
            self.report(f"no decision: {exc.detail}", True)
            return None
        self.asked = body
        self.show(answer)
        shown = len(answer.get("candidates") or [])
        self.report(f"{shown} cluster(s) compared under policy {answer.get('policy')}")
        return answer

    def show(self, answer: dict) -> None:
        self.answer = answer
        candidates = answer.get("candidates") or []
        self.choice.value = choice_html(answer)
        self.table.update(candidate_rows(candidates, answer.get("choice"),
                                         deadline=self.asked.get("deadline_s") is not None,
                                         budget=self.asked.get("budget") is not None))
        self.rightsizing.value = rightsizing_html(answer.get("rightsizing"), answer.get("history"))
        self.cpu_freq.value = cpu_freq_html(candidates, answer.get("choice"))
        history = answer.get("history") or {}
        self.history.value = (f"<p><small>estimates learnt from {history.get('jobs', 0)} finished run(s)"
                              + (" (none yet: the template's own requests)"
                                 if history.get("basis") == "template-defaults" else "")
                              + "</small></p>") if history else ""
        if self.figure is not None:
            update_figure(self.figure, answer)
            if self.live and not isinstance(self.figure, widgets.DOMWidget):  # a static figure is drawn again
                self.plot_box.children = [_figure_widget(self.figure)]

