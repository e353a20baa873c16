"""What a job costs on a cluster, from the cluster's price model, always with its currency.

Two kinds of price model (``api/clusters.py``'s ``PriceModel``, stored as a dict on the cluster):

* ``on-premises`` (the default): per core-hour, node-hour, GPU-hour and GB-of-memory-hour, plus the energy the
  job draws at ``per_kwh`` (the site's electricity price). The estimate's energy is already the facility's
  (the estimates module multiplies by the site's PUE), so it is billed as it is;
* ``cloud``: one instance of ``instance_type`` per node, at the hourly price of ``catalog`` (a named price file,
  see ``catalog.py``) in ``region``. Instances are billed per second with a one-minute minimum (how the big
  clouds bill Linux instances); energy is in the price and not billed again.

Costs use the predicted run time (the expected bill), not the time limit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import catalog as catalogs

ON_PREMISES, CLOUD = "on-premises", "cloud"
CLOUD_MINIMUM_S = 60.0


@dataclass(frozen=True)
class Shape:
    """The resources a job asks Slurm for (what sbatch gets, and what a bill multiplies)."""

    nodes: int = 1
    tasks: int = 1
    cpus_per_task: int = 1
    memory_mb: int = 256          # per node
    gpus: int = 0
    time_s: float = 600.0         # time limit
    partition: str = ""

    @property
    def cores(self) -> int:
        return self.tasks * self.cpus_per_task

    def key(self) -> tuple:
        return (self.nodes, self.tasks, self.cpus_per_task, self.memory_mb, self.gpus, int(self.time_s),
                self.partition)


@dataclass
class Cost:
    amount: float | None
    currency: str
    kind: str
    parts: dict[str, float] = field(default_factory=dict)
    note: str = ""


def job_cost(price_model: dict | None, energy_profile: dict | None, shape: Shape, run_s: float,
             energy_kwh: float) -> Cost:
    """The predicted bill of one run; ``amount`` None (and ``note`` says why) when it cannot be priced."""
    model = price_model or {}
    if model.get("kind") == CLOUD:
        return _cloud_cost(model, shape, run_s)
    return _on_premises_cost(model, energy_profile or {}, shape, run_s, energy_kwh)


def _on_premises_cost(model: dict, profile: dict, shape: Shape, run_s: float, energy_kwh: float) -> Cost:
    hours = max(run_s, 0.0) / 3600.0
    parts = {
        "cores": shape.cores * hours * float(model.get("per_core_hour") or 0.0),
        "nodes": shape.nodes * hours * float(model.get("per_node_hour") or 0.0),
        "gpus": shape.gpus * hours * float(model.get("per_gpu_hour") or 0.0),
        "memory": shape.nodes * shape.memory_mb / 1024.0 * hours * float(model.get("per_gb_memory_hour") or 0.0),
        "energy": max(energy_kwh, 0.0) * float(model.get("per_kwh") or 0.0),
    }
    parts = {k: round(v, 6) for k, v in parts.items() if v}
    return Cost(amount=round(sum(parts.values()), 6), currency=str(model.get("currency") or "EUR"),
                kind=ON_PREMISES, parts=parts)


def _cloud_cost(model: dict, shape: Shape, run_s: float) -> Cost:
    name = model.get("catalog") or catalogs.DEFAULT_CATALOG
    try:
        catalog = catalogs.load(name)
        instance = catalog.instance(str(model.get("instance_type") or ""))
        hourly = catalog.hourly_price(instance.name, model.get("region"), model.get("os"))
    except (catalogs.CatalogError, OSError, ValueError) as exc:
        return Cost(amount=None, currency=str(model.get("currency") or catalogs.ASSUMED_CURRENCY), kind=CLOUD,
                    note=f"cannot price: {exc}")
    per_node = math.ceil(shape.cores / max(shape.nodes, 1))
    instances = shape.nodes
    note = f"{instances} x {instance.name} at {hourly:g} {catalog.currency}/h ({catalog.name})"
    if instance.vcpu and per_node > instance.vcpu:
        instances = shape.nodes * math.ceil(per_node / instance.vcpu)
        note = (f"{instances} x {instance.name} at {hourly:g} {catalog.currency}/h ({catalog.name}; "
                f"{per_node} cores per node need more than one {instance.vcpu}-vCPU instance)")
    billed_h = max(run_s, CLOUD_MINIMUM_S) / 3600.0
    amount = round(instances * hourly * billed_h, 6)
    return Cost(amount=amount, currency=catalog.currency, kind=CLOUD, parts={"instances": amount}, note=note)
