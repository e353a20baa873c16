"""Energy-aware CPU frequency advice (``--cpu-freq``), after EAR's ``min_energy`` policy.

EAR projects time and power at each lower P-state from learnt coefficients and picks the frequency of least
energy whose projected time stays within a penalty (``Settings=0.05``: 5 %). We have no per-node coefficients,
so we use the textbook split those coefficients approximate:

* time: only the compute-bound share ``beta`` of the run scales with 1/f; the memory-bound rest waits on DRAM
  whatever the core clock, so ``T(f) / T0 = beta * f0/f + (1 - beta)``;
* power: the CPU's dynamic part falls ~ f^2..f^3 (voltage drops with frequency), the rest of the node
  (DRAM, uncore, fans, PSU losses) does not: ``P(f) / P0 = (1 - c) + c * (f/f0)^2.5`` with ``c`` the CPU's
  share of node power (from the cluster's energy profile, else 0.6).

``beta`` comes from the measured CPI: an ideal compute-bound code runs at EAR's CPU-bound CPI (0.6); cycles
above that are stalls, mostly on memory for a code whose history shows high GB/s, so ``beta = 0.6 / CPI``.
Advice is given only when the estimate says the template's history is memory-bound (high CPI and GB/s), and
only when it saves at least ``MIN_SAVING`` of the energy.
"""
from __future__ import annotations

from dataclasses import dataclass

CPI_CPU_BOUND = 0.6          # EAR's CPI_CPU_BOUND_DEF
MAX_SLOWDOWN = 0.05          # EAR's min_energy default penalty
MIN_SAVING = 0.02
POWER_EXPONENT = 2.5
DEFAULT_CPU_SHARE = 0.6
DEFAULT_NOMINAL_KHZ = 2_400_000
DEFAULT_STEP_KHZ = 100_000
#: a frequency outside this is a typo (kHz), whatever the cluster
SANE_RANGE_KHZ = (400_000, 6_000_000)


@dataclass(frozen=True)
class FrequencyAdvice:
    recommended_khz: int
    saving_pct: float
    slowdown_pct: float

    def as_dict(self) -> dict:
        return {"recommended_khz": self.recommended_khz, "saving_pct": self.saving_pct,
                "slowdown_pct": self.slowdown_pct}


def nominal_khz(profile: dict | None) -> int:
    profile = profile or {}
    if profile.get("nominal_cpu_freq_khz"):
        return int(profile["nominal_cpu_freq_khz"])
    listed = profile.get("cpu_freqs_khz") or []
    return int(max(listed)) if listed else DEFAULT_NOMINAL_KHZ


def available_khz(profile: dict | None) -> list[int]:
    """The frequencies one may ask for: the cluster's list, else 100 MHz steps from half nominal to nominal."""
    profile = profile or {}
    listed = sorted({int(f) for f in profile.get("cpu_freqs_khz") or []})
    if listed:
        return listed
    top = nominal_khz(profile)
    return list(range(top, max(SANE_RANGE_KHZ[0], top // 2) - 1, -DEFAULT_STEP_KHZ))[::-1]


def check_frequency(khz: int, profile: dict | None) -> None:
    """ValueError (saying what is allowed) unless ``khz`` is a frequency the cluster offers."""
    profile = profile or {}
    listed = sorted({int(f) for f in profile.get("cpu_freqs_khz") or []})
    if listed:
        if khz not in listed:
            raise ValueError(f"cpu_freq_khz {khz} is not one of the cluster's frequencies {listed}")
        return
    low, high = SANE_RANGE_KHZ
    top = nominal_khz(profile) if profile.get("nominal_cpu_freq_khz") else high
    if not low <= khz <= top:
        raise ValueError(f"cpu_freq_khz {khz} is outside {low}..{top} kHz")


def compute_share(cpi: float | None) -> float:
    """``beta``: the share of the run that scales with the core clock."""
    if not cpi or cpi <= 0:
        return 0.3  # memory-bound without a CPI: a conservative guess
    return min(1.0, max(0.05, CPI_CPU_BOUND / cpi))


def cpu_power_share(profile: dict | None, cores_per_node: int) -> float:
    profile = profile or {}
    idle = float(profile.get("idle_watts_per_node") or 0.0)
    cpu = float(profile.get("watts_per_core") or 0.0) * max(cores_per_node, 1)
    if idle + cpu <= 0:
        return DEFAULT_CPU_SHARE
    return cpu / (idle + cpu)


def project(f: int, f0: int, beta: float, share: float) -> tuple[float, float]:
    """(time ratio, energy ratio) at ``f`` relative to ``f0``."""
    time_ratio = beta * f0 / f + (1.0 - beta)
    power_ratio = (1.0 - share) + share * (f / f0) ** POWER_EXPONENT
    return time_ratio, power_ratio * time_ratio


def advise(memory_bound: bool | None, cpi: float | None, profile: dict | None,
           cores_per_node: int = 1) -> FrequencyAdvice | None:
    """The min-energy frequency within MAX_SLOWDOWN for a memory-bound job, or None (no advice)."""
    if not memory_bound:
        return None
    f0 = nominal_khz(profile)
    beta = compute_share(cpi)
    share = cpu_power_share(profile, cores_per_node)
    best = None
    for f in available_khz(profile):
        if f >= f0:
            continue
        time_ratio, energy_ratio = project(f, f0, beta, share)
        if time_ratio - 1.0 > MAX_SLOWDOWN:
            continue
        if best is None or energy_ratio < best[1]:
            best = (f, energy_ratio, time_ratio)
    if best is None or 1.0 - best[1] < MIN_SAVING:
        return None
    f, energy_ratio, time_ratio = best
    return FrequencyAdvice(recommended_khz=f, saving_pct=round(100 * (1 - energy_ratio), 1),
                           slowdown_pct=round(100 * (time_ratio - 1), 1))
