"""The Energy app (Voila: notebooks/energy.ipynb): the energy of the user's job steps (an org admin: the
organization's), from the HEROES energy API only.

- energy per step (and per workflow instance), estimated values hatched and marked "(estimated)";
- the power timeline of one step (dashed = estimated);
- a comparison across clusters and templates;
- totals per user/cluster/template of the organization over a chosen period;
- export of the steps shown to CSV.

Figures come from :mod:`heroes_energy.plots` (published next to heroes_widgets for the users' kernels) and
are shown as plotly ``FigureWidget``; where that cannot be built (no anywidget) a static figure is shown.
Widgets a browser test needs carry CSS classes ``heroes-energy-*``.
"""
from __future__ import annotations

import base64
import csv
import io
from datetime import date, datetime, time, timezone
from types import SimpleNamespace

import ipywidgets as widgets

from .api_client import ApiClient, ServiceCallError
from .grid import Column, Table
from .ui import AppShell, css as _css, figure_widget as _figure_widget

STEP_COLUMNS = ("cluster", "instance_id", "template", "job_id", "step_id", "job_name", "username", "nodes",
                "start_time", "time_s", "dc_power_w", "energy_j", "energy_kwh", "gflops_per_w", "estimated")


def step_label(s: dict) -> str:
    where = f"{s['cluster']}:" if s.get("cluster") else ""
    return f"{where}{s['job_id']}.{s['step_id']}" + (f" {s['job_name']}" if s.get("job_name") else "")


def _when(epoch) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M")


def short(text: str, limit: int = 28) -> str:
    """A name cut in its middle (start and end kept, so similar names stay apart) for figure axes: one long
    name squashed the plot. The grid's row detail shows it whole."""
    return text if len(text) <= limit else f"{text[:limit - 10]}…{text[-9:]}"


