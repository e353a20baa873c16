"""Bring the embedded stack up and down in dependency order, with errors that say what to do."""
from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

from .components import Component, all_components
from .output import say
from .ports import holder_of
from .procs import family, tail
from .settings import StackSettings


def resident_mb(records) -> float:
    """Resident memory of the recorded processes and all their children, in MiB."""
    total = 0
    for record in records:
        proc = record.process()
        if proc is None:
            continue
        for member in family(proc):
            try:
                total += member.memory_info().rss
            except psutil.Error:
                pass
    return total / 2**20


class StackError(RuntimeError):
    """A component could not be brought up; the message is meant for a person."""


@dataclass
class UpReport:
    started: list[str]
    already_running: list[str]
    seconds: dict[str, float]


class Stack:
    def __init__(self, settings: StackSettings, components: list[Component] | None = None):
        self.settings = settings
        self.components = components if components is not None else all_components(settings)
        self.by_name = {c.name: c for c in self.components}

    def select(self, names: list[str] | None, with_deps: bool = True) -> list[Component]:
        """The named components (plus what they depend on, when starting), in start order."""
        if not names:
            return list(self.components)
        unknown = [n for n in names if n not in self.by_name]
        if unknown:
            raise StackError(f"unknown component(s): {', '.join(unknown)}; known: {', '.join(self.by_name)}")
        wanted = set(names)
        if with_deps:
            stack = list(names)
            while stack:
                for dep in self.by_name[stack.pop()].depends:
                    if dep not in wanted:
                        wanted.add(dep)
                        stack.append(dep)
        return [c for c in self.components if c.name in wanted]

    # --- up -----------------------------------------------------------------------------------------
    def up(self, names: list[str] | None = None) -> UpReport:
        report = UpReport(started=[], already_running=[], seconds={})
        for component in self.select(names):
            began = time.monotonic()
            if self._already_up(component):
                say(component.name, "already running and healthy; nothing to do")
                report.already_running.append(component.name)
                continue
            self._bring_up(component)
            report.started.append(component.name)
            report.seconds[component.name] = round(time.monotonic() - began, 1)
        return report

    def _already_up(self, component: Component) -> bool:
        if not component.running():
            return False
        return component.health().ok

    def _bring_up(self, component: Component) -> None:
        if component.records():  # half-alive leftovers of an earlier run: end them before starting anew
            stopped = component.stop()
            if stopped:
                say(component.name, f"stopped stale processes: {', '.join(stopped)}")
        self._check_ports(component)
        try:
            component.ensure()
        except Exception as exc:  # an install step's own words are the message, not a traceback
            raise StackError(f"{component.name} could not be installed: {exc}") from exc
        try:
            component.start()
        except Exception as exc:
            self._fail(component, f"failed to start: {exc}")
        health = component.wait_healthy()
        if not health.ok:
            self._fail(component, health.detail)
        try:
            component.configure()
        except Exception as exc:
            self._fail(component, f"started but could not be configured: {exc}")
        say(component.name, f"healthy: {health.detail}")

    def _check_ports(self, component: Component) -> None:
        taken = []
        for label, port in component.ports().items():
            holder = holder_of(port)
            if holder:
                taken.append(f"port {port} ({label}) is already taken by {holder}")
        if taken:
            raise StackError(f"{component.name} cannot start: " + "; ".join(taken)
                             + ". Stop that process or move the port with HEROES_PORT_<NAME>.")

    def _fail(self, component: Component, why: str) -> None:
        logs = "\n".join(f"--- last lines of {p} ---\n{tail(p)}" for p in component.log_paths())
        component.stop()
        raise StackError(f"{component.name} did not come up: {why}\n{logs}")

    # --- down ---------------------------------------------------------------------------------------
    def down(self, names: list[str] | None = None) -> list[str]:
        stopped = []
        targets = self.select(names, with_deps=False)
        for component in reversed(targets):
            ended = component.stop()
            if ended:
                say(component.name, f"stopped {', '.join(ended)}")
                stopped.append(component.name)
        return stopped

    # --- status -------------------------------------------------------------------------------------
    def status_rows(self) -> list[dict]:
        rows = []
        for component in self.components:
            records = component.records()
            alive = [r for r in records if r.alive()]
            if not component.has_processes:
                health = component.health()
                state, detail = ("healthy" if health.ok else "stopped"), health.detail
            elif not records:
                state, detail = "stopped", ""
            elif len(alive) < len(records):
                state, detail = "degraded", "exited: " + ", ".join(r.name for r in records if not r.alive())
            else:
                try:
                    health = component.health()
                except Exception as exc:
                    health = type("H", (), {"ok": False, "detail": repr(exc)})()
                state, detail = ("healthy" if health.ok else "unhealthy"), health.detail
            rows.append({
                "component": component.name,
                "state": state,
                "ports": ",".join(str(p) for p in component.ports().values()),
                "pids": ",".join(str(r.pid) for r in alive),
                "rss_mb": f"{resident_mb(alive):.0f}" if alive else "",
                "detail": detail,
            })
        return rows
