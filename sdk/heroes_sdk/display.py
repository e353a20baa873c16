"""Rich display in Jupyter: the HTML a notebook shows for instances, decisions, templates and clusters.

Every value that came from the service is escaped (a template title or an instance label is user text),
and the markup is plain tables with inline styles, so it renders the same in JupyterLab, Voila and nbconvert.
"""
from __future__ import annotations

from html import escape

STATE_COLORS = {"COMPLETED": "#1a7f37", "FAILED": "#cf222e", "CANCELLED": "#6e7781", "RUNNING": "#0969da",
                "PENDING": "#9a6700", "SUBMITTED": "#9a6700", "STAGING_IN": "#8250df", "STAGING_OUT": "#8250df"}
TABLE = 'style="border-collapse:collapse;font-size:13px"'
CELL = 'style="border:1px solid #d0d7de;padding:2px 8px;text-align:left"'


def badge(state: str) -> str:
    color = STATE_COLORS.get(state, "#57606a")
    return (f'<span style="background:{color};color:white;border-radius:8px;padding:1px 8px;'
            f'font-size:12px">{escape(state)}</span>')


def table(header: list[str], rows: list[list[str]]) -> str:
    """A table whose cells are already HTML (escape values before passing them)."""
    head = "".join(f"<th {CELL}>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td {CELL}>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table {TABLE}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return escape(str(value))


def instance_html(inst) -> str:
    title = escape(inst.name or inst.template_name)
    head = (f"<div><b>{title}</b> {badge(inst.state)} <code>{escape(inst.id)}</code> — "
            f"{escape(inst.template_name)} v{inst.template_version} on <b>{escape(inst.cluster)}</b>"
            + (f"<br><i>{escape(inst.reason)}</i>" if inst.reason else "") + "</div>")
    rows = [[escape(s.name), badge(s.state), escape(s.job_id or ""), escape(s.nodes),
             _num(s.exit_code), _num(s.max_rss_mb)] for s in inst.steps]
    steps = table(["step", "state", "job", "nodes", "exit", "peak MiB"], rows) if rows else ""
    outputs = ""
    if inst.outputs:
        items = "".join(f"<li><code>{escape(o.get('key', ''))}</code> ({_num(o.get('size'))} B)</li>"
                        for o in inst.outputs[:20])
        more = f"<li>… {len(inst.outputs) - 20} more</li>" if len(inst.outputs) > 20 else ""
        outputs = f"<details><summary>{len(inst.outputs)} output(s)</summary><ul>{items}{more}</ul></details>"
    return head + steps + outputs


def decision_html(decision) -> str:
    chosen = escape(decision.choice) if decision.choice else "none"
    head = (f"<div>Policy <b>{escape(decision.policy)}</b>: run on <b>{chosen}</b>. "
            f"{escape(decision.reason)}</div>")
    rows = []
    for c in decision.candidates:
        mark = "✔" if c.cluster == decision.choice else ("" if c.eligible else "✘")
        cost = f"{_num(c.cost)} {escape(c.currency)}" if c.cost is not None else "—"
        rows.append([mark, escape(c.cluster), _num(c.wait_s), _num(c.run_s), _num(c.finish_s),
                     _num(c.energy_kwh), cost, _num(c.confidence, 2), escape(c.reason)])
    body = table(["", "cluster", "wait s", "run s", "finish s", "energy kWh", "cost", "confidence", "why"], rows)
    sizing = ""
    r = decision.rightsizing
    if r is not None:
        warn = "".join(f"<li>{escape(w)}</li>" for w in r.warnings)
        sizing = (f"<div>Right-sizing ({escape(r.basis)}, {r.history_jobs} run(s)): time limit "
                  f"{r.time_limit_s} s, memory {r.memory_mb} MiB, {r.cores} core(s)"
                  + (f"<ul>{warn}</ul>" if warn else "") + "</div>")
    return head + body + sizing


def template_html(template) -> str:
    head = (f"<div><b>{escape(template.title or template.name)}</b> <code>{escape(template.name)}</code> "
            f"v{template.version}<br>{escape(template.description)}</div>")
    if not template.parameters:
        return head
    rows = []
    for p in template.parameters:
        bounds = ", ".join(x for x in (f"min {p.min:g}" if p.min is not None else "",
                                       f"max {p.max:g}" if p.max is not None else "",
                                       "one of " + ", ".join(map(str, p.choices)) if p.choices else "") if x)
        rows.append([f"<code>{escape(p.name)}</code>", escape(p.type), escape(p.label),
                     "yes" if p.required else escape(repr(p.default)), escape(bounds)])
    return head + table(["parameter", "type", "label", "required / default", "allowed"], rows)


def cluster_html(cluster) -> str:
    price = cluster.price
    rate = (f"{price.instance_type} ({price.catalog})" if price.kind == "cloud" else
            f"{price.per_core_hour:g}/core-h, {price.per_node_hour:g}/node-h, {price.per_kwh:g}/kWh")
    head = (f"<div><b>{escape(cluster.name)}</b> — {escape(cluster.description)} "
            f"(Slurm {escape(cluster.slurm_version)}, {escape(price.kind)}, {escape(price.currency)} "
            f"{escape(rate)})</div>")
    rows = [[escape(p.name) + (" (default)" if p.default else ""), _num(p.nodes), _num(p.cpus_per_node),
             _num(p.memory_mb), escape(p.time_limit), escape(p.gres)] for p in cluster.partitions]
    return head + table(["partition", "nodes", "cpus/node", "MiB/node", "time limit", "gres"], rows)
