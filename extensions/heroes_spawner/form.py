"""The spawn form: where the server runs (the gateway or an enrolled cluster) and what it asks Slurm for.

Pure functions (unit-tested): ``render_form`` builds the HTML from the clusters the user may use (as the
service lists them), ``parse_form`` turns the posted fields into ``user_options`` and ``target_cluster`` /
``resources`` read them back. The resources are checked against the partitions by the service when it
submits (``heroes_service.clusterjobs.resources``), so the hub and the service can never disagree on a rule;
the service's refusal is shown on the spawn page.
"""
from __future__ import annotations

import html
import re

from heroes_service.clusterjobs.resources import gpu_count

GATEWAY = "gateway"
#: cluster and partition names as Slurm and the enrollment API allow them
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULTS = {"cores": 1, "memory_mb": 2048, "minutes": 60, "gpus": 0}


class OptionsError(ValueError):
    """The user's choices do not fit the cluster; the message is shown on the spawn page."""


def parse_form(formdata: dict[str, list[str]]) -> dict:
    """Posted fields -> ``user_options`` (strings kept as typed; the service checks them)."""
    first = {key: (values[0] if values else "") for key, values in formdata.items()}
    options = {"target": first.get("target", GATEWAY) or GATEWAY}
    if options["target"] != GATEWAY:
        for key in ("partition", "cores", "memory_mb", "minutes", "gpus"):
            if first.get(key, "") != "":
                options[key] = first[key]
    return options


def target_cluster(options: dict) -> str | None:
    """The cluster named by ``user_options['target']`` (None: the gateway); ``OptionsError`` for anything else."""
    target = options.get("target") or GATEWAY
    if target == GATEWAY:
        return None
    if not target.startswith("cluster:") or not _NAME.match(target[8:]):
        raise OptionsError(f"unknown target {target[:80]!r}: choose the gateway or one of your clusters")
    return target[8:]


def resources(options: dict) -> dict:
    """The resource fields of ``user_options`` as typed (the service checks them against the partition)."""
    return {key: options[key] for key in ("partition", "cores", "memory_mb", "minutes", "gpus")
            if options.get(key, "") != ""}


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
