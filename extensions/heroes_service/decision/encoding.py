"""The organization's history encoded for the decision models: strings as stable codes, the history in the
SWF shape the shared features expect, each template step's runs as aligned arrays, and the feature rows of the
memory and power models."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from . import service_history as sh
from .history import Trace
from .trees import FlatForest

USER_RECENT = 5              # a user's last runs of a step that describe their current habit


@dataclass
class StepRuns:
    """Finished runs of one ``template/step``: arrays aligned with ``cluster``."""

    cluster: list[str]
    log_run: np.ndarray
    nodes: np.ndarray
    cpus: np.ndarray
    power_per_node: np.ndarray   # measured energy / run / nodes (W), NaN without energy records
    cpi: np.ndarray
    mem_gbs_per_node: np.ndarray
    params: list[dict]
    req_time: np.ndarray
    used_mem: np.ndarray | None = None    # peak memory per node (MiB), NaN where accounting had no sample
    user_last: np.ndarray | None = None   # each run's user's previous run of this step (log s), NaN if none
    user_med: np.ndarray | None = None    # median of that user's last USER_RECENT runs before it
    recent: dict | None = None            # user -> their last USER_RECENT log runs (for a new estimate)
    state: list[str] | None = None        # each run's final Slurm state (TIMEOUT, OUT_OF_MEMORY, ...)
    model: "StepModel | None" = None

    @property
    def n(self) -> int:
        return len(self.cluster)

    def on(self, cluster: str) -> np.ndarray:
        """Boolean mask of the runs on ``cluster`` (memoised: estimates ask per call)."""
        masks = self.__dict__.setdefault("_masks", {})
        mask = masks.get(cluster)
        if mask is None:
            mask = masks[cluster] = np.array([c == cluster for c in self.cluster], dtype=bool)
        return mask

    def log_speed(self, speeds: dict[str, float]) -> np.ndarray:
        """log relative speed of each run's cluster (unknown clusters count as 1)."""
        cached = self.__dict__.get("_log_speed")
        if cached is None or cached[0] is not speeds:
            cached = self.__dict__["_log_speed"] = (speeds, np.array([math.log(speeds.get(c, 1.0) or 1.0)
                                                                      for c in self.cluster]))
        return cached[1]


@dataclass
class StepModel:
    """log run time of one template step from its numeric parameters, resources and cluster."""

    names: list[str]
    clusters: list[str]
    forest: FlatForest
    margin: float                 # conformal upper margin (log units)
    n: int

    def row(self, params: dict, cluster: str, cpus: float, nodes: float, req_time: float,
            user_last: float = math.nan, user_med: float = math.nan) -> np.ndarray:
        x = [as_number(params.get(name)) for name in self.names]
        x += [float(self.clusters.index(cluster)) if cluster in self.clusters else math.nan,
              _log(cpus), _log(nodes), _log(req_time), user_last, user_med]
        return np.array(x, dtype=np.float64)


def as_number(value) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return math.nan


def _log(x: float) -> float:
    return math.log(x) if x == x and x > 0 else math.nan


class Codes:
    """Stable small integers for strings (users, clusters, template steps) as the SWF-shaped features want."""

    def __init__(self):
        self.table: dict[str, float] = {}

    def __call__(self, name: str) -> float:
        if not name:
            return math.nan
        code = self.table.get(name)
        if code is None:
            code = self.table[name] = float(len(self.table) + 1)
        return code

    def get(self, name: str) -> float:
        return self.table.get(name, math.nan) if name else math.nan


_STATUS = {"COMPLETED": 1.0, "FAILED": 0.0, "CANCELLED": 5.0, "TIMEOUT": 0.0, "OUT_OF_MEMORY": 0.0}


