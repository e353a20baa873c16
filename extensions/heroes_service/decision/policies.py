"""Placement policies: how much finish time, energy and cost each weigh when candidates are ranked.

A candidate's score is ``sum(weight_k * best_k / value_k)`` over the three criteria, where ``best_k`` is the
best (smallest) value among the candidates still in the race. Ratios to the best rather than min-max scaling:
with two candidates min-max turns any difference, however tiny, into 0 versus 1, whereas a ratio says "20 %
slower" as 0.83. A score of 1.0 means "best in every criterion that counts"; higher is better.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

CRITERIA = ("time", "energy", "cost")


@dataclass(frozen=True)
class Policy:
    name: str
    title: str
    description: str
    weights: dict[str, float]

    def as_dict(self) -> dict:
        return asdict(self)


POLICIES: dict[str, Policy] = {p.name: p for p in (
    Policy("performance", "Earliest finish",
           "The cluster where the job is predicted to finish first: queue wait (from Slurm) plus predicted run time.",
           {"time": 1.0, "energy": 0.0, "cost": 0.0}),
    Policy("energy", "Least energy",
           "The cluster where the job is predicted to use the least energy (learnt from measured runs, else the "
           "cluster's power profile).",
           {"time": 0.0, "energy": 1.0, "cost": 0.0}),
    Policy("cost", "Cheapest",
           "The cluster where the job is predicted to cost the least under the cluster's price model.",
           {"time": 0.0, "energy": 0.0, "cost": 1.0}),
    Policy("balanced", "Balanced",
           "A compromise: finish time, energy and cost weigh about the same, each relative to the best candidate.",
           {"time": 0.34, "energy": 0.33, "cost": 0.33}),
)}
DEFAULT_POLICY = "balanced"


def policy(name: str | None) -> Policy:
    """The named policy (KeyError for an unknown name; the API validates names before)."""
    return POLICIES[name or DEFAULT_POLICY]


def _ratio(best: float, value: float | None) -> float:
    """How close ``value`` is to ``best`` (1.0 = as good); unknown values score 0."""
    if value is None:
        return 0.0
    if value <= best:
        return 1.0
    return best / value if value > 0 else 1.0


def scores(values: list[dict[str, float | None]], weights: dict[str, float]) -> list[float]:
    """One score per candidate from its ``{"time", "energy", "cost"}`` values (None = unknown/not comparable)."""
    best = {}
    for key in CRITERIA:
        known = [v[key] for v in values if v.get(key) is not None]
        best[key] = min(known) if known else 0.0
    total = sum(weights.get(k, 0.0) for k in CRITERIA) or 1.0
    return [round(sum(weights.get(k, 0.0) * _ratio(best[k], v.get(k)) for k in CRITERIA) / total, 6) for v in values]
