"""The orchestrator's promises, checked with small real processes (no stack services needed)."""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from heroes_dev.components.base import Component, Health
from heroes_dev.ports import tcp_open
from heroes_dev.procs import ProcessRecord, terminate
from heroes_dev.settings import Ports, StackSettings
from heroes_dev.stack import Stack, StackError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HttpComponent(Component):
    """A stand-in service: python's http.server on a chosen port."""

    name = "web"
    start_timeout = 15

    def __init__(self, settings, port: int, argv_extra: tuple[str, ...] = ()):
        super().__init__(settings)
        self.port = port
        self.argv_extra = argv_extra
        self.ensured = 0

    def ports(self):
        return {"http": self.port}

    def ensure(self):
        self.ensured += 1

    def start(self):
        self.spawn("web", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(self.port),
                           *self.argv_extra])

    def health(self):
        return Health(tcp_open("127.0.0.1", self.port), f"port {self.port}")


class DependentComponent(HttpComponent):
    name = "web2"
    depends = ("web",)


@pytest.fixture
def settings(tmp_path: Path) -> StackSettings:
    s = StackSettings(state=tmp_path / "state", cache=tmp_path / "cache", ports=Ports())
    for p in (s.state, s.logs, s.run, s.cache):
        p.mkdir(parents=True, exist_ok=True)
    return s


@pytest.fixture
def stacks():
    made: list[Stack] = []
    yield made
    for stack in made:
        stack.down(None)


def test_second_up_changes_nothing(settings, stacks):
    web = HttpComponent(settings, free_port())
    stack = Stack(settings, [web])
    stacks.append(stack)
    first = stack.up()
    pid = web.records()[0].pid
    second = stack.up()
    assert first.started == ["web"]
    assert second.started == [] and second.already_running == ["web"]
    assert web.records()[0].pid == pid and psutil.pid_exists(pid)
    assert web.ensured == 1


def test_port_taken_names_port_and_holder(settings, stacks):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        stack = Stack(settings, [HttpComponent(settings, port)])
        stacks.append(stack)
        with pytest.raises(StackError) as err:
            stack.up()
    message = str(err.value)
    assert f"port {port}" in message
    assert f"pid {psutil.Process().pid}" in message  # the holder is this very test process


def test_failed_start_shows_log_tail_and_leaves_nothing_running(settings, stacks):
    broken = HttpComponent(settings, free_port(), argv_extra=("--no-such-flag",))
    stack = Stack(settings, [broken])
    stacks.append(stack)
    with pytest.raises(StackError) as err:
        stack.up()
    assert "did not come up" in str(err.value)
    assert "unrecognized arguments: --no-such-flag" in str(err.value)
    assert broken.records() == []


def test_down_ends_only_recorded_processes(settings, stacks):
    web = HttpComponent(settings, free_port())
    stack = Stack(settings, [web])
    stacks.append(stack)
    stack.up()
    pid = web.records()[0].pid
    bystander = psutil.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert stack.down() == ["web"]
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert bystander.is_running() and bystander.status() != psutil.STATUS_ZOMBIE
    finally:
        bystander.kill()
        bystander.wait()


def test_reused_pid_is_never_signalled():
    victim = psutil.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = ProcessRecord(name="old", pid=victim.pid, create_time=victim.create_time() - 3600,
                              argv=["old"], log="/dev/null")
        assert terminate(stale) is False
        time.sleep(0.2)
        assert victim.is_running()
    finally:
        victim.kill()
        victim.wait()


def test_dependencies_come_along_in_order(settings):
    web, web2 = HttpComponent(settings, free_port()), DependentComponent(settings, free_port())
    stack = Stack(settings, [web, web2])
    assert [c.name for c in stack.select(["web2"])] == ["web", "web2"]
    assert [c.name for c in stack.select(["web2"], with_deps=False)] == ["web2"]
    with pytest.raises(StackError, match="unknown component"):
        stack.select(["nope"])