def _num(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def energy_text(s: dict) -> str:
    """Energy as shown: 'x.xxxx kWh', with '(estimated)' where no counter measured it."""
    return f"{s['energy_kwh']:.4f} kWh" + (" (estimated)" if s["estimated"] else "")


def step_rows(steps: list[dict]) -> list[dict]:
    """The API's step rows as the steps grid's rows."""
    return [{"step": step_label(s), "instance": s.get("instance_id") or "", "template": s.get("template") or "",
             "user": s.get("username") or "", "nodes": str(s.get("nodes", "")), "start": _when(s.get("start_time")),
             "time": _num(s.get("time_s"), 1), "power": _num(s.get("dc_power_w"), 1), "energy": energy_text(s),
             "gflops": _num(s.get("gflops_per_w"), 3)} for s in steps]


STEP_GRID = [Column("step", "step", 170), Column("instance", "instance", 150), Column("template", "template", 160),
             Column("user", "user", 80), Column("nodes", "nodes", 60), Column("start", "start (UTC)", 130),
             Column("time", "time (s)", 80), Column("power", "power (W)", 85), Column("energy", "energy", 170),
             Column("gflops", "GFLOPS/W", 85)]


def total_rows(groups: list[dict]) -> list[dict]:
    return [{"group": str(g["group"]) or "(none)", "steps": g["steps"],
             "energy": f"{g['energy_kwh']:.4f} kWh" + (" (estimated)" if g["estimated"] else "")} for g in groups]


def steps_csv(steps: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(STEP_COLUMNS)
    for s in steps:
        writer.writerow(["" if s.get(c) is None else s.get(c) for c in STEP_COLUMNS])
    return out.getvalue()


def _summaries(steps: list[dict]) -> list[SimpleNamespace]:
    """API step rows in the shape heroes_energy.plots expects (StepSummary's attributes)."""
    return [SimpleNamespace(job_id=s["job_id"], step_id=s["step_id"], energy_j=s["energy_j"],
                            estimated=s["estimated"], job_name=short(s.get("template") or s.get("job_name") or "?"),
                            cluster=short(s.get("cluster") or "?", 16), label=short(step_label(s), 36))
            for s in steps]


def timeline_samples(samples: list[dict]) -> list[dict]:
    """API sample rows (one node) as heroes_energy.reader.read_samples rows."""
    return [{"ELAPSED_SEC": s["elapsed_s"], "DC_NODE_POWER_W": s.get("dc_power_w"),
             "PCK_POWER_W": s.get("pck_power_w"), "DRAM_POWER_W": s.get("dram_power_w"),
             "GPU_POWER_W": s.get("gpu_power_w"),
             "EARLITE_ESTIMATED": set(filter(None, (s.get("estimated") or "").split(",")))} for s in samples]


def _as_widget(fig):
    """A FigureWidget (live, updatable in place) where the kernel can build one, else the figure itself."""
    try:
        import plotly.graph_objects as go

        return go.FigureWidget(fig)
    except ImportError:
        return fig


class EnergyApp(AppShell):
    """Filters on top, then tabs: steps, timeline, comparison, organization totals."""

    def __init__(self, client: ApiClient | None = None):
        self.status = _css(widgets.HTML(""), "heroes-energy-status")
        self.steps: list[dict] = []
        self.figures: dict = {}
        try:
            self.client = client or ApiClient()
        except ServiceCallError as exc:
            self.client = None
            self.report(exc.detail, True)
            self.widget = widgets.VBox([widgets.HTML("<h3>HEROES energy</h3>"), self.status])
            return
        try:
            from heroes_energy import plots
        except ImportError as exc:  # plotly or heroes_energy missing in this kernel
            plots = None
            self.report(f"charts unavailable ({exc}); tables only", True)
        self.plots = plots
        self.cluster = _css(widgets.Text(description="Cluster", placeholder="any"), "heroes-energy-cluster")
        self.template = _css(widgets.Text(description="Template", placeholder="any"), "heroes-energy-template")
        self.instance = _css(widgets.Text(description="Instance", placeholder="any"), "heroes-energy-instance")
        self.start = _css(widgets.DatePicker(description="From"), "heroes-energy-from")
        self.end = _css(widgets.DatePicker(description="Until"), "heroes-energy-until")
        self.refresh_button = _css(widgets.Button(description="Refresh", icon="refresh"), "heroes-energy-refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.table = Table(STEP_GRID, "heroes-energy-steps", empty="no energy recorded for these filters yet")
        self.export_link = _css(widgets.HTML(""), "heroes-energy-export")
        self.step_pick = _css(widgets.Dropdown(options=[], description="Step"), "heroes-energy-step")
        self.step_pick.observe(lambda _: self.show_timeline(), names="value")
        self.timeline_box = _css(widgets.VBox([]), "heroes-energy-timeline")
        self.per_step_box = _css(widgets.VBox([]), "heroes-energy-per-step")
        self.compare_box = _css(widgets.VBox([]), "heroes-energy-compare")
        self.group_by = _css(widgets.Dropdown(options=["user", "cluster", "template", "instance", "organization"],
                                              value="user", description="Totals by"), "heroes-energy-group-by")
        self.group_by.observe(lambda _: self.show_totals(), names="value")
        self.totals = Table([Column("group", "group", 260), Column("steps", "steps", 80),
                             Column("energy", "energy", 200)], "heroes-energy-totals",
                            empty="no energy in this period")
        filters = widgets.VBox([widgets.HBox([self.cluster, self.template, self.instance]),
                                widgets.HBox([self.start, self.end, self.refresh_button])])
        tabs = widgets.Tab(children=[
            widgets.VBox([self.table.widget, self.export_link, self.per_step_box]),
            widgets.VBox([self.step_pick, self.timeline_box]),
            self.compare_box,
            widgets.VBox([self.group_by, self.totals.widget]),
        ])
        for i, title in enumerate(["Steps", "Power timeline", "Clusters & templates", "Totals"]):
            tabs.set_title(i, title)
        self.tabs = tabs
        self.widget = _css(widgets.VBox([widgets.HTML("<p>Hatched bars, dashed lines and "
                                                      "<b>(estimated)</b> mark estimated values.</p>"),
                                         filters, self.status, tabs]), "heroes-energy-app")
        self.refresh()

    # --- data -------------------------------------------------------------------------------------------
    def filters(self) -> dict:
        def day(d: date | None, end: bool = False):
            if d is None:
                return None
            moment = datetime.combine(d, time.max if end else time.min, tzinfo=timezone.utc)
            return moment.isoformat()

        return {"cluster": self.cluster.value.strip(), "template": self.template.value.strip(),
                "instance_id": self.instance.value.strip(), "start": day(self.start.value),
                "end": day(self.end.value, end=True)}

    def refresh(self) -> None:
        try:
            self.steps = self.client.energy_steps(**self.filters())
        except ServiceCallError as exc:
            self.report(exc.detail, True)
            return
        self.table.update(step_rows(self.steps))
        data = base64.b64encode(steps_csv(self.steps).encode()).decode()
        self.export_link.value = (f"<a href='data:text/csv;base64,{data}' download='heroes-energy.csv'>"
                                  f"Export {len(self.steps)} step(s) to CSV</a>")
        self.step_pick.options = [(step_label(s) + (" (estimated)" if s["estimated"] else ""),
                                   (s.get("cluster") or "", s["job_id"], s["step_id"])) for s in self.steps]
        self.show_per_step()
        self.show_comparison()
        self.show_totals()
        self.report(f"{len(self.steps)} step(s), {sum(s['energy_kwh'] for s in self.steps):.4f} kWh in all")

    # --- views ------------------------------------------------------------------------------------------
    def show_per_step(self) -> None:
        if not self.plots or not self.steps:
            self.per_step_box.children = []
            return
        fig = self.plots.energy_per_step(_summaries(self.steps), label=lambda s: s.label)
        self.figures["per_step"] = _as_widget(fig)
        self.per_step_box.children = [_figure_widget(self.figures["per_step"])]

    def show_comparison(self) -> None:
        if not self.plots or not self.steps:
            self.compare_box.children = [widgets.HTML("<i>nothing to compare yet</i>")]
            return
        fig = self.plots.cluster_comparison(_summaries(self.steps), cluster_of=lambda s: s.cluster,
                                            title="Mean energy per step: templates across clusters")
        self.figures["compare"] = _as_widget(fig)
        self.compare_box.children = [_figure_widget(self.figures["compare"])]

    def show_timeline(self) -> None:
        picked = self.step_pick.value
        if not picked:
            self.timeline_box.children = []
            return
        cluster, job_id, step_id = picked
        try:
            samples = self.client.energy_samples(job_id, step_id, cluster)
        except ServiceCallError as exc:
            self.report(exc.detail, True)
            return
        if not samples:
            self.timeline_box.children = [widgets.HTML("<i>no per-second samples for this step</i>")]
            return
        nodes = sorted({s["node"] for s in samples})
        first = [s for s in samples if s["node"] == nodes[0]]
        if not self.plots:
            self.timeline_box.children = [widgets.HTML(f"{len(first)} samples (charts unavailable)")]
            return
        fig = self.plots.power_timeline(timeline_samples(first), title=f"Power of {job_id}.{step_id} on {nodes[0]}")
        self.figures["timeline"] = _as_widget(fig)
        self.timeline_box.children = [_figure_widget(self.figures["timeline"])]

    def show_totals(self) -> None:
        f = self.filters()
        try:
            groups = self.client.energy_summary(self.group_by.value, **f)
        except ServiceCallError as exc:
            self.report(exc.detail, True)
            return
        self.totals.update(total_rows(groups))