def as_trace(frame: sh.HistoryFrame, users: Codes, clusters: Codes, templates: Codes) -> Trace:
    """The history in the SWF shape the shared features expect (codes for the strings; NaN = unknown)."""
    n = len(frame)
    nan = np.full(n, np.nan)
    submit, finish, run = frame["submit"], frame["finish"], frame["run"]
    cols = {
        "job_id": np.arange(1, n + 1, dtype=np.float64), "submit": submit,
        "wait": np.maximum(finish - run - submit, 0.0), "run": run, "alloc_procs": frame["cpus"],
        "avg_cpu": nan, "used_mem": frame["used_mem"], "req_procs": frame["cpus"], "req_time": frame["req_time"],
        "req_mem": frame["req_mem"], "status": np.array([_STATUS.get(s, np.nan) for s in frame.state]),
        "user": np.array([users(u) for u in frame.user]), "group": nan.copy(),
        "executable": np.array([templates(t) for t in frame.template]),
        "queue": np.array([clusters(c) for c in frame.cluster]), "partition": nan.copy(), "preceding": nan.copy(),
        "think_time": nan.copy(),
    }
    order = np.argsort(submit, kind="stable")
    return Trace({k: np.asarray(v, dtype=np.float64)[order] for k, v in cols.items()})


def energy_row(cluster, template, user, cpus, nodes) -> np.ndarray:
    nodes = nodes if nodes == nodes and nodes > 0 else 1.0
    return np.array([cluster, template, user, _log(cpus / nodes), _log(nodes)])


def memory_row(req_mem, cpus, nodes, req_time, cluster, template, user) -> np.ndarray:
    return np.array([_log(req_mem), _log(cpus), _log(nodes), _log(req_time), cluster, template, user])


def measured_by_cluster(frame: sh.HistoryFrame) -> dict[str, int]:
    out: dict[str, int] = {}
    ok = (frame["energy_j"] > 0) & (frame["run"] > 0)
    for i in np.flatnonzero(ok):
        out[frame.cluster[i]] = out.get(frame.cluster[i], 0) + 1
    return out


def step_runs(frame: sh.HistoryFrame) -> dict[str, StepRuns]:
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(frame.template):
        if t:
            groups.setdefault(t, []).append(i)
    out = {}
    for name, idx in groups.items():
        ix = np.array(idx)
        run = frame["run"][ix]
        nodes = np.where(frame["nodes"][ix] > 0, frame["nodes"][ix], 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            power = np.where(run > 0, frame["energy_j"][ix] / np.maximum(run, 1.0) / nodes, np.nan)
        log_run = np.log(np.maximum(run, 1.0))
        user_last, user_med, recent = _user_history([frame.user[i] for i in idx], log_run)
        out[name] = StepRuns(
            cluster=[frame.cluster[i] for i in idx], log_run=log_run, nodes=nodes,
            cpus=frame["cpus"][ix], power_per_node=power, cpi=frame["cpi"][ix],
            mem_gbs_per_node=frame["mem_gbs"][ix] / nodes, params=[frame.params[i] or {} for i in idx],
            req_time=frame["req_time"][ix], used_mem=frame["used_mem"][ix], user_last=user_last, user_med=user_med, recent=recent,
            state=[frame.state[i] for i in idx])
    return out


def _user_history(users: list[str], log_run: np.ndarray):
    """Per run (in finish order): the same user's previous run and recent median, from earlier runs only."""
    recent: dict[str, deque] = {}
    last = np.full(len(users), np.nan)
    med = np.full(len(users), np.nan)
    for i, name in enumerate(users):
        mine = recent.setdefault(name, deque(maxlen=USER_RECENT))
        if mine:
            last[i], med[i] = mine[-1], float(np.median(mine))
        mine.append(float(log_run[i]))
    return last, med, recent


def user_features(runs: StepRuns, user: str) -> tuple[float, float]:
    """(last, median of recent) log run of ``user`` for this step; NaN when they never ran it."""
    mine = runs.recent.get(user) if runs.recent else None
    if not mine:
        return math.nan, math.nan
    return mine[-1], float(np.median(mine))
