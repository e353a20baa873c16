"""RAPL package and DRAM energy from the Linux powercap sysfs tree (standard library only).

Why this shape:
- the sysfs root is a parameter so tests can build a synthetic tree under ``tmp_path``;
- file reads go through an injectable ``opener`` so tests running as root can still simulate the
  ``energy_uj`` permission denial that Linux >= 5.10 imposes on unprivileged users (PLATYPUS);
- counters wrap at ``max_energy_range_uj``; deltas are taken modulo ``max_energy_range_uj + 1``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable

DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"

#: Top-level package zones and their sub-zones (``intel-rapl:0``, ``intel-rapl:0:1``). AMD Zen uses
#: the same driver and names. ``intel-rapl-mmio`` duplicates the package zone, so it is ignored.
_ZONE_RE = re.compile(r"^intel-rapl:\d+(:\d+)?$")

Opener = Callable[[str], str]


def read_text(path: str) -> str:
    """Default opener: the whole (small) sysfs file as text."""
    with open(path, "r", encoding="ascii") as handle:
        return handle.read()


def counter_delta(previous: int, current: int, max_range: int) -> int:
    """Energy consumed between two readings of a counter that wraps after ``max_range``."""
    return (current - previous) % (max_range + 1)


@dataclass
class RaplZone:
    """One energy counter: a package or a DRAM domain."""

    path: str
    name: str
    kind: str  # "package" or "dram"
    max_range_uj: int
    last_uj: int | None = None


@dataclass
class RaplReading:
    """Energy since the previous reading, in joules; ``None`` where a domain is absent or unreadable."""

    package_j: float | None
    dram_j: float | None
    error: str | None = None


@dataclass
class RaplReader:
    """Reads every package and DRAM zone under a powercap root and returns wrap-safe deltas.

    ``available`` is False when no zone exists or the counters cannot be read (permission denied);
    ``reason`` then says why, so the collector can fall back to the estimate and say so.
    """

    root: str = DEFAULT_POWERCAP_ROOT
    opener: Opener = read_text
    zones: list[RaplZone] = field(default_factory=list)
    available: bool = False
    reason: str = ""

    def open(self) -> "RaplReader":
        """Discover zones and take the first reading of each counter."""
        self.zones = self._discover()
        if not self.zones:
            self.reason = f"no RAPL zones under {self.root}"
            return self
        try:
            for zone in self.zones:
                zone.last_uj = self._read_uj(zone)
        except PermissionError as exc:
            self.reason = f"RAPL counters not readable ({exc.filename or zone.path}: permission denied)"
            return self
        except (OSError, ValueError) as exc:
            self.reason = f"RAPL counters not readable ({exc})"
            return self
        self.available = True
        return self

    def _discover(self) -> list[RaplZone]:
        zones: list[RaplZone] = []
        try:
            entries = sorted(os.listdir(self.root))
        except OSError:
            return zones
        for entry in entries:
            if not _ZONE_RE.match(entry):
                continue
            path = os.path.join(self.root, entry)
            try:
                name = self.opener(os.path.join(path, "name")).strip()
            except OSError:
                continue
            if name.startswith("package"):
                kind = "package"
            elif name == "dram":
                kind = "dram"
            else:
                continue  # core/uncore are inside the package; psys spans the platform
            try:
                max_range = int(self.opener(os.path.join(path, "max_energy_range_uj")).strip())
            except (OSError, ValueError):
                max_range = (1 << 32) - 1  # sysfs always has it; be safe if a fake tree lacks it
            zones.append(RaplZone(path=path, name=name, kind=kind, max_range_uj=max_range))
        return zones

    def _read_uj(self, zone: RaplZone) -> int:
        return int(self.opener(os.path.join(zone.path, "energy_uj")).strip())

    def read(self) -> RaplReading:
        """Energy per domain since the last call. A failed read yields ``None`` and an error text."""
        if not self.available:
            return RaplReading(None, None, self.reason)
        totals = {"package": 0, "dram": 0}
        seen = {"package": False, "dram": False}
        try:
            currents = [(zone, self._read_uj(zone)) for zone in self.zones]
        except (OSError, ValueError) as exc:
            for zone in self.zones:
                zone.last_uj = None  # the next good read re-baselines instead of spanning the gap
            return RaplReading(None, None, f"RAPL read failed: {exc}")
        if any(zone.last_uj is None for zone in self.zones):
            for zone, current in currents:
                zone.last_uj = current
            return RaplReading(None, None, "RAPL counters re-baselined after a failed read")
        for zone, current in currents:
            totals[zone.kind] += counter_delta(zone.last_uj, current, zone.max_range_uj)
            seen[zone.kind] = True
            zone.last_uj = current
        return RaplReading(
            totals["package"] / 1e6 if seen["package"] else None,
            totals["dram"] / 1e6 if seen["dram"] else None,
        )
