"""What a workflow step's batch job is: its sbatch options, environment, command argv and launcher words.
The text of the script comes from the one renderer (``clusterjobs/script.py``), which quotes every value
exactly once; this module only decides which values and which fixed lines of ours go where.

Layout of an instance on the cluster, below the account's work dir::

    workflows/<instance_id>/            the job's working directory (--chdir), bound to /mnt in containers
        <template files>                inline files of the template (scripts)
        inputs/<param>/<file name>      staged inputs
        outputs/                        where steps write results (staged back by the output globs)
        logs/<step>.log                 stdout + stderr of each step
        .heroes/<step>.jobid            written by the job at its start (crash recovery looks for it)

The job name is ``heroes.<instance_id>.<step>``: only ``[a-z0-9._-]`` so ``squeue --name`` and
``sacct --name`` find it after a crash.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from ..clusterjobs.script import BatchScript, Shell, shell_line
from .templates import Step, Template, render_element, text_of

CONTAINER_MOUNT = "/mnt"


def job_name(instance_id: str, step: str) -> str:
    return f"heroes.{instance_id}.{step}"


def instance_dir(work_root: str, instance_id: str) -> str:
    return posixpath.join(work_root, "workflows", instance_id)


def log_path(step: str) -> str:
    return f"logs/{step}.log"


#: where the engine stages the EAR-lite collector (a zipapp of heroes_energy), relative to the instance dir
COLLECTOR_PATH = ".heroes/heroes_energy.pyz"


def energy_dir(step: str) -> str:
    """Where a step's collector writes its EAR CSV and samples (relative to the instance dir)."""
    return f".heroes/energy-{step}"


def energy_wrapper(energy_command: tuple[str, ...] | list[str], step: str) -> list[str]:
    """The collector's argv prefix for ``step``: ``{energy_dir}`` and ``{collector}`` filled in. Both are
    relative paths, so they mean the instance dir on the host and /mnt inside a container alike."""
    return [e.replace("{energy_dir}", energy_dir(step)).replace("{collector}", COLLECTOR_PATH)
            for e in energy_command]


@dataclass
class Context:
    """Everything about one instance a script needs (plain values, no ORM)."""

    instance_id: str
    template_id: str
    template: Template
    values: dict[str, Any]
    workdir: str              # the instance dir, relative to the account's home or absolute
    user_id: str
    username: str
    organization: str
    organization_id: str
    runtime: str              # charliecloud | apptainer | none
    image_path: str           # on the cluster (empty for none)
    default_partition: str = ""
    energy_command: tuple[str, ...] = ()
    #: per step, sbatch options recorded at submission that replace the template's (accepted right-sizing
    #: ``--time``/``--mem``, an accepted ``--cpu-freq``); see ``accepted_options``
    step_options: dict[str, list[str]] = field(default_factory=dict)


#: the sbatch options a submission may set per step instead of the template's values
OVERRIDABLE = ("--time", "--mem", "--cpu-freq")


def accepted_options(recorded: list[str] | None) -> dict[str, str]:
    """``{"--time": "5", ...}`` from a step's recorded options (other options, e.g. the job name, are the
    template's and are rendered again). The values were validated as integers when the submission was taken."""
    out = {}
    for option in recorded or []:
        name, _, value = str(option).partition("=")
        if name not in OVERRIDABLE:
            continue
        number = value[:-1] if name == "--mem" and value.endswith("M") else value
        if number.isdigit():
            out[name] = value
    return out


def environment(ctx: Context, step: Step) -> dict[str, str]:
    """The HEROES_* variables of a step (the names the seed's EAR plugin reads, plus the parameters)."""
    env = {
        "HEROES_TEMPLATE_WORKFLOW_ID": ctx.template_id,
        "HEROES_INSTANCE_WORKFLOW_ID": ctx.instance_id,
        "HEROES_USER_ID": ctx.user_id,
        "HEROES_USER_NAME": ctx.username,
        "HEROES_ORGANIZATION_NAME": ctx.organization,
        "HEROES_ORGANIZATION_ID": ctx.organization_id,
        "HEROES_TEMPLATE_NAME": ctx.template.title or ctx.template.name,
        "HEROES_STEP_NAME": step.name,
    }
    for param in ctx.template.parameters:
        if param.name in ctx.values:
            env[f"HEROES_PARAM_{param.name.upper()}"] = text_of(param, ctx.values[param.name])
    return env


