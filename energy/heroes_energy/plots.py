"""Plotly figure builders for the Energy app: power timeline, energy per step, clusters compared.

Estimated values are always visibly different: dashed lines and "(estimated)" in the legend for
timelines, hatched bars and an "estimated" legend entry for bar charts. Figures are plain
``go.Figure`` objects; the Voila app can wrap them in ``go.FigureWidget``.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import plotly.graph_objects as go

from . import columns as C

ESTIMATED_PATTERN = "/"
_SERIES = (
    ("DC_NODE_POWER_W", "DC node"),
    ("PCK_POWER_W", "CPU package"),
    ("DRAM_POWER_W", "DRAM"),
    ("GPU_POWER_W", "GPUs"),
)


def _split_measured(xs: Sequence[float], ys: Sequence[float | None], estimated: Sequence[bool]):
    """Two y-series with gaps: measured points and estimated points (joined at the boundary)."""
    measured = [y if not e else None for y, e in zip(ys, estimated)]
    guessed = [y if e else None for y, e in zip(ys, estimated)]
    # bridge the segments so a switch between measured and estimated leaves no visual hole
    for i in range(1, len(ys)):
        if estimated[i] != estimated[i - 1] and ys[i - 1] is not None:
            if estimated[i]:
                guessed[i - 1] = ys[i - 1]
            else:
                measured[i - 1] = ys[i - 1] if measured[i - 1] is None else measured[i - 1]
    return measured, guessed


def power_timeline(samples: list[dict], title: str = "Power of the step") -> go.Figure:
    """Power over time from :func:`heroes_energy.reader.read_samples` rows (x = seconds since start)."""
    fig = go.Figure()
    xs = [s["ELAPSED_SEC"] for s in samples]
    for column, label in _SERIES:
        ys = [s.get(column) for s in samples]
        if all(y is None for y in ys):
            continue
        flags = [column in s.get(C.ESTIMATED_COLUMN, set()) for s in samples]
        measured, guessed = _split_measured(xs, ys, flags)
        if any(y is not None for y in measured):
            fig.add_trace(go.Scatter(x=xs, y=measured, mode="lines", name=f"{label} (measured)",
                                     line={"dash": "solid"}, legendgroup=column, connectgaps=False))
        if any(y is not None for y in guessed):
            fig.add_trace(go.Scatter(x=xs, y=guessed, mode="lines", name=f"{label} (estimated)",
                                     line={"dash": "dash"}, legendgroup=column, connectgaps=False))
    fig.update_layout(title=title, xaxis_title="time since start (s)", yaxis_title="power (W)",
                      legend_title="dashed = estimated")
    return fig


def _bar_style(estimated: Iterable[bool]) -> dict:
    flags = list(estimated)
    return {"pattern": {"shape": [ESTIMATED_PATTERN if e else "" for e in flags]},
            "opacity": 1.0}


def energy_per_step(summaries: Iterable, label: Callable | None = None,
                    title: str = "Energy per step") -> go.Figure:
    """Energy (kJ) of each step (a :class:`~heroes_energy.reader.StepSummary`), estimated bars hatched."""
    items = list(summaries)
    name = label or (lambda s: f"{s.job_id}.{s.step_id}")
    fig = go.Figure()
    for estimated, legend in ((False, "measured"), (True, "estimated")):
        chosen = [s for s in items if bool(s.estimated) == estimated]
        if not chosen:
            continue
        fig.add_trace(go.Bar(
            x=[name(s) for s in chosen], y=[s.energy_j / 1000.0 for s in chosen], name=legend,
            marker=_bar_style([estimated] * len(chosen)),
            hovertemplate="%{x}: %{y:.1f} kJ" + (" (estimated)" if estimated else "") + "<extra></extra>",
        ))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="energy (kJ)", barmode="group",
                      xaxis={"type": "category"})
    return fig


def cluster_comparison(summaries: Iterable, cluster_of: Callable, group_of: Callable | None = None,
                       title: str = "Energy per step across clusters") -> go.Figure:
    """Mean energy (kJ) per group (default: job name) for each cluster; groups with any estimate hatched."""
    group = group_of or (lambda s: s.job_name)
    table: dict[str, dict[str, list]] = {}
    for s in summaries:
        cell = table.setdefault(cluster_of(s), {}).setdefault(group(s), [])
        cell.append(s)
    fig = go.Figure()
    for cluster in sorted(table):
        groups = sorted(table[cluster])
        means = [sum(s.energy_j for s in table[cluster][g]) / len(table[cluster][g]) / 1000.0 for g in groups]
        flags = [any(s.estimated for s in table[cluster][g]) for g in groups]
        names = [f"{g} (estimated)" if e else g for g, e in zip(groups, flags)]
        fig.add_trace(go.Bar(x=groups, y=means, name=cluster + (" (incl. estimated)" if any(flags) else ""),
                             marker=_bar_style(flags), customdata=names,
                             hovertemplate="%{customdata}: %{y:.1f} kJ<extra>" + cluster + "</extra>"))
    fig.update_layout(title=title, xaxis_title="application", yaxis_title="mean energy per step (kJ)",
                      barmode="group", legend_title="hatched = estimated")
    return fig
