"""Slurm over a ``ClusterConnector``, read in machine formats only.

``sinfo``/``squeue`` have no ``--parsable``: we give them an explicit ``-o`` format with ``|`` between
fields and the free-text field (job name) LAST, split with a bounded ``maxsplit`` so a ``|`` inside a
job name cannot shift columns. ``sacct`` gets ``--parsable2 --noheader`` with the same rule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .connector import ClusterConnector, CommandResult
from .errors import CommandFailed

#: states in which a job still occupies (or waits for) the cluster
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                           "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "REQUEUE_HOLD", "REQUEUE_FED",
                           "RESV_DEL_HOLD", "SPECIAL_EXIT"})
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                          "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"})

SQUEUE_FIELDS = ("job_id", "state", "user", "partition", "reason", "nodes", "elapsed", "time_limit", "name")
_SQUEUE_FORMAT = "%i|%T|%u|%P|%r|%N|%M|%l|%j"
SACCT_FIELDS = ("job_id", "state", "user", "partition", "exit_code", "nodes", "elapsed", "start", "end",
                "submit", "cluster", "alloc_tres", "energy", "name")
#: AllocTRES and ConsumedEnergyRaw feed the usage ledger (clusterjobs/ledger.py); the job name stays last
_SACCT_FORMAT = ("JobID,State,User,Partition,ExitCode,NodeList,Elapsed,Start,End,Submit,Cluster,AllocTRES,"
                 "ConsumedEnergyRaw,JobName")


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    available: bool
    time_limit: str
    nodes: int
    cpus_per_node: int
    memory_mb: int
    gres: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Job:
    """One row of ``squeue`` or ``sacct``; ``state`` is normalised (``CANCELLED by 1003`` -> ``CANCELLED``)."""

    job_id: str
    state: str
    user: str
    partition: str = ""
    nodes: str = ""
    name: str = ""
    reason: str = ""
    elapsed: str = ""
    time_limit: str = ""
    exit_code: int | None = None
    signal: int | None = None
    start: str = ""
    end: str = ""
    submit: str = ""
    cluster: str = ""
    alloc_tres: str = ""
    energy_j: float | None = None
    raw_state: str = field(default="", compare=False)


def _int(text: str, default: int = 0) -> int:
    match = re.match(r"\d+", text or "")
    return int(match.group()) if match else default


def parse_sinfo(text: str) -> list[Partition]:
    """Rows of ``sinfo -h -o '%P|%a|%l|%D|%c|%m|%G'`` merged per partition."""
    merged: dict[str, dict] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, avail, limit, nodes, cpus, mem, gres = (line.split("|") + [""] * 7)[:7]
        default = name.endswith("*")
        name = name.rstrip("*")
        row = merged.setdefault(name, {"name": name, "default": False, "available": False, "time_limit": limit,
                                       "nodes": 0, "cpus_per_node": 0, "memory_mb": 0, "gres": ""})
        row["default"] |= default
        row["available"] |= avail == "up"
        row["nodes"] += _int(nodes)
        row["cpus_per_node"] = max(row["cpus_per_node"], _int(cpus))
        row["memory_mb"] = max(row["memory_mb"], _int(mem))
        if gres and gres != "(null)":
            row["gres"] = gres
    return [Partition(**row) for row in merged.values()]


def normalise_state(raw: str) -> str:
    return (raw.split() or [""])[0].rstrip("+")


def parse_squeue(text: str) -> list[Job]:
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", len(SQUEUE_FIELDS) - 1)
        if len(parts) < len(SQUEUE_FIELDS):
            continue
        row = dict(zip(SQUEUE_FIELDS, parts))
        jobs.append(Job(job_id=row["job_id"], state=normalise_state(row["state"]), raw_state=row["state"],
                        user=row["user"], partition=row["partition"], reason=row["reason"], nodes=row["nodes"],
                        elapsed=row["elapsed"], time_limit=row["time_limit"], name=row["name"]))
    return jobs


def _energy(text: str) -> float | None:
    """``ConsumedEnergyRaw`` in joules; None where the cluster does not measure (empty or 0)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def parse_sacct(text: str) -> list[Job]:
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", len(SACCT_FIELDS) - 1)
        if len(parts) < len(SACCT_FIELDS):
            continue
        row = dict(zip(SACCT_FIELDS, parts))
        code, _, sig = row["exit_code"].partition(":")
        jobs.append(Job(job_id=row["job_id"], state=normalise_state(row["state"]), raw_state=row["state"],
                        user=row["user"], partition=row["partition"], nodes=row["nodes"], elapsed=row["elapsed"],
                        exit_code=_int(code, 0) if code else None, signal=_int(sig, 0) if sig else None,
                        start=row["start"], end=row["end"], submit=row["submit"], cluster=row["cluster"],
                        alloc_tres=row["alloc_tres"], energy_j=_energy(row["energy"]), name=row["name"]))
    return jobs


#: MiB per unit of Slurm's memory sizes (``convert_num_unit``: base 1024; a bare number is KiB)
MIB_PER_UNIT = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 ** 2, "P": 1024.0 ** 3}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGTP]?)", flags=re.IGNORECASE)


