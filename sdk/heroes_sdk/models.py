"""Typed objects for what the API answers: clusters, templates, decisions, data objects, energy records.

Each class is a frozen-by-convention dataclass built by ``from_api`` from the service's JSON; fields the SDK
does not know yet stay available in ``raw`` (so a newer service never breaks an older SDK). Instances live in
:mod:`heroes_sdk.instance`, because they also act (wait, cancel, read outputs).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from . import display

__all__ = ["Me", "Partition", "Price", "Cluster", "Parameter", "Template", "Candidate", "Rightsizing",
           "Decision", "Bucket", "DataObject", "Listing", "EnergyRecord"]


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time of the API (``Z`` accepted) as an aware datetime, None for null."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _pick(cls, data: dict, **overrides) -> dict:
    """The dataclass's own fields out of ``data`` (missing ones get their defaults), plus ``raw``."""
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in data.items() if k in names and k != "raw"}
    values.update(overrides)
    if "raw" in names:
        values["raw"] = data
    return values


@dataclass
class Me:
    """Who the SDK is logged in as (``via``: 'keycloak' for a bearer token, 'hub' for a JupyterHub token)."""

    username: str
    organization: str | None = None
    groups: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    via: str = ""

    @classmethod
    def from_api(cls, data: dict) -> "Me":
        return cls(**{k: data.get(k) for k in ("username", "organization", "groups", "roles", "via")})


@dataclass
class Partition:
    """A Slurm partition of a cluster: its limits and whether it is the default."""

    name: str
    default: bool = False
    available: bool = True
    time_limit: str = ""
    nodes: int = 0
    cpus_per_node: int = 0
    memory_mb: int = 0
    gres: str = ""

    @classmethod
    def from_api(cls, data: dict) -> "Partition":
        return cls(**_pick(cls, data))


@dataclass
class Price:
    """What a job costs on a cluster: per-hour rates (on-premises, plus energy at ``per_kwh``) or a cloud
    ``instance_type`` from a price ``catalog``; amounts are in ``currency``."""

    kind: str = "on-premises"
    currency: str = "EUR"
    per_core_hour: float = 0.0
    per_node_hour: float = 0.0
    per_gpu_hour: float = 0.0
    per_gb_memory_hour: float = 0.0
    per_kwh: float = 0.0
    instance_type: str | None = None
    catalog: str = "default"
    region: str | None = None

    @classmethod
    def from_api(cls, data: dict | None) -> "Price":
        return cls(**_pick(cls, data or {}))


@dataclass
class Cluster:
    """A cluster of your organization you may submit to, with its partitions, price and energy profile."""

    id: str
    name: str
    description: str = ""
    container_runtime: str = ""
    identity_mode: str = ""
    slurm_version: str = ""
    partitions: list[Partition] = field(default_factory=list)
    default_partition: str = ""
    price: Price = field(default_factory=Price)
    energy_profile: dict = field(default_factory=dict)
    relative_speed: float = 1.0
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: dict) -> "Cluster":
        return cls(**_pick(cls, data, partitions=[Partition.from_api(p) for p in data.get("partitions") or []],
                           price=Price.from_api(data.get("price_model"))))

    def _repr_html_(self) -> str:
        return display.cluster_html(self)


@dataclass
class Parameter:
    """One parameter of a template's form: its type (int, float, string, bool, enum, file), bounds, default."""

    name: str
    type: str
    label: str = ""
    required: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: list[Any] | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: dict) -> "Parameter":
        return cls(**_pick(cls, data))


@dataclass
class Template:
    """A published workflow template version. ``parameters`` is filled when the template was read by itself
    (:meth:`heroes_sdk.Client.template`); listings leave it empty (``detailed`` False)."""

    id: str
    name: str
    version: int
    title: str = ""
    description: str = ""
    created_by: str = ""
    created_at: datetime | None = None
    parameters: list[Parameter] = field(default_factory=list)
    spec: dict = field(default_factory=dict, repr=False)
    detailed: bool = False
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: dict) -> "Template":
        return cls(**_pick(cls, data, created_at=parse_time(data.get("created_at")),
                           parameters=[Parameter.from_api(p) for p in data.get("parameters") or []],
                           detailed="parameters" in data))

    @property
    def steps(self) -> list[str]:
        """The step names (detailed templates only)."""
        return [s["name"] for s in self.spec.get("steps", [])]

    def _repr_html_(self) -> str:
        return display.template_html(self)


