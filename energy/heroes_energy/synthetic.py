"""Synthetic EAR application rows in every layout, for tests, benchmarks and demo data.

The values are plausible, not real measurements; nothing here is used by the collector.
"""
from __future__ import annotations

import random
from typing import Iterator

from . import columns as C


def ear_row_values(job_id: int, step_id: int, node: str, rng: random.Random, num_gpus: int = 0,
                   earl: bool = True, extended: bool = True) -> dict[str, str]:
    """One node's row as EAR would print it (every numeric field filled)."""
    time_s = rng.uniform(10, 5000)
    dc = rng.uniform(150, 450)
    start = 1_700_000_000 + job_id
    values = {
        "JOBID": str(job_id), "STEPID": str(step_id), "USERID": f"user{job_id % 50}", "GROUPID": "hpc",
        "ACCOUNTID": "proj", "JOBNAME": f"app{job_id % 13}", "ENERGY_TAG": "NA",
        "JOB_START_TIME": str(start), "JOB_END_TIME": str(start + int(time_s)),
        "JOB_START_DATE": "2023-11-14 22:13:20", "JOB_END_DATE": "2023-11-14 23:13:20",
        "JOB_EARL_START_TIME": str(start if earl else 0), "JOB_EARL_END_TIME": str(start + int(time_s) if earl else 0),
        "POLICY": "monitoring" if earl else "NP", "POLICY_TH": "0.00", "JOB_NPROCS": "64", "JOB_TYPE": "0",
        "JOB_DEF_FREQ": "2400000", "EARL_ENABLED": "1" if earl else "0", "EAR_LEARNING_PHASE": "0",
        "NODENAME": node,
    }
    sig = {
        "AVG_CPUFREQ_KHZ": f"{rng.uniform(1.8e6, 2.6e6):.0f}", "AVG_IMCFREQ_KHZ": f"{rng.uniform(1.2e6, 2.4e6):.0f}",
        "DEF_FREQ_KHZ": "2400000", "TIME_SEC": f"{time_s:.6f}", "CPI": f"{rng.uniform(0.3, 1.5):.6f}",
        "TPI": f"{rng.uniform(0.1, 4):.6f}", "MEM_GBS": f"{rng.uniform(1, 150):.6f}", "IO_MBS": f"{rng.uniform(0, 50):.6f}",
        "PERC_MPI": f"{rng.uniform(0, 40):.6f}", "DC_NODE_POWER_W": f"{dc:.6f}",
        "DRAM_POWER_W": f"{dc * 0.1:.6f}", "PCK_POWER_W": f"{dc * 0.6:.6f}", "CYCLES": str(rng.randrange(10**12)),
        "INSTRUCTIONS": str(rng.randrange(10**12)), "STALLS_FETCH_DECODE": "0", "STALLS_RESOURCES": "0",
        "STALLS_MEMORY": "0", "CPU_GFLOPS": f"{rng.uniform(0, 500):.6f}", "CPU_UTIL": str(rng.randrange(100)),
    }
    if not earl:
        sig = {name: "0" for name in sig}
    values.update(sig)
    if extended:
        values.update({name: "0" for name in C.EXTENDED_COLUMNS})
    for i in range(num_gpus):
        values.update({f"GPU{i}_POWER_W": f"{rng.uniform(50, 400):.2f}", f"GPU{i}_FREQ_KHZ": "1410000",
                       f"GPU{i}_MEM_FREQ_KHZ": "1215000", f"GPU{i}_UTIL_PERC": str(rng.randrange(100)),
                       f"GPU{i}_MEM_UTIL_PERC": str(rng.randrange(100))})
    values.update({
        "NODEMGR_DC_NODE_POWER_W": f"{dc:.6f}", "NODEMGR_DRAM_POWER_W": f"{dc * 0.1:.6f}",
        "NODEMGR_PCK_POWER_W": f"{dc * 0.6:.6f}", "NODEMGR_MAX_DC_POWER_W": f"{dc * 1.2:.6f}",
        "NODEMGR_MIN_DC_POWER_W": f"{dc * 0.8:.6f}", "NODEMGR_TIME_SEC": f"{time_s:.6f}",
        "NODEMGR_AVG_CPUFREQ_KHZ": "2300000", "NODEMGR_DEF_FREQ_KHZ": "2400000",
    })
    return values


def eacct_lines(n_rows: int, nodes_per_step: int = 2, num_gpus: int = 0, seed: int = 1) -> Iterator[str]:
    """Header + ``n_rows`` rows in ``eacct -c -l`` layout (one row per node per step)."""
    rng = random.Random(seed)
    names = C.ear_app_columns(num_gpus=num_gpus)
    yield C.SEP.join(names)
    for i in range(n_rows):
        job, node = divmod(i, nodes_per_step)
        values = ear_row_values(job + 1, 0, f"node{node:03d}", rng, num_gpus=num_gpus)
        yield C.SEP.join(values[name] for name in names)


def write_eacct_file(path: str, n_rows: int, nodes_per_step: int = 2, num_gpus: int = 0, seed: int = 1) -> None:
    """Write :func:`eacct_lines` to ``path``."""
    with open(path, "w", encoding="utf-8") as handle:
        for line in eacct_lines(n_rows, nodes_per_step, num_gpus, seed):
            handle.write(line + "\n")
