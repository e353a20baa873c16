"""A desktop's energy comes from the energy collector it runs under (``script.collector_argv``), not from a model.

* While it runs: the tracker reads the collector's ``energy/progress.json`` (the totals so far, a few hundred
  bytes) over SSH as the owner, every ``read_every_s``, and keeps them on the session row
  (``energy_source = "collector"``).
* Once it has ended: the collector's EAR CSV and samples in ``energy/`` are fetched over SFTP and ingested for
  the owner by the energy capability (``energy_sink``: the same ingestion as a workflow step's files). The row
  then holds the stored record's energy (``energy_source = "record"``), and so does the ledger row unless Slurm
  measured the job's energy itself.
* Before the collector's first sample (or with the collector off, or no python3 on the node): estimated from
  the cluster's power profile, and the answer says so.

Trust: the collector runs in the user's job and writes into the user's folder, so (as with a workflow step)
its numbers are the user's own account of their job. They land in the user's own records only (the ingest's
ownership rule), and a cluster that meters energy itself (Slurm's ``ConsumedEnergy``) keeps its own number
in the ledger. The progress file is read as untrusted input: a bounded read, JSON with finite, non-negative
numbers, column names of the collector's shape.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import Integer, func, select
from sqlalchemy.orm import Session

from ..clusters.connector import ClusterConnector
from ..decision.costs import Shape, job_cost
from . import models as m
from .script import ENERGY_DIR, PROGRESS_FILE

#: the most of the progress file read (it is a few hundred bytes; the user could make it anything)
PROGRESS_MAX_BYTES = 4096
#: a name of the collector's estimated columns (``PCK_POWER_W``, ...)
COLUMN = re.compile(r"^[A-Z0-9_]{1,40}$")
#: nothing a desktop draws comes near this (10 TJ): a bigger number is not believed
MAX_ENERGY_J = 1e13
#: ``fn(session, organization=, username=, files=, cluster=, instance_id=) -> {"stored", ...}``
EnergySink = Callable[..., dict]


@dataclass(frozen=True)
class Progress:
    """The collector's totals so far."""

    energy_j: float
    time_s: float
    estimated: tuple[str, ...]
    final: bool


def _number(value, limit: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0 <= value <= limit else None


def parse_progress(text: str) -> Progress | None:
    """``progress.json`` -> ``Progress``; None when absent or not what the collector writes."""
    try:
        data = json.loads(text) if text and len(text) <= PROGRESS_MAX_BYTES else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    energy, seconds = _number(data.get("energy_j"), MAX_ENERGY_J), _number(data.get("time_s"), 1e9)
    estimated = data.get("estimated")
    if energy is None or seconds is None or not isinstance(estimated, list) or len(estimated) > 40 or \
            not all(isinstance(c, str) and COLUMN.match(c) for c in estimated):
        return None
    return Progress(energy, seconds, tuple(sorted(set(estimated))), data.get("final") is True)


def read_progress(conn: ClusterConnector, row: m.DesktopSession) -> Progress | None:
    """The collector's totals so far, read as the desktop's owner (None: no sample written yet)."""
    result = conn.run(["head", "-c", str(PROGRESS_MAX_BYTES + 1), "--", f"{row.session_dir}/{PROGRESS_FILE}"],
                      timeout=30)
    return parse_progress(result.stdout) if result.ok else None


def apply_progress(row: m.DesktopSession, progress: Progress) -> None:
    if row.energy_source == "record":  # the stored record is final; a late read never replaces it
        return
    row.energy_j, row.energy_time_s = progress.energy_j, progress.time_s
    # only the power columns make the energy an estimate (an estimated CPU frequency does not)
    row.energy_estimated = ",".join(c for c in progress.estimated if c.endswith("POWER_W"))[:255]
    row.energy_source, row.energy_read_at = "collector", m.utcnow()


def energy_folder(row: m.DesktopSession) -> str:
    return f"{row.session_dir}/{ENERGY_DIR}"


def has_final_record(files: dict[str, bytes]) -> bool:
    """Whether the collector wrote its EAR CSV (at its exit), besides the samples it writes as it goes."""
    return any(not name.endswith(".samples.csv") for name in files)


def ingest_record(session: Session, row: m.DesktopSession, files: dict[str, bytes], sink: EnergySink) -> dict:
    """Ingest the collector's files for the desktop's owner (the energy capability's rules: validated, stored
    once, the owner's organization), then take the stored record's energy onto the row."""
    from ..energy.models import EnergyRecord

    result = sink(session, organization=row.organization, username=row.username, files=files,
                  cluster=row.cluster_name, instance_id="")
    energy, seconds, estimated = session.execute(
        select(func.sum(EnergyRecord.energy_j), func.max(EnergyRecord.time_s),
               func.max(EnergyRecord.estimated.cast(Integer)))
        .where(EnergyRecord.organization == row.organization, EnergyRecord.cluster == row.cluster_name,
               EnergyRecord.job_id == int(row.job_id), EnergyRecord.username == row.username)).one()
    if energy is not None:
        row.energy_j, row.energy_time_s, row.energy_source = float(energy), seconds, "record"
        if estimated and not row.energy_estimated:
            row.energy_estimated = "DC_NODE_POWER_W"
        elif not estimated:
            row.energy_estimated = ""
        row.energy_read_at = m.utcnow()
    return result


def usage_energy(row: m.DesktopSession, cluster, shape: Shape, elapsed_s: float) -> dict:
    """Energy and cost so far: the collector's where it has written anything, else the power profile's estimate
    (the answer says which, and why)."""
    profile = (cluster.energy_profile if cluster is not None else None) or {}
    if row.energy_j is not None and row.energy_source:
        kwh = row.energy_j / 3.6e6
        estimated = bool(row.energy_estimated)
        source = "energy record" if row.energy_source == "record" else "collector"
        where = f" on {row.node}" if row.node else ""
        note = (f"measured by the energy collector{where}" if not estimated else
                f"from the energy collector{where}; it estimated {row.energy_estimated.replace(',', ', ')} from "
                "CPU utilisation (no readable RAPL counter on the node)")
    else:
        watts = float(profile.get("idle_watts_per_node") or 0.0) \
            + shape.cpus_per_task * float(profile.get("watts_per_core") or 0.0) \
            + shape.gpus * float(profile.get("watts_per_gpu") or 0.0)
        kwh, estimated, source = watts * elapsed_s / 3.6e6, True, "power profile"
        note = ("estimated from the cluster's power profile: no output from the energy collector yet"
                if row.state in m.LIVE else "estimated from the cluster's power profile: the energy collector "
                                            "left no record")
    cost = job_cost(cluster.price_model if cluster is not None else None, profile, shape, elapsed_s, kwh)
    return {"energy_kwh": round(kwh, 6), "energy_j": round(kwh * 3.6e6, 3), "energy_estimated": estimated,
            "energy_source": source, "energy_note": note, "energy_measured_s": row.energy_time_s if row.energy_source else None,
            "cost": cost.amount, "currency": cost.currency}