@dataclass
class Candidate:
    """One cluster as the decision module sees it: predicted wait, run time, finish, energy, cost."""

    cluster: str
    eligible: bool
    reason: str = ""
    wait_s: float | None = None
    run_s: float = 0.0
    finish_s: float | None = None
    run_limit_s: float = 0.0
    energy_kwh: float = 0.0
    energy_estimated: bool = True
    cost: float | None = None
    currency: str = ""
    confidence: float = 0.0
    meets_deadline: bool = True
    within_budget: bool = True
    score: float = 0.0
    cpu_freq: dict | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: dict) -> "Candidate":
        return cls(**_pick(cls, data))


@dataclass
class Rightsizing:
    """What the history says the job really needs (time limit, memory, cores), and warnings."""

    time_limit_s: int
    memory_mb: int
    cores: int
    nodes: int
    requested: dict = field(default_factory=dict)
    basis: str = ""
    history_jobs: int = 0
    note: str = ""
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_api(cls, data: dict | None) -> "Rightsizing | None":
        return cls(**_pick(cls, data)) if data else None


@dataclass
class Decision:
    """Where a template should run: every candidate, the ``choice`` (None when none fits) and why."""

    policy: str
    choice: str | None
    reason: str
    candidates: list[Candidate] = field(default_factory=list)
    weights: dict = field(default_factory=dict)
    rightsizing: Rightsizing | None = None
    history: dict = field(default_factory=dict)
    template: str = ""
    parameters: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: dict, template: str = "", parameters: dict | None = None) -> "Decision":
        return cls(**_pick(cls, data, candidates=[Candidate.from_api(c) for c in data.get("candidates", [])],
                           rightsizing=Rightsizing.from_api(data.get("rightsizing")), template=template,
                           parameters=dict(parameters or {})))

    def to_dataframe(self):
        """The candidates as a pandas DataFrame, one row per cluster (the chosen one first)."""
        import pandas as pd

        rows = [{k: v for k, v in c.raw.items() if k != "cpu_freq"} or vars(c) for c in self.candidates]
        frame = pd.DataFrame(rows)
        if not frame.empty:
            frame["chosen"] = frame["cluster"] == self.choice
            frame = frame.sort_values(["chosen", "score"], ascending=[False, False]).reset_index(drop=True)
        return frame

    def _repr_html_(self) -> str:
        return display.decision_html(self)


@dataclass
class Bucket:
    """A data space you may use: ``kind`` 'user' (yours) or 'organization' (shared); ``access`` read/write."""

    bucket: str
    kind: str = ""
    name: str = ""
    default: bool = False
    access: str = "read"
    manage: bool = False

    @classmethod
    def from_api(cls, data: dict) -> "Bucket":
        return cls(**_pick(cls, data))


@dataclass
class DataObject:
    """An object in a bucket (``key`` relative to the bucket)."""

    bucket: str
    key: str
    size: int = 0
    etag: str = ""
    last_modified: datetime | None = None

    @classmethod
    def from_api(cls, bucket: str, data: dict) -> "DataObject":
        return cls(bucket=bucket, key=data["key"], size=int(data.get("size") or 0), etag=data.get("etag", ""),
                   last_modified=parse_time(data.get("last_modified")))


@dataclass
class Listing:
    """What is directly below a prefix: sub-folders (keys ending in '/') and objects."""

    bucket: str
    prefix: str
    folders: list[str] = field(default_factory=list)
    objects: list[DataObject] = field(default_factory=list)
    access: str = "read"

    def to_dataframe(self):
        """The objects as a pandas DataFrame (one row per object; folders are in ``folders``)."""
        import pandas as pd

        return pd.DataFrame([vars(o) for o in self.objects], columns=["bucket", "key", "size", "etag",
                                                                       "last_modified"])


@dataclass
class EnergyRecord:
    """The energy of one Slurm step (EAR's aggregation over its nodes); ``estimated`` when no counter was
    readable and the collector modelled it."""

    cluster: str
    job_id: int
    step_id: int
    username: str = ""
    organization: str = ""
    instance_id: str | None = None
    template: str | None = None
    job_name: str = ""
    nodes: int = 0
    start_time: float | None = None
    end_time: float | None = None
    time_s: float | None = None
    energy_j: float = 0.0
    energy_kwh: float = 0.0
    dc_power_w: float | None = None
    estimated: bool = False
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: dict) -> "EnergyRecord":
        return cls(**_pick(cls, data))
