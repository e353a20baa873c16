"""The history the service's estimates learn from: imported traces plus the gateway's own finished steps.

Two sources, one shape (:class:`HistoryFrame`, numpy columns, NaN = unknown):

* ``decision_history`` rows: jobs imported from SWF traces and ``sacct`` dumps by an org admin. They belong
  to the importing organization only (tenant isolation: every query below filters on the organization).
* finished workflow steps of the organization's instances: requested time, memory and cores from the step's
  rendered sbatch options (or, if it has none, its template's resources for the instance's parameters),
  used time from ``started_at``/``ended_at``, peak memory from the accounting's MaxRSS (recorded when the
  instance ends), plus cluster, template, step, parameters and user.

Either kind is joined with the energy records of the same ``(cluster, Slurm job id)``: energy (J), CPI and
memory bandwidth (GB/s). A job's records can hold the batch step and its srun steps, which overlap in time,
so a job's energy is its largest step's (summed over that step's nodes), not the sum of every step.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import DateTime, Float, Integer, String, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..energy.models import EnergyRecord
from ..store import Base
from ..workflows import models as wf
from ..workflows.templates import Template, TemplateError

#: steps whose run time is a real measurement (a step cancelled before it started has none)
FINISHED_STEP_STATES = ("COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "PREEMPTED")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class HistoryJob(Base):
    """One imported finished job (migration 0006_decision_history)."""

    __tablename__ = "decision_history"
    __table_args__ = (UniqueConstraint("organization", "cluster", "source", "job_id", "submit",
                                       name="uq_decision_history_job"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization: Mapped[str] = mapped_column(String(63), nullable=False)
    batch: Mapped[str] = mapped_column(String(32), nullable=False)
    source: Mapped[str] = mapped_column(String(8), nullable=False)
    cluster: Mapped[str] = mapped_column(String(63), nullable=False)
    job_id: Mapped[str] = mapped_column(String(64), nullable=False)
    username: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    partition: Mapped[str] = mapped_column(String(63), nullable=False, default="")
    state: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    submit: Mapped[float] = mapped_column(Float, nullable=False)
    wait_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    run_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    req_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    req_mem_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    used_mem_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    cores: Mapped[float | None] = mapped_column(Float, nullable=True)
    nodes: Mapped[float | None] = mapped_column(Float, nullable=True)
    energy_j: Mapped[float | None] = mapped_column(Float, nullable=True)
    imported_by: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


# --- the frame ----------------------------------------------------------------------------------------
COLUMNS = ("submit", "finish", "run", "req_time", "req_mem", "used_mem", "cpus", "cores_per_task", "nodes",
           "energy_j", "cpi", "mem_gbs")


@dataclass
class HistoryFrame:
    """Finished jobs of one organization, sorted by finish time. Numeric columns are float64 (NaN unknown);
    ``user``, ``cluster``, ``template`` (``name/step`` for the gateway's steps, "" for imports) and ``source``
    are lists of strings; ``params`` holds each step's parameter values (None for imports)."""

    num: dict[str, np.ndarray]
    user: list[str] = field(default_factory=list)
    cluster: list[str] = field(default_factory=list)
    template: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    state: list[str] = field(default_factory=list)
    params: list[dict | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.user)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.num[name]


@dataclass
class HistoryCounts:
    """What the staleness check compares (cheap COUNT queries)."""

    imported: int
    steps: int
    energy: int

    @property
    def total(self) -> int:
        return self.imported + self.steps


def counts(session: Session, organization: str) -> HistoryCounts:
    imported = session.scalar(select(func.count()).select_from(HistoryJob)
                              .where(HistoryJob.organization == organization)) or 0
    steps = session.scalar(_finished_steps_query(organization).with_only_columns(func.count())) or 0
    energy = session.scalar(select(func.count()).select_from(EnergyRecord)
                            .where(EnergyRecord.organization == organization)) or 0
    return HistoryCounts(int(imported), int(steps), int(energy))


def _finished_steps_query(organization: str):
    return (select(wf.WorkflowStep, wf.WorkflowInstance)
            .join(wf.WorkflowInstance, wf.WorkflowStep.instance_id == wf.WorkflowInstance.id)
            .where(wf.WorkflowInstance.organization == organization,
                   wf.WorkflowStep.state.in_(FINISHED_STEP_STATES),
                   wf.WorkflowStep.started_at.is_not(None), wf.WorkflowStep.ended_at.is_not(None)))


def _epoch(value: datetime | None) -> float:
    if value is None:
        return math.nan
    if value.tzinfo is None:  # SQLite returns naive datetimes; the service writes UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def _energy_by_job(session: Session, organization: str) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(cluster, job id) -> (energy J, mean CPI, GB/s per node) of the job's largest step."""
    r = EnergyRecord
    query = (select(r.cluster, r.job_id, r.step_id, func.sum(r.energy_j), func.avg(r.cpi), func.avg(r.mem_gbs))
             .where(r.organization == organization).group_by(r.cluster, r.job_id, r.step_id))
    out: dict[tuple[str, str], tuple[float, float, float]] = {}
    for cluster, job_id, _step, energy, cpi, gbs in session.execute(query):
        key = (cluster or "", str(job_id))
        energy = float(energy) if energy is not None else math.nan
        current = out.get(key)
        if current is None or (energy == energy and not energy <= current[0]):
            out[key] = (energy, float(cpi) if cpi is not None else math.nan,
                        float(gbs) if gbs is not None else math.nan)
    return out


_OPTION = re.compile(r"^--(time|mem|nodes|ntasks|cpus-per-task)=(.+)$")


def requested_from_options(options: list[str]) -> dict[str, float]:
    """Requested resources from a step's rendered sbatch options (``--time`` minutes, ``--mem`` ``<n>M``)."""
    out: dict[str, float] = {}
    for option in options or []:
        match = _OPTION.match(str(option))
        if not match:
            continue
        name, value = match.groups()
        try:
            if name == "time":
                out["req_time"] = float(value) * 60
            elif name == "mem":
                out["req_mem"] = float(value.rstrip("M"))
            else:
                out[{"nodes": "nodes", "ntasks": "tasks", "cpus-per-task": "cpus_per_task"}[name]] = float(value)
        except ValueError:
            continue
    return out


def _requested_from_template(session: Session, cache: dict, inst: wf.WorkflowInstance, step_name: str) -> dict:
    """The step's resources as its template version resolves them for the instance's parameters."""
    if inst.template_id not in cache:
        row = session.get(wf.WorkflowTemplate, inst.template_id)
        try:
            cache[inst.template_id] = Template.model_validate(row.spec) if row is not None else None
        except ValueError:
            cache[inst.template_id] = None
    template = cache[inst.template_id]
    step = next((s for s in template.steps if s.name == step_name), None) if template else None
    if step is None:
        return {}
    try:
        res = step.resources.resolved(inst.parameters or {})
    except (TemplateError, KeyError, ValueError):
        return {}
    return {"req_time": res["time_minutes"] * 60.0, "req_mem": float(res["memory_mb"]), "nodes": float(res["nodes"]),
            "tasks": float(res["tasks"]), "cpus_per_task": float(res["cpus_per_task"])}


def load(session: Session, organization: str) -> HistoryFrame:
    """Every finished job of ``organization`` (imports and the gateway's steps), oldest finish first.

    A gateway step that also appears in an imported ``sacct`` dump of the same cluster (same Slurm job id) is
    counted once, as the step; the dump fills in the peak memory (MaxRSS) and energy the step lacks (the
    service records a step's peak when its instance ends, energy only for ``energy: true`` steps).
    """
    energy = _energy_by_job(session, organization)
    steps = _service_rows(session, organization, energy)
    by_job = {(r[13], r[-1]): r for r in steps if r[-1]}
    rows: list[list] = []
    h = HistoryJob
    query = (select(h.submit, h.wait_s, h.run_s, h.req_time_s, h.req_mem_mb, h.used_mem_mb, h.cores, h.nodes,
                    h.energy_j, h.username, h.cluster, h.source, h.state, h.job_id)
             .where(h.organization == organization))
    for (submit, wait, run, req_time, req_mem, used_mem, cores, nodes, energy_j, user, cluster, source, state,
         job_id) in session.execute(query):
        if run is None:
            continue
        step = by_job.get((cluster, job_id)) if source == "sacct" else None
        if step is not None:  # the gateway's own job: enrich the step instead of counting it twice
            if used_mem is not None and not step[5] == step[5]:   # the step's own measurement first
                step[5] = used_mem
            if energy_j is not None and not step[9] == step[9]:
                step[9] = energy_j
            continue
        measured = energy.get((cluster, job_id)) if source == "sacct" else None
        e, cpi, gbs = measured if measured else (energy_j if energy_j is not None else math.nan, math.nan, math.nan)
        finish = submit + (wait or 0.0) + run
        rows.append([submit, finish, run, req_time, req_mem, used_mem, cores, math.nan, nodes, e, cpi, gbs,
                     user, cluster, "", source, state, None, ""])
    rows += steps
    rows.sort(key=lambda r: r[1])
    num = {name: np.array([float("nan") if r[i] is None else float(r[i]) for r in rows], dtype=np.float64)
           for i, name in enumerate(COLUMNS)}
    n = len(COLUMNS)
    return HistoryFrame(num, user=[r[n] or "" for r in rows], cluster=[r[n + 1] or "" for r in rows],
                        template=[r[n + 2] for r in rows], source=[r[n + 3] for r in rows],
                        state=[r[n + 4] or "" for r in rows], params=[r[n + 5] for r in rows])


def _service_rows(session: Session, organization: str, energy: dict) -> list[list]:
    """The organization's finished steps as frame rows (COLUMNS, then user, cluster, template, source, state,
    parameters, Slurm job id)."""
    rows: list[list] = []
    templates: dict = {}
    for step, inst in session.execute(_finished_steps_query(organization)):
        start, end = _epoch(step.started_at), _epoch(step.ended_at)
        if not end >= start:
            continue
        req = requested_from_options(step.options) or _requested_from_template(session, templates, inst, step.name)
        tasks, per_task = req.get("tasks", 1.0), req.get("cpus_per_task", 1.0)
        measured = energy.get((inst.cluster_name, str(step.job_id))) if step.job_id else None
        e, cpi, gbs = measured if measured else (math.nan, math.nan, math.nan)
        submit = _epoch(step.submitted_at) if step.submitted_at else start
        rows.append([min(submit, start), end, end - start, req.get("req_time", math.nan),
                     req.get("req_mem", math.nan), _peak_per_node(step.max_rss_mb), tasks * per_task, per_task, req.get("nodes", math.nan),
                     e, cpi, gbs, inst.username, inst.cluster_name, f"{inst.template_name}/{step.name}", "service",
                     step.state, dict(inst.parameters or {}), str(step.job_id or "")])
    return rows


def _peak_per_node(max_rss_mb: float | None) -> float:
    """A step's peak memory as the history stores it (per node, MiB; NaN unknown). HEROES steps run one task
    per node, so the largest task's MaxRSS is the node's."""
    return float(max_rss_mb) if max_rss_mb else math.nan


def organizations_with_history(session: Session) -> list[str]:
    """Organizations that imported history or ran a workflow (what a service start warms up)."""
    imported = set(session.scalars(select(HistoryJob.organization).distinct()))
    ran = set(session.scalars(select(wf.WorkflowInstance.organization).distinct()))
    return sorted(imported | ran)


# --- import and summary ------------------------------------------------------------------------------------
def existing_keys(session: Session, organization: str, cluster: str, source: str) -> set[tuple[str, float]]:
    """(job id, submit) of the jobs already imported for this cluster and format (a file sent twice adds nothing)."""
    h = HistoryJob
    return {(job_id, float(submit)) for job_id, submit in session.execute(
        select(h.job_id, h.submit).where(h.organization == organization, h.cluster == cluster, h.source == source))}


def summary(session: Session, organization: str, username: str | None) -> dict:
    """Counts per cluster and per template of the history the caller may see.

    Imported jobs belong to the organization, so every member sees their counts; the gateway's own steps are
    counted for their owner only, unless ``username`` is None (an org admin: the whole organization).
    """
    h = HistoryJob
    by_cluster: dict[str, dict] = {}
    imported = session.execute(select(h.cluster, h.source, func.count(), func.min(h.submit), func.max(h.submit),
                                      func.count(h.energy_j))
                               .where(h.organization == organization).group_by(h.cluster, h.source))
    for cluster, source, n, first, last, with_energy in imported:
        entry = by_cluster.setdefault(cluster, {"cluster": cluster, "jobs": 0, "imported": {}, "service_steps": 0})
        entry["jobs"] += n
        entry["imported"][source] = {"jobs": n, "with_energy": with_energy,
                                     "first_submit": _iso(first), "last_submit": _iso(last)}
    query = _finished_steps_query(organization).with_only_columns(
        wf.WorkflowInstance.cluster_name, wf.WorkflowInstance.template_name, wf.WorkflowStep.name, func.count()
    ).group_by(wf.WorkflowInstance.cluster_name, wf.WorkflowInstance.template_name, wf.WorkflowStep.name)
    if username is not None:
        query = query.where(wf.WorkflowInstance.username == username)
    by_template: dict[str, dict] = {}
    for cluster, template, step, n in session.execute(query):
        entry = by_cluster.setdefault(cluster, {"cluster": cluster, "jobs": 0, "imported": {}, "service_steps": 0})
        entry["jobs"] += n
        entry["service_steps"] += n
        t = by_template.setdefault(template, {"template": template, "jobs": 0, "steps": {}, "clusters": {}})
        t["jobs"] += n
        t["steps"][step] = t["steps"].get(step, 0) + n
        t["clusters"][cluster] = t["clusters"].get(cluster, 0) + n
    clusters = sorted(by_cluster.values(), key=lambda e: e["cluster"])
    return {"organization": organization, "jobs": sum(e["jobs"] for e in clusters), "clusters": clusters,
            "templates": sorted(by_template.values(), key=lambda e: e["template"])}


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat() if epoch is not None else None