def command_argv(ctx: Context, step: Step) -> list[str]:
    """The step's argv with placeholders replaced (each element stays one element)."""
    texts = {p.name: text_of(p, ctx.values[p.name]) for p in ctx.template.parameters if p.name in ctx.values}
    texts.update(instance_id=ctx.instance_id, step=step.name, outputs="outputs", inputs="inputs")
    return [render_element(element, texts) for element in step.command]


#: the instance dir as the container's working dir: fixed shell text of ours ("$PWD" is expanded on the node)
BIND_PWD = Shell('"$PWD":' + CONTAINER_MOUNT)


def launcher(ctx: Context, resources: dict[str, Any]) -> list[str]:
    """The words before the step's argv: plain words are values (the renderer quotes them), ``Shell`` words
    are ours (``"$PWD":/mnt``)."""
    words: list[str] = []
    if resources["tasks"] > 1 or resources["nodes"] > 1:
        words.append("srun")
    if ctx.runtime == "charliecloud":
        return words + ["ch-run", "-b", BIND_PWD, "-c", CONTAINER_MOUNT, ctx.image_path, "--"]
    if ctx.runtime == "apptainer":
        return words + ["apptainer", "exec", "--bind", BIND_PWD, "--pwd", CONTAINER_MOUNT, ctx.image_path]
    return words


#: before the exports: what the script is, and unset variables are errors (no SLURM_JOB_ID -> no run)
STEP_PREAMBLE = ("# HEROES workflow step, rendered by the gateway: every value below is shell-quoted.", "set -u")


def jobid_path(step: str) -> str:
    """Where the job writes its id at its start (relative to the instance dir; crash recovery reads it)."""
    return f".heroes/{step}.jobid"


def step_start(step: str) -> tuple[str, ...]:
    """Fixed lines of ours before the command: the folders, the job id file, the start line of the log."""
    return (Shell("mkdir -p .heroes outputs"),
            shell_line("printf '%s\\n' \"$SLURM_JOB_ID\" > {}", jobid_path(step)),
            shell_line("printf '[heroes] step %s job %s on %s at %s\\n' {} \"$SLURM_JOB_ID\" \"$(hostname)\" "
                       "\"$(date -Is)\" >&2", step))


def step_end(step: str) -> tuple[str, ...]:
    """Fixed lines of ours after the command: its exit status in the log, and as the job's."""
    return (Shell("rc=$?"),
            shell_line("printf '[heroes] step %s exited %s at %s\\n' {} \"$rc\" \"$(date -Is)\" >&2", step),
            Shell("exit $rc"))


def render(ctx: Context, step: Step, dependency_job_ids: list[str]) -> tuple[str, list[str]]:
    """(batch script, sbatch options) of ``step``."""
    resources = step.resources.resolved(ctx.values)
    options = [
        f"--job-name={job_name(ctx.instance_id, step.name)}",
        f"--chdir={ctx.workdir}",
        f"--output={log_path(step.name)}",
        f"--nodes={resources['nodes']}",
        f"--ntasks={resources['tasks']}",
        f"--cpus-per-task={resources['cpus_per_task']}",
        f"--mem={resources['memory_mb']}M",
        f"--time={resources['time_minutes']}",
        "--kill-on-invalid-dep=yes",
    ]
    accepted = accepted_options(ctx.step_options.get(step.name))
    if accepted:
        options = [o for o in options if o.partition("=")[0] not in accepted]
        options += [f"{name}={accepted[name]}" for name in OVERRIDABLE if name in accepted]
    partition = resources["partition"] or ctx.default_partition
    if partition:
        options.append(f"--partition={partition}")
    if resources["gpus"]:
        options.append(f"--gpus={resources['gpus']}")
    if dependency_job_ids:
        options.append("--dependency=afterok:" + ":".join(dependency_job_ids))
    argv = command_argv(ctx, step)
    if step.energy and ctx.energy_command:
        argv = energy_wrapper(ctx.energy_command, step.name) + argv
    script = BatchScript(options=tuple(options), options_in_script=False, preamble=STEP_PREAMBLE,
                         env=environment(ctx, step), body=step_start(step.name),
                         launcher=tuple(launcher(ctx, resources)), argv=tuple(argv), exec_command=False,
                         epilogue=step_end(step.name))
    return script.text(), script.command_line_options()
