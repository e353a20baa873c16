"""The one batch-script renderer: pure functions, no I/O (unit-tested).

Every value that reaches a script is written here: ``#SBATCH`` options (one argv-style token each, refused
when it holds a line break), ``export NAME=<shlex-quoted value>`` lines (names checked), and the final
``exec`` argv, each element ``shlex.quote``d. Kinds give plain values; they never build shell text from
user input themselves. The script crosses SSH on stdin and ``sbatch`` reads it as a file, so nothing is
interpolated into a command line.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

#: environment variable names we are willing to write into a script
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: partition names as Slurm and the enrollment API allow them
PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ScriptError(ValueError):
    """A value cannot be written into a batch script safely."""


def format_minutes(minutes: int) -> str:
    """Slurm's ``[days-]hours:minutes:seconds``."""
    days, rest = divmod(int(minutes), 24 * 60)
    hours, mins = divmod(rest, 60)
    return (f"{days}-" if days else "") + f"{hours:02d}:{mins:02d}:00"


def check_option(option: str) -> str:
    """One ``#SBATCH`` / sbatch argv option, refused when it could start a second line."""
    if "\n" in option or "\r" in option or "\x00" in option:
        raise ScriptError("batch options must not contain line breaks")
    return option


@dataclass(frozen=True)
class Resources:
    """What one single-node interactive job asks Slurm for (validated against the partition beforehand)."""

    partition: str = ""
    cores: int = 1
    memory_mb: int = 2048
    minutes: int = 60
    gpus: int = 0

    def sbatch_options(self, job_name: str, output: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
        options = [f"--job-name={job_name}"]
        if self.partition:
            if not PARTITION.match(self.partition):
                raise ScriptError(f"partition {self.partition[:40]!r} is not a Slurm partition name")
            options.append(f"--partition={self.partition}")
        options += ["--nodes=1", "--ntasks=1", f"--cpus-per-task={int(self.cores)}", f"--mem={int(self.memory_mb)}M",
                    f"--time={format_minutes(self.minutes)}", f"--output={output}"]
        if self.gpus:
            options.append(f"--gres=gpu:{int(self.gpus)}")
        options += list(extra)
        return [check_option(o) for o in options]


def export_lines(env: dict[str, str]) -> list[str]:
    """``export NAME=value`` lines, names checked and values quoted, in name order (stable scripts)."""
    lines = []
    for name in sorted(env):
        if not ENV_NAME.match(name):
            raise ScriptError(f"environment variable name {name!r} is not allowed")
        lines.append(f"export {name}={shlex.quote(str(env[name]))}")
    return lines


def quoted(argv: list[str] | tuple[str, ...]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def render_script(sbatch_options: list[str], env: dict[str, str] | None = None, exec_argv: list[str] | None = None,
                  *, preamble: list[str] | tuple[str, ...] = ("set -eu", "umask 077")) -> str:
    """``#!/bin/bash``, ``#SBATCH`` lines, the preamble (fixed text of ours), quoted exports, ``exec`` argv."""
    lines = ["#!/bin/bash", *[f"#SBATCH {check_option(o)}" for o in sbatch_options], *preamble]
    lines += export_lines(env or {})
    if exec_argv:
        lines.append("exec " + quoted(exec_argv))
    return "\n".join(lines) + "\n"
