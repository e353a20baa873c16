"""Resources of an interactive job checked against the cluster's partitions (as recorded at enrollment)
before anything reaches ``sbatch``; the refusal names the rule. Pure functions (unit-tested)."""
from __future__ import annotations

from typing import Any

from .kinds import JobSpecError
from .script import Resources

#: hard upper bound when a partition does not say (keeps a typo from asking for a year)
MAX_MINUTES = 7 * 24 * 60


def parse_time_limit(text: str) -> int | None:
    """Slurm's ``[days-]hours:minutes:seconds`` / ``minutes`` / ``infinite`` -> minutes (None: no limit)."""
    text = (text or "").strip().lower()
    if not text or text in ("infinite", "unlimited", "n/a"):
        return None
    days = 0
    if "-" in text:
        day_part, text = text.split("-", 1)
        days = int(day_part)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = parts[-3:]
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def gpu_count(gres: str) -> int:
    """``gpu:2`` / ``gpu:a100:4(S:0)`` -> GPUs per node (0 when the partition has none)."""
    total = 0
    for item in (gres or "").split(","):
        fields = item.split("(")[0].split(":")
        if fields and fields[0] == "gpu" and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def _number(options: dict[str, Any], name: str, default: int) -> int:
    value = options.get(name, default)
    if value in (None, ""):
        value = default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise JobSpecError(f"{name.replace('_', ' ')} must be a whole number, not {str(value)[:20]!r}", name) from None
    if number < 0:
        raise JobSpecError(f"{name.replace('_', ' ')} must not be negative", name)
    return number


def check_resources(options: dict[str, Any], partitions: list[dict], default_partition: str = "",
                    cluster: str = "the cluster") -> Resources:
    """``{"partition", "cores", "memory_mb", "minutes", "gpus"}`` (strings as typed in a form are fine)
    checked against ``partitions``; a clear ``JobSpecError`` otherwise."""
    by_name = {p["name"]: p for p in partitions}
    partition = options.get("partition") or default_partition or next(
        (p["name"] for p in partitions if p.get("default")), "")
    if partition not in by_name:
        known = ", ".join(sorted(by_name)) or "none recorded"
        raise JobSpecError(f"cluster {cluster} has no partition {str(partition)[:40]!r} (partitions: {known})", "partition")
    part = by_name[partition]
    cores = _number(options, "cores", 1)
    memory_mb = _number(options, "memory_mb", 2048)
    minutes = _number(options, "minutes", 60)
    gpus = _number(options, "gpus", 0)
    if cores < 1:
        raise JobSpecError("ask for at least 1 core", "cores")
    if part.get("cpus_per_node") and cores > int(part["cpus_per_node"]):
        raise JobSpecError(f"partition {partition} has {part['cpus_per_node']} cores per node; you asked for {cores}", "cores")
    if memory_mb < 64:
        raise JobSpecError("ask for at least 64 MB of memory", "memory_mb")
    if part.get("memory_mb") and memory_mb > int(part["memory_mb"]):
        raise JobSpecError(f"partition {partition} has {part['memory_mb']} MB per node; you asked for {memory_mb} MB", "memory_mb")
    if minutes < 1:
        raise JobSpecError("ask for at least 1 minute", "minutes")
    limit = parse_time_limit(str(part.get("time_limit", ""))) or MAX_MINUTES
    if minutes > limit:
        raise JobSpecError(f"partition {partition} allows at most {limit} minutes; you asked for {minutes}", "minutes")
    if gpus > gpu_count(str(part.get("gres", ""))):
        raise JobSpecError(f"partition {partition} has {gpu_count(str(part.get('gres', '')))} GPUs per node; "
                           f"you asked for {gpus}", "gpus")
    return Resources(partition=partition, cores=cores, memory_mb=memory_mb, minutes=minutes, gpus=gpus)
