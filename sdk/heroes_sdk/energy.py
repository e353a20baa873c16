"""Energy figures and tables for notebooks (plotly and pandas, imported only when asked for).

Why its own small figure rather than the Energy app's: the SDK must work on a laptop where the gateway's
packages are not installed. Estimated values (no readable counter on the node) are drawn hatched and
named so in the legend, never passed off as measured.
"""
from __future__ import annotations

from typing import Iterable

from .models import EnergyRecord


def records_dataframe(records: Iterable[EnergyRecord]):
    """Energy records as a pandas DataFrame (one row per step; joules, kWh, seconds, watts)."""
    import pandas as pd

    columns = ["cluster", "job_id", "step_id", "job_name", "instance_id", "template", "username", "nodes",
               "time_s", "energy_j", "energy_kwh", "dc_power_w", "estimated"]
    return pd.DataFrame([{c: getattr(r, c) for c in columns} for r in records], columns=columns)


def _step_names(instance) -> dict[str, str]:
    """Slurm job id -> the template's step name (the records carry job ids only)."""
    return {str(s.job_id): s.name for s in instance.steps if s.job_id}


def instance_figure(instance, records: list[EnergyRecord], client=None):
    """Bars of each step's energy and, where per-second samples exist, each step's power over time."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = _step_names(instance)
    label = [names.get(str(r.job_id), f"job {r.job_id}") for r in records]
    samples = {}
    if client is not None:
        for r, name in zip(records, label):
            rows = client.energy_samples(r.job_id, r.step_id, r.cluster)
            if rows:
                samples[name] = rows
    fig = make_subplots(rows=1, cols=2 if samples else 1, column_widths=[0.4, 0.6] if samples else None,
                        subplot_titles=["Energy per step (J)"] + (["Power over time (W)"] if samples else []))
    fig.add_trace(go.Bar(x=label, y=[r.energy_j for r in records], name="energy (J)",
                         marker_pattern_shape=["/" if r.estimated else "" for r in records],
                         hovertext=[("estimated" if r.estimated else "measured") + f", {r.time_s or 0:.1f} s, "
                                    f"{r.nodes} node(s)" for r in records]), row=1, col=1)
    for name, rows in samples.items():
        estimated = any(s.get("estimated") for s in rows)
        fig.add_trace(go.Scatter(x=[s["elapsed_s"] for s in rows], y=[s.get("dc_power_w") for s in rows],
                                 mode="lines+markers", name=f"{name} ({'estimated' if estimated else 'measured'})"),
                      row=1, col=2)
    total = sum(r.energy_j for r in records)
    title = f"Energy of {instance.template_name} {instance.id[:8]} on {instance.cluster}: {total:.1f} J"
    if any(r.estimated for r in records):
        title += " (hatched: estimated)"
    if not records:
        title += " — no energy records (its steps were not measured)"
    fig.update_layout(title=title, height=380, showlegend=bool(samples))
    return fig


def compare_figure(decisions: dict):
    """Predicted run time, energy and cost per cluster, one bar group per decision (e.g. per policy)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=["run time (s)", "energy (kWh)", "cost"])
    for label, decision in decisions.items():
        clusters = [c.cluster for c in decision.candidates]
        for col, values in enumerate(([c.run_s for c in decision.candidates],
                                      [c.energy_kwh for c in decision.candidates],
                                      [c.cost for c in decision.candidates]), start=1):
            fig.add_trace(go.Bar(x=clusters, y=values, name=str(label), legendgroup=str(label),
                                 showlegend=col == 1), row=1, col=col)
    fig.update_layout(barmode="group", height=360, title="Clusters compared by the decision module")
    return fig
