"""EAR-lite CPU power estimate for nodes without readable RAPL counters (standard library only).

Model: a socket draws ``IDLE_FRACTION`` of its TDP when idle and its full TDP at 100 % utilization,
linearly in between. When the node shows fewer logical CPUs than the model has (VMs, containers),
only that share of the sockets' TDP is counted. Every value from here is an *estimate* and is marked
so by the collector.

The built-in table can be overridden with ``HEROES_CPU_TDP``:
- ``HEROES_CPU_TDP=165`` sets the TDP (W per socket) of this node's CPU;
- ``HEROES_CPU_TDP="EPYC 7763=280:128,Xeon Gold 6148=150:40"`` adds ``model substring = W[:threads
  per socket]`` entries that are matched before the built-in ones.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

ENV_VAR = "HEROES_CPU_TDP"
IDLE_FRACTION = 0.3

#: (model-name substring, TDP in W per socket, logical CPUs per socket). Most specific first.
BUILTIN_TDP: tuple[tuple[str, float, int], ...] = (
    ("EPYC 9654", 360.0, 192),
    ("EPYC 9554", 360.0, 128),
    ("EPYC 7H12", 280.0, 128),
    ("EPYC 7763", 280.0, 128),
    ("EPYC 7742", 225.0, 128),
    ("EPYC 7713", 225.0, 128),
    ("EPYC 7543", 225.0, 64),
    ("EPYC 7502", 180.0, 64),
    ("EPYC 7452", 155.0, 64),
    ("EPYC", 225.0, 128),
    ("Platinum 8480", 350.0, 112),
    ("Platinum 8380", 270.0, 80),
    ("Platinum 8360Y", 250.0, 72),
    ("Platinum 8280", 205.0, 56),
    ("Platinum 8168", 205.0, 48),
    ("Platinum 8160", 150.0, 48),
    ("Gold 6448Y", 225.0, 64),
    ("Gold 6338", 205.0, 64),
    ("Gold 6252", 150.0, 48),
    ("Gold 6248", 150.0, 40),
    ("Gold 6148", 150.0, 40),
    ("Gold 6130", 125.0, 32),
    ("Xeon", 150.0, 40),
    ("Ampere", 250.0, 80),
    ("Neoverse", 250.0, 72),
    ("A64FX", 160.0, 48),
)
DEFAULT_TDP = (125.0, 32)  # an anonymous x86 server socket


@dataclass(frozen=True)
class TdpModel:
    """The power model chosen for this node and where it came from (for the log and the report)."""

    tdp_w: float
    threads_per_socket: int | None
    source: str


def _parse_env(value: str) -> list[tuple[str, float, int | None]]:
    entries = []
    for part in value.split(","):
        key, sep, rest = part.partition("=")
        if not sep:
            continue
        watts, _, threads = rest.partition(":")
        entries.append((key.strip(), float(watts), int(threads) if threads.strip() else None))
    return entries


def tdp_for(model: str, environ: dict | None = None) -> TdpModel:
    """TDP of ``model`` from the environment override or the built-in table."""
    env = os.environ if environ is None else environ
    override = env.get(ENV_VAR, "").strip()
    if override:
        try:
            return TdpModel(float(override), None, f"{ENV_VAR}={override}")
        except ValueError:
            for key, watts, threads in _parse_env(override):
                if key and key.lower() in model.lower():
                    return TdpModel(watts, threads, f"{ENV_VAR} entry {key!r}")
    for key, watts, threads in BUILTIN_TDP:
        if key.lower() in model.lower():
            return TdpModel(watts, threads, f"built-in table entry {key!r}")
    return TdpModel(DEFAULT_TDP[0], DEFAULT_TDP[1], "default (model not in table)")


def visible_share(model: TdpModel, logical_cpus: int, sockets: int) -> float:
    """Fraction of the sockets' TDP this node (or VM) can use: visible CPUs / CPUs of the sockets."""
    if not model.threads_per_socket:
        return 1.0
    return max(0.0, min(1.0, logical_cpus / float(model.threads_per_socket * sockets)))


def cpu_power_w(util: float, model: TdpModel, logical_cpus: int, sockets: int) -> float:
    """Estimated package power in W at CPU utilization ``util`` (0..1)."""
    util = max(0.0, min(1.0, util))
    share = visible_share(model, logical_cpus, sockets)
    return sockets * model.tdp_w * share * (IDLE_FRACTION + (1.0 - IDLE_FRACTION) * util)
