"""The one batch-script renderer: pure functions, no I/O (unit-tested). Every kind's script comes from here:
workflow steps (``workflows/render.py``), JupyterLab servers, kernels, and the planning-only script of
``sbatch --test-only`` (``decision/wait.py``).

Every value that reaches a script is written here, quoted exactly once: ``#SBATCH`` options (one argv-style
token each, refused when it holds a line break or NUL), ``export NAME=<shlex-quoted value>`` lines (names
checked), the command's argv (each element ``shlex.quote``d), and values placed into fixed lines of ours with
:func:`shell_line`. Kinds give plain values plus constants of their own (:class:`Shell`); they never build
shell text from input themselves. A NUL is refused everywhere: bash drops it silently and sbatch refuses a
script that holds one, so such a value could never arrive as given.

The script crosses SSH on stdin and ``sbatch`` reads it as a file, so nothing is interpolated into a command
line. Options go EITHER into ``#SBATCH`` lines (JupyterLab, kernels: the script is the whole request) OR onto
sbatch's argv (workflow steps: the options are recorded with the step and replayed), never both; see
:class:`BatchScript`.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: environment variable names we are willing to write into a script
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: partition names as Slurm and the enrollment API allow them
PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: what ``render_script`` puts before the exports unless told otherwise
DEFAULT_PREAMBLE = ("set -eu", "umask 077")


class ScriptError(ValueError):
    """A value cannot be written into a batch script safely."""


class Shell(str):
    """Fixed shell text of ours, written as is: a launcher word such as ``"$PWD":/mnt`` or a line of a body.

    Only constants of the calling module and :func:`shell_line` make one; a value (template parameter, user
    name, path) must never be wrapped in it - values are plain strings, and plain strings get quoted."""


def quote(value: object) -> str:
    """One value as one shell word (``shlex.quote``); a NUL is refused (see the module docstring)."""
    text = str(value)
    if "\x00" in text:
        raise ScriptError("a value in a batch script cannot contain a NUL character")
    return shlex.quote(text)


def shell_line(fmt: str, *values: object) -> Shell:
    """A line of ours: ``fmt`` is a constant with ``{}`` slots (shell braces doubled), each value is quoted
    into its slot, so the line's shell syntax is ours and every value stays one word."""
    return Shell(fmt.format(*(quote(v) for v in values)))


def quoted(argv: Sequence[object]) -> str:
    """argv as one command line: plain elements quoted, :class:`Shell` words of ours as they are."""
    return " ".join(word if isinstance(word, Shell) else quote(word) for word in argv)


def format_minutes(minutes: int) -> str:
    """Slurm's ``[days-]hours:minutes:seconds``."""
    days, rest = divmod(int(minutes), 24 * 60)
    hours, mins = divmod(rest, 60)
    return (f"{days}-" if days else "") + f"{hours:02d}:{mins:02d}:00"


def check_option(option: str) -> str:
    """One ``#SBATCH`` / sbatch argv option, refused when it could start a second line (or holds a NUL)."""
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


def export_lines(env: Mapping[str, str]) -> list[str]:
    """``export NAME=value`` lines, names checked and values quoted, in name order (stable scripts)."""
    lines = []
    for name in sorted(env):
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ScriptError(f"environment variable name {name!r} is not allowed")
        lines.append(f"export {name}={quote(env[name])}")
    return lines


@dataclass(frozen=True)
class BatchScript:
    """The parts of one batch script, in the order they run; :meth:`text` is the only place they become shell.

    ``options`` are written as ``#SBATCH`` lines when ``options_in_script``; otherwise the script has none and
    the caller hands :meth:`command_line_options` to sbatch's argv (where the connector quotes each element).
    ``preamble``, ``body`` and ``epilogue`` are fixed lines of ours (values only through :func:`shell_line`).
    The command is ``launcher`` + ``argv``: ``exec``'d (the batch shell becomes it, so signals reach it) or run
    so that the ``epilogue`` sees its exit status in ``$?``.
    """

    options: Sequence[str] = ()
    options_in_script: bool = True
    preamble: Sequence[str] = DEFAULT_PREAMBLE
    env: Mapping[str, str] = field(default_factory=dict)
    body: Sequence[str] = ()
    launcher: Sequence[str] = ()
    argv: Sequence[str] = ()
    exec_command: bool = True
    epilogue: Sequence[str] = ()

    def command_line_options(self) -> list[str]:
        """The options for sbatch's argv (none when they are ``#SBATCH`` lines of the script)."""
        return [] if self.options_in_script else [check_option(str(o)) for o in self.options]

    def text(self) -> str:
        lines = ["#!/bin/bash"]
        if self.options_in_script:
            lines += [f"#SBATCH {check_option(str(o))}" for o in self.options]
        lines += [*self.preamble, *export_lines(self.env), *self.body]
        if self.argv:
            lines.append(("exec " if self.exec_command else "") + quoted([*self.launcher, *self.argv]))
        lines += self.epilogue
        return "\n".join(lines) + "\n"


def render_script(sbatch_options: list[str], env: dict[str, str] | None = None, exec_argv: list[str] | None = None,
                  *, preamble: list[str] | tuple[str, ...] = DEFAULT_PREAMBLE) -> str:
    """``#!/bin/bash``, ``#SBATCH`` lines, the preamble (fixed text of ours), quoted exports, ``exec`` argv."""
    return BatchScript(options=tuple(sbatch_options), preamble=tuple(preamble), env=dict(env or {}),
                       argv=tuple(exec_argv or ())).text()
