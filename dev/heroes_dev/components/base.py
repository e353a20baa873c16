"""The contract every piece of the embedded stack follows.

A component installs itself (``ensure``), starts its processes through ``self.spawn`` so that their pids
are recorded, answers ``health`` and, once healthy, may ``configure`` itself (create a bucket, register
a cluster in slurmdbd). ``Stack`` drives the order, the port checks, the waiting and the error messages.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ..output import say
from ..procs import ProcessBook, ProcessRecord, spawn, terminate
from ..settings import StackSettings


@dataclass
class Health:
    ok: bool
    detail: str


class Component:
    #: short name used on the command line, in logs and pid records
    name: str = ""
    #: components that must be healthy before this one starts
    depends: tuple[str, ...] = ()
    #: seconds to wait for health after start
    start_timeout: float = 60.0
    #: False for components that only build something (a container image): "running" then means healthy
    has_processes: bool = True

    def __init__(self, settings: StackSettings):
        self.settings = settings
        self.book = ProcessBook(settings.run, self.name)

    # --- to implement -------------------------------------------------------------------------------
    def ports(self) -> dict[str, int]:
        """Label -> TCP port this component binds on loopback (checked free before start)."""
        return {}

    def ensure(self) -> None:
        """Install what is missing; skip what is present; say what is done."""

    def start(self) -> None:
        """Start the processes (through ``self.spawn``); build-only components may leave this empty."""
        if self.has_processes:
            raise NotImplementedError

    def health(self) -> Health:
        raise NotImplementedError

    def configure(self) -> None:
        """Idempotent set-up that needs the running component (runs after every successful start)."""

    # --- shared machinery ---------------------------------------------------------------------------
    def log_path(self, process: str | None = None) -> Path:
        return self.settings.logs / f"{process or self.name}.log"

    def log_paths(self) -> list[Path]:
        paths = [Path(r.log) for r in self.book.load()]
        return paths or [self.log_path()]

    def spawn(self, process: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None, user: str | None = None) -> ProcessRecord:
        log = self.log_path(process)
        proc = spawn(argv, log, env=env, cwd=cwd, user=user)
        record = ProcessRecord(name=process, pid=proc.pid, create_time=proc.create_time(),
                               argv=list(argv), log=str(log))
        self.book.add(record)
        say(self.name, f"started {process} (pid {proc.pid}), log {log}")
        return record

    def records(self) -> list[ProcessRecord]:
        return self.book.load()

    def running(self) -> bool:
        """True when every process recorded for this component is still alive."""
        if not self.has_processes:
            return self.health().ok
        records = self.records()
        return bool(records) and all(r.alive() for r in records)

    def stop(self) -> list[str]:
        """End the processes this component started (by recorded pid), newest first."""
        stopped = []
        for record in reversed(self.records()):
            if terminate(record):
                stopped.append(f"{record.name} (pid {record.pid})")
        self.book.clear()
        return stopped

    def base_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEROES_TEST_")}
        env.update(extra)
        return env

    def wait_healthy(self, timeout: float | None = None) -> Health:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        last = Health(False, "not checked yet")
        while time.monotonic() < deadline:
            if self.records() and not all(r.alive() for r in self.records()):
                dead = [r.name for r in self.records() if not r.alive()]
                return Health(False, f"process exited: {', '.join(dead)}")
            try:
                last = self.health()
            except Exception as exc:  # a health probe must never crash the orchestrator
                last = Health(False, f"health check raised {exc!r}")
            if last.ok:
                return last
            time.sleep(0.5)
        return Health(False, f"not healthy after {timeout or self.start_timeout:.0f}s: {last.detail}")
