"""The simulated clusters of ``heroes decision placement`` (kept free of heavy imports: the CLI shows the
defaults in its help)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimCluster:
    """A simulated cluster: a share of the trace's machine, its speed relative to it, its price (per
    core-hour, reported only: the performance policy does not weigh it)."""

    name: str
    share: float
    speed: float
    price_per_core_hour: float


# A large reference cluster, a smaller and faster (dearer) one, and a small, slow, cheap one: the choice is
# between waiting less and running faster, as on a real federation.
DEFAULT_CLUSTERS = (
    SimCluster("large", 0.5, 1.0, 0.05),
    SimCluster("fast", 0.3, 1.5, 0.09),
    SimCluster("small", 0.2, 0.8, 0.03),
)


def parse_clusters(text: str) -> tuple[SimCluster, ...]:
    """``name:share:speed:price,...`` (2 or 3 clusters; shares of the machine's processors)."""
    out = []
    for part in text.split(","):
        fields = part.strip().split(":")
        if len(fields) != 4:
            raise ValueError(f"cluster {part!r}: expected name:share:speed:price")
        name, share, speed, price = fields[0], float(fields[1]), float(fields[2]), float(fields[3])
        if not name or not (0 < share <= 1) or speed <= 0 or price < 0:
            raise ValueError(f"cluster {part!r}: share in (0, 1], speed > 0 and price >= 0 required")
        out.append(SimCluster(name, share, speed, price))
    if not 2 <= len(out) <= 3 or len({c.name for c in out}) != len(out):
        raise ValueError("give 2 or 3 clusters with distinct names")
    return tuple(out)
