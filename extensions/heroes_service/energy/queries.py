"""Queries of stored step energy, limited to the rows the caller may see (:func:`.ownership.visible`).

Queries aggregate the node rows of a step by EAR's rules (power, GFLOPS, energy summed over nodes; time,
CPI, frequency averaged), in SQL."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ..auth import Principal
from ..errors import Forbidden, Invalid
from .models import EnergyRecord, EnergySample
from .ownership import visible

GROUPS = {"step", "instance", "user", "organization", "cluster", "template"}


@dataclass
class Filters:
    instance_id: str = ""
    user: str = ""
    organization: str = ""
    cluster: str = ""
    template: str = ""
    job_id: int | None = None
    step_id: int | None = None
    start: float | None = None
    end: float | None = None


def _conditions(principal: Principal, f: Filters) -> list:
    if f.user and f.user != principal.username and not (principal.is_org_admin or principal.is_platform_admin):
        raise Forbidden("you may see only your own energy (org admins see their organization's)")
    if f.organization and f.organization != principal.organization and not principal.is_platform_admin:
        raise Forbidden("you may see only your own organization's energy")
    m = EnergyRecord
    conds = [visible(principal)]
    for column, value in ((m.instance_id, f.instance_id), (m.username, f.user), (m.organization, f.organization),
                          (m.cluster, f.cluster), (m.template, f.template)):
        if value:
            conds.append(column == value)
    if f.job_id is not None:
        conds.append(m.job_id == f.job_id)
    if f.step_id is not None:
        conds.append(m.step_id == f.step_id)
    if f.start is not None:
        conds.append(m.start_time >= f.start)
    if f.end is not None:
        conds.append(m.start_time < f.end)
    return conds


def _measures():
    """EAR's aggregation of a step's node rows (power, GFLOPS, energy summed; time, CPI, frequency averaged)."""
    m = EnergyRecord
    return [
        func.count().label("nodes"), func.min(m.start_time).label("start_time"), func.max(m.end_time).label("end_time"),
        func.avg(m.time_s).label("time_s"), func.sum(m.dc_power_w).label("dc_power_w"),
        func.sum(m.pck_power_w).label("pck_power_w"), func.sum(m.dram_power_w).label("dram_power_w"),
        func.sum(m.gpu_power_w).label("gpu_power_w"), func.max(m.max_power_w).label("max_node_power_w"),
        func.coalesce(func.sum(m.energy_j), 0.0).label("energy_j"),
        (func.coalesce(func.sum(m.cpu_gflops), 0.0) + func.coalesce(func.sum(m.gpu_gflops), 0.0)).label("gflops"),
        func.avg(m.cpi).label("cpi"), func.avg(m.avg_cpufreq_khz).label("avg_cpufreq_khz"),
        func.sum(m.mem_gbs).label("mem_gbs"), func.sum(m.io_mbs).label("io_mbs"),
        func.max(case((m.estimated, 1), else_=0)).label("estimated"),
    ]


def _finish(row: dict) -> dict:
    row["estimated"] = bool(row["estimated"])
    row["energy_kwh"] = row["energy_j"] / 3.6e6
    power = row.get("dc_power_w")
    row["gflops_per_w"] = (row.pop("gflops") / power) if power else None
    return row


def steps(session: Session, principal: Principal, f: Filters, limit: int = 1000) -> list[dict]:
    """One row per step (cluster, job, step, app), newest first."""
    m = EnergyRecord
    keys = [m.organization, m.username, m.cluster, m.instance_id, m.template, m.job_id, m.step_id, m.app_id,
            m.job_name]
    query = (select(*keys, *_measures()).where(*_conditions(principal, f)).group_by(*keys)
             .order_by(func.min(m.start_time).desc(), m.job_id.desc(), m.step_id).limit(limit))
    return [_finish(dict(r._mapping)) for r in session.execute(query)]


def summary(session: Session, principal: Principal, group_by: str, f: Filters) -> list[dict]:
    """Totals per instance, user, organization, cluster, template or step: energy summed over steps."""
    if group_by not in GROUPS:
        raise Invalid(f"group_by must be one of {', '.join(sorted(GROUPS))}", rule="group-by")
    m = EnergyRecord
    column = {"instance": m.instance_id, "user": m.username, "organization": m.organization, "cluster": m.cluster,
              "template": m.template}.get(group_by)
    conds = _conditions(principal, f)
    if column is None:  # step
        return steps(session, principal, f)
    per_step = (select(column.label("group"), m.cluster, m.job_id, m.step_id,
                       func.count().label("nodes"), func.coalesce(func.sum(m.energy_j), 0.0).label("energy_j"),
                       func.min(m.start_time).label("start_time"), func.max(m.end_time).label("end_time"),
                       func.max(case((m.estimated, 1), else_=0)).label("estimated"))
                .where(*conds).group_by(column, m.cluster, m.job_id, m.step_id).subquery())
    p = per_step.c
    query = (select(p.group, func.count().label("steps"), func.sum(p.nodes).label("node_rows"),
                    func.sum(p.energy_j).label("energy_j"), func.min(p.start_time).label("start_time"),
                    func.max(p.end_time).label("end_time"), func.max(p.estimated).label("estimated"))
             .group_by(p.group).order_by(p.group))
    out = []
    for r in session.execute(query):
        row = dict(r._mapping)
        row["estimated"] = bool(row["estimated"])
        row["energy_kwh"] = row["energy_j"] / 3.6e6
        out.append(row)
    return out


def samples(session: Session, principal: Principal, cluster: str, job_id: int, step_id: int) -> list[dict]:
    """Per-second samples of a step the caller may see (every node), in time order."""
    s = EnergySample
    query = (select(s.node, s.elapsed_s, s.dc_power_w, s.pck_power_w, s.dram_power_w, s.gpu_power_w, s.estimated)
             .where(visible(principal, s), s.cluster == cluster, s.job_id == job_id, s.step_id == step_id)
             .order_by(s.node, s.elapsed_s))
    return [dict(r._mapping) for r in session.execute(query)]
