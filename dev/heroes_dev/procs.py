"""Processes the stack started, recorded by pid so that ``down`` ends exactly those and nothing else.

A record keeps the pid *and* the process start time: a pid reused by an unrelated process after a reboot
or a crash is never signalled.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import psutil


@dataclass
class ProcessRecord:
    name: str
    pid: int
    create_time: float
    argv: list[str]
    log: str

    def process(self) -> psutil.Process | None:
        """The live process this record describes, or None when it is gone (or the pid was reused)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self.process() is not None


class ProcessBook:
    """The pid records of one component, in ``<state>/run/<component>.json``."""

    def __init__(self, run_dir: Path, component: str):
        self.path = run_dir / f"{component}.json"

    def load(self) -> list[ProcessRecord]:
        if not self.path.exists():
            return []
        return [ProcessRecord(**row) for row in json.loads(self.path.read_text())]

    def save(self, records: list[ProcessRecord]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in records], indent=2))
        tmp.replace(self.path)

    def add(self, record: ProcessRecord) -> None:
        self.save([r for r in self.load() if r.name != record.name] + [record])

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def spawn(
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> psutil.Process:
    """Start a long-running process detached in its own session, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            user=user,
        )
    return psutil.Process(proc.pid)


def family(proc: psutil.Process) -> list[psutil.Process]:
    """The process and all its descendants (as far as they can still be listed)."""
    try:
        return [proc] + proc.children(recursive=True)
    except psutil.Error:
        return [proc]


def terminate(record: ProcessRecord, grace: float = 15.0) -> bool:
    """SIGTERM the recorded process and its children, SIGKILL whatever is left after ``grace`` seconds."""
    proc = record.process()
    if proc is None:
        return False
    members = family(proc)
    for member in members:
        try:
            member.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(members, timeout=grace)
    for member in alive:
        try:
            member.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return True


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, for error messages that show why a component did not start."""
    if not path.exists():
        return f"(no log at {path})"
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 64 * 1024))
        text = fh.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])
