"""EAR's application-CSV column layout (EAR v6, non-workflow build) and the HEROES plugin prefix.

One place for column names so that the writer, the reader and the tests agree. The order is EAR's
``application_create_header_str()`` (extended header, as ``eacct -c`` and the report plugins always
write it) followed by the node manager (``NODEMGR_*``) power signature. Standard library only.
"""
from __future__ import annotations

import re

SEP = ";"

#: Job part (``print_job_fd``); a WF_SUPPORT build inserts APPID after STEPID.
JOB_COLUMNS = (
    "JOBID", "STEPID", "USERID", "GROUPID", "ACCOUNTID", "JOBNAME", "ENERGY_TAG",
    "JOB_START_TIME", "JOB_END_TIME", "JOB_START_DATE", "JOB_END_DATE",
    "JOB_EARL_START_TIME", "JOB_EARL_END_TIME", "POLICY", "POLICY_TH", "JOB_NPROCS",
    "JOB_TYPE", "JOB_DEF_FREQ",
)
BASE_COLUMNS = ("EARL_ENABLED", "EAR_LEARNING_PHASE", "NODENAME")

#: EARL application signature (``signature_print_fd``).
SIGNATURE_COLUMNS = (
    "AVG_CPUFREQ_KHZ", "AVG_IMCFREQ_KHZ", "DEF_FREQ_KHZ", "TIME_SEC", "CPI", "TPI", "MEM_GBS",
    "IO_MBS", "PERC_MPI", "DC_NODE_POWER_W", "DRAM_POWER_W", "PCK_POWER_W", "CYCLES",
    "INSTRUCTIONS", "STALLS_FETCH_DECODE", "STALLS_RESOURCES", "STALLS_MEMORY", "CPU_GFLOPS",
    "CPU_UTIL",
)

#: Extended block: cache statistics and FLOP counters (rows carry it only with report_sig_detail).
EXTENDED_COLUMNS = tuple(
    [f"{lvl}_{kind}" for kind in ("MISSES", "HITS", "ACCESSES", "MISSRATE", "HITRATE")
     for lvl in ("L1", "L2", "L3", "LL")]
    + [f"{p}_{w}" for p in ("SPOPS", "DPOPS") for w in ("SINGLE", "128", "256", "512")]
)

#: Per-GPU metrics (``GPU<i>_<metric>``); WF_SUPPORT builds add GFLOPS, TEMP, MEMTEMP.
GPU_METRICS = ("POWER_W", "FREQ_KHZ", "MEM_FREQ_KHZ", "UTIL_PERC", "MEM_UTIL_PERC")
GPU_METRICS_WF = GPU_METRICS + ("GFLOPS", "TEMP", "MEMTEMP")

#: Node manager (EARD) power signature, present in every row.
NODEMGR_COLUMNS = (
    "NODEMGR_DC_NODE_POWER_W", "NODEMGR_DRAM_POWER_W", "NODEMGR_PCK_POWER_W",
    "NODEMGR_MAX_DC_POWER_W", "NODEMGR_MIN_DC_POWER_W", "NODEMGR_TIME_SEC",
    "NODEMGR_AVG_CPUFREQ_KHZ", "NODEMGR_DEF_FREQ_KHZ",
)

#: HEROES plugin (``src/report/heroes.c``) prefix: five ids, max DC power, EARL phases 1..8.
HEROES_ID_COLUMNS = (
    "HEROES_INSTANCE_WORKFLOW_ID", "HEROES_TEMPLATE_WORKFLOW_ID", "HEROES_USER_ID",
    "HEROES_ORGANIZATION_NAME", "HEROES_ORGANIZATION_ID",
)
HEROES_ID_DEFAULTS = ("NO_WRF_ID", "NO_HER_ID", "NO_USR_ID", "NO_PRJ_ID", "NO_ORG_ID")
PHASE_COLUMNS = (
    "COMP_BOUND", "MPI_BOUND", "IO_BOUND", "CPU_BUSY_WAITING", "CPU_GPU_COMP", "CPU_BOUND",
    "MEM_BOUND", "MIX_COMP",
)
HEROES_PREFIX_COLUMNS = HEROES_ID_COLUMNS + ("MAX_POWER_W",) + PHASE_COLUMNS

#: Our one addition, after all of EAR's columns: the names of the columns whose value in this row
#: is an estimate (comma-separated, empty when everything was measured).
ESTIMATED_COLUMN = "EARLITE_ESTIMATED"

GPU_COLUMN_RE = re.compile(r"^GPU(\d+)_([A-Z_]+)$")


def gpu_columns(num_gpus: int, wf: bool = False) -> tuple[str, ...]:
    """GPU block for ``num_gpus`` GPUs (one block per GPU, GPU-major as EAR prints them)."""
    metrics = GPU_METRICS_WF if wf else GPU_METRICS
    return tuple(f"GPU{i}_{m}" for i in range(num_gpus) for m in metrics)


def ear_app_columns(num_gpus: int = 0, extended: bool = True) -> tuple[str, ...]:
    """EAR's application header (non-workflow build) for ``num_gpus`` GPU column blocks."""
    return (JOB_COLUMNS + BASE_COLUMNS + SIGNATURE_COLUMNS
            + (EXTENDED_COLUMNS if extended else ())
            + gpu_columns(num_gpus) + NODEMGR_COLUMNS)


def heroes_app_columns() -> tuple[str, ...]:
    """The HEROES plugin layout: prefix, then EAR's header in single-column GPU mode (one GPU block)."""
    return HEROES_PREFIX_COLUMNS + ear_app_columns(num_gpus=1)


def earlite_app_columns() -> tuple[str, ...]:
    """Our collector's layout: exactly the HEROES plugin layout plus :data:`ESTIMATED_COLUMN`."""
    return heroes_app_columns() + (ESTIMATED_COLUMN,)


#: Per-second sample file (our timeline format; ``;``-separated like EAR's files).
SAMPLE_COLUMNS = (
    "TIMESTAMP", "ELAPSED_SEC", "NODENAME", "JOBID", "STEPID", "CPU_UTIL", "AVG_CPUFREQ_KHZ",
    "PCK_POWER_W", "DRAM_POWER_W", "GPU_POWER_W", "DC_NODE_POWER_W", "GPU_UTIL_PERC",
    "GPU_MEM_USED_MB", "GPU_POWER_W_EACH", "GPU_FREQ_KHZ_EACH", "IO_READ_MBS", "IO_WRITE_MBS",
    ESTIMATED_COLUMN,
)