def parse_size_mb(text: str) -> float | None:
    """``2048K``, ``1.50M``, ``4G`` (sacct's MaxRSS, ReqMem without its n/c suffix) in MiB; None when empty
    or not a size."""
    match = _SIZE.fullmatch((text or "").strip())
    if not match:
        return None
    return float(match.group(1)) * MIB_PER_UNIT[(match.group(2) or "K").upper()]


def parse_peak_memory(text: str) -> dict[str, float]:
    """``sacct -o JobID,MaxRSS`` rows (allocation and steps: ``12``, ``12.batch``, ``12.0``, ``12.extern``)
    -> job id -> the largest MaxRSS of its steps in MiB. Jobs whose steps all report nothing or 0 are left out:
    a job too short for one accounting sample has no measured peak, not a peak of 0."""
    peaks: dict[str, float] = {}
    for line in text.splitlines():
        job_step, _, rss = line.partition("|")
        job_id = job_step.split(".", 1)[0].strip()
        value = parse_size_mb(rss)
        if job_id and value:
            peaks[job_id] = max(peaks.get(job_id, 0.0), value)
    return peaks


def parse_version(text: str) -> str:
    """``slurm-wlm 22.05.8`` / ``slurm 23.11.4`` -> ``22.05.8``."""
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    if not match:
        raise ValueError(f"no Slurm version in {text.strip()[:100]!r}")
    return match.group(1)


def parse_job_id(text: str) -> str:
    """``sbatch --parsable`` prints ``<id>`` or ``<id>;<cluster>`` (last line)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    job_id = lines[-1].split(";")[0].strip() if lines else ""
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {text.strip()[:200]!r}")
    return job_id


class SlurmClient:
    """Slurm commands on one cluster, as the connector's account. Every call is one SSH command."""

    def __init__(self, connector: ClusterConnector, *, timeout: float = 60):
        self.connector = connector
        self.timeout = timeout

    def _run(self, argv: list[str], stdin: str | None = None) -> CommandResult:
        return self.connector.run(argv, stdin=stdin, timeout=self.timeout).check()

    def version(self) -> str:
        return parse_version(self._run(["sinfo", "--version"]).stdout)

    def cluster_name(self) -> str:
        """``ClusterName`` of the controller (what ``sacct -M`` and job records call it)."""
        out = self._run(["scontrol", "show", "config"]).stdout
        for line in out.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ClusterName":
                return value.strip()
        return ""

    def partitions(self) -> list[Partition]:
        return parse_sinfo(self._run(["sinfo", "--noheader", "-o", "%P|%a|%l|%D|%c|%m|%G"]).stdout)

    def queue(self, *, job_ids: list[str] | None = None, user: str | None = None,
              name: str | None = None) -> list[Job]:
        """Live jobs (one ``squeue``). ``job_ids`` filters client-side so a purged id is no error."""
        argv = ["squeue", "--noheader", "--states=all", "-o", _SQUEUE_FORMAT]
        if user:
            argv += ["--user", user]
        if name:
            argv += ["--name", name]
        jobs = parse_squeue(self._run(argv).stdout)
        if job_ids is not None:
            wanted = {str(j) for j in job_ids}
            jobs = [j for j in jobs if j.job_id in wanted]
        return jobs

    def accounting(self, *, job_ids: list[str] | None = None, name: str | None = None,
                   user: str | None = None, all_users: bool = False, since: str | None = None,
                   steps: bool = False) -> list[Job]:
        """Finished (and running) jobs from ``sacct --parsable2``; allocations only unless ``steps``."""
        argv = ["sacct", "--parsable2", "--noheader", "-o", _SACCT_FORMAT]
        if not steps:
            argv.append("-X")
        if job_ids:
            argv += ["-j", ",".join(str(j) for j in job_ids)]
        if name:
            argv += ["--name", name]
        if user:
            argv += ["--user", user]
        elif all_users:
            argv.append("--allusers")
        if since:
            argv += ["--starttime", since]
        elif not job_ids:
            argv += ["--starttime", "now-7days"]
        return parse_sacct(self._run(argv).stdout)

    def peak_memory(self, job_ids: list[str]) -> dict[str, float]:
        """Largest MaxRSS (MiB) among each job's steps, from the accounting (jobacct_gather) records."""
        if not job_ids:
            return {}
        argv = ["sacct", "--parsable2", "--noheader", "--allusers", "-o", "JobID,MaxRSS",
                "-j", ",".join(str(j) for j in job_ids)]
        return parse_peak_memory(self._run(argv).stdout)

    def submit(self, script: str, options: list[str] | tuple[str, ...] = ()) -> str:
        """``sbatch --parsable [options]`` with the batch script on stdin; returns the job id."""
        result = self.connector.run(["sbatch", "--parsable", *options], stdin=script, timeout=self.timeout)
        if result.rc != 0:
            raise CommandFailed(result.command, result.rc, result.stderr or result.stdout)
        return parse_job_id(result.stdout)

    def cancel(self, job_ids: list[str]) -> CommandResult:
        """``scancel`` (result returned, not checked: cancelling a finished job is not an error here)."""
        return self.connector.run(["scancel", *[str(j) for j in job_ids]], timeout=self.timeout)
