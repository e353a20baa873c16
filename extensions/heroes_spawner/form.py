"""The spawn form: where the server runs (the gateway or an enrolled cluster) and what it asks Slurm for.

Pure functions (unit-tested): ``render_form`` builds the HTML from the clusters the user may use,
``parse_form`` turns the posted fields into ``user_options``, and ``validate`` checks them against the
chosen cluster's partitions (as recorded at enrollment) before anything reaches ``sbatch``.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

GATEWAY = "gateway"
#: cluster and partition names as Slurm and the enrollment API allow them
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULTS = {"cores": 1, "memory_mb": 2048, "minutes": 60, "gpus": 0}
#: hard upper bounds when a partition does not say (keeps a typo from asking for a year)
MAX_MINUTES = 7 * 24 * 60


class OptionsError(ValueError):
    """The user's choices do not fit the cluster; the message is shown on the spawn page."""


@dataclass(frozen=True)
class Choice:
    """A validated request: ``cluster`` is None for the gateway."""

    cluster: str | None
    partition: str = ""
    cores: int = 1
    memory_mb: int = 2048
    minutes: int = 60
    gpus: int = 0


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


def _int_field(options: dict, name: str) -> int:
    value = options.get(name, DEFAULTS[name])
    try:
        number = int(str(value).strip())
    except ValueError:
        raise OptionsError(f"{name.replace('_', ' ')} must be a whole number, not {str(value)[:20]!r}") from None
    if number < 0:
        raise OptionsError(f"{name.replace('_', ' ')} must not be negative")
    return number


def parse_form(formdata: dict[str, list[str]]) -> dict:
    """Posted fields -> ``user_options`` (strings kept as typed; ``validate`` checks them)."""
    first = {key: (values[0] if values else "") for key, values in formdata.items()}
    options = {"target": first.get("target", GATEWAY) or GATEWAY}
    if options["target"] != GATEWAY:
        for key in ("partition", "cores", "memory_mb", "minutes", "gpus"):
            if first.get(key, "") != "":
                options[key] = first[key]
    return options


def validate(options: dict, partitions: list[dict], default_partition: str = "") -> Choice:
    """Check ``user_options`` for a cluster against its partitions; a clear ``OptionsError`` otherwise."""
    target = options.get("target") or GATEWAY
    if target == GATEWAY:
        return Choice(cluster=None)
    if not target.startswith("cluster:") or not _NAME.match(target[8:]):
        raise OptionsError(f"unknown target {target[:80]!r}: choose the gateway or one of your clusters")
    cluster = target[8:]
    by_name = {p["name"]: p for p in partitions}
    partition = options.get("partition") or default_partition or next(
        (p["name"] for p in partitions if p.get("default")), "")
    if partition not in by_name:
        known = ", ".join(sorted(by_name)) or "none recorded"
        raise OptionsError(f"cluster {cluster} has no partition {str(partition)[:40]!r} (partitions: {known})")
    part = by_name[partition]
    cores, memory_mb, minutes, gpus = (_int_field(options, n) for n in ("cores", "memory_mb", "minutes", "gpus"))
    if cores < 1:
        raise OptionsError("ask for at least 1 core")
    if part.get("cpus_per_node") and cores > int(part["cpus_per_node"]):
        raise OptionsError(f"partition {partition} has {part['cpus_per_node']} cores per node; you asked for {cores}")
    if memory_mb < 64:
        raise OptionsError("ask for at least 64 MB of memory")
    if part.get("memory_mb") and memory_mb > int(part["memory_mb"]):
        raise OptionsError(f"partition {partition} has {part['memory_mb']} MB per node; you asked for {memory_mb} MB")
    if minutes < 1:
        raise OptionsError("ask for at least 1 minute")
    limit = parse_time_limit(str(part.get("time_limit", ""))) or MAX_MINUTES
    if minutes > limit:
        raise OptionsError(f"partition {partition} allows at most {limit} minutes; you asked for {minutes}")
    if gpus > gpu_count(str(part.get("gres", ""))):
        raise OptionsError(f"partition {partition} has {gpu_count(str(part.get('gres', '')))} GPUs per node; "
                           f"you asked for {gpus}")
    return Choice(cluster=cluster, partition=partition, cores=cores, memory_mb=memory_mb, minutes=minutes, gpus=gpus)


def render_form(clusters: list[dict]) -> str:
    """The HTML of the form. ``clusters``: ``{"name", "partitions": [...], "default_partition",
    "estimate"}`` per cluster the user may use (``estimate``: text from ``sbatch --test-only`` or '')."""
    esc = html.escape
    options = ['<option value="gateway" selected>the gateway (JupyterLab next to the hub)</option>']
    partition_options = []
    notes = []
    for cluster in clusters:
        name = esc(cluster["name"])
        options.append(f'<option value="cluster:{name}">cluster {name} (Slurm job)</option>')
        for part in cluster.get("partitions", []):
            label = (f"{esc(part['name'])} on {name}: {part.get('cpus_per_node', '?')} cores, "
                     f"{part.get('memory_mb', '?')} MB, limit {esc(str(part.get('time_limit', '?')))}"
                     + (f", {gpu_count(str(part.get('gres', '')))} GPUs" if gpu_count(str(part.get('gres', ''))) else ""))
            selected = " selected" if part["name"] == cluster.get("default_partition") else ""
            partition_options.append(f'<option value="{esc(part["name"])}" data-cluster="{name}"{selected}>'
                                     f'{label}</option>')
        if cluster.get("estimate"):
            notes.append(f'<li data-cluster="{name}">cluster {name}: {esc(cluster["estimate"])}</li>')
    return f"""
<div class="form-group">
  <label for="heroes-target">Run JupyterLab on</label>
  <select class="form-control" id="heroes-target" name="target">{''.join(options)}</select>
</div>
<fieldset id="heroes-cluster-fields">
  <div class="form-group"><label for="heroes-partition">Partition</label>
    <select class="form-control" id="heroes-partition" name="partition">{''.join(partition_options)}</select></div>
  <div class="form-group"><label for="heroes-cores">Cores</label>
    <input class="form-control" id="heroes-cores" name="cores" type="number" min="1" value="{DEFAULTS['cores']}"></div>
  <div class="form-group"><label for="heroes-memory">Memory (MB)</label>
    <input class="form-control" id="heroes-memory" name="memory_mb" type="number" min="64" value="{DEFAULTS['memory_mb']}"></div>
  <div class="form-group"><label for="heroes-minutes">Time (minutes)</label>
    <input class="form-control" id="heroes-minutes" name="minutes" type="number" min="1" value="{DEFAULTS['minutes']}"></div>
  <div class="form-group"><label for="heroes-gpus">GPUs</label>
    <input class="form-control" id="heroes-gpus" name="gpus" type="number" min="0" value="{DEFAULTS['gpus']}"></div>
  <p>Expected start (<code>sbatch --test-only</code>, {DEFAULTS['cores']} core for {DEFAULTS['minutes']} minutes):</p>
  <ul id="heroes-estimates">{''.join(notes) or '<li>no estimate available</li>'}</ul>
</fieldset>
"""
