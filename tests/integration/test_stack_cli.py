"""The ``heroes dev`` command line against the running embedded stack (real processes, real ports)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import psutil

HEROES = [sys.executable, "-m", "heroes_dev.cli"]


def heroes(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*HEROES, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_status_lists_every_component_healthy_with_ports_and_pids(stack_components):
    #: built or seeded, not run (the container image, the desktop tools, the demo data): no pids
    without_processes = {name for name, c in stack_components.items() if not c.has_processes}
    result = heroes("dev", "status", "--json")
    rows = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    names = {row["component"] for row in rows}
    assert {"keycloak", "s3", "slurm-alpha", "slurm-beta", "login-alpha", "login-beta", "jupyterhub"} <= names
    for row in rows:
        assert row["state"] == "healthy", row
        if row["component"] not in without_processes:
            assert row["pids"], row
            assert all(psutil.pid_exists(int(pid)) for pid in row["pids"].split(","))


def test_second_up_changes_nothing():
    before = json.loads(heroes("dev", "status", "--json").stdout)
    result = heroes("dev", "up")
    after = json.loads(heroes("dev", "status", "--json").stdout)
    assert result.returncode == 0, result.stderr
    assert "nothing changed" in result.stdout
    assert [(r["component"], r["pids"]) for r in before] == [(r["component"], r["pids"]) for r in after]


def test_port_taken_is_named_with_its_holder(stack_settings, require):
    """A second stack (its own state dir) on the first one's S3 port is refused before anything runs."""
    require("s3")
    port = stack_settings.ports.s3
    holder = next(c for c in psutil.net_connections("inet")
                  if c.status == psutil.CONN_LISTEN and c.laddr.port == port)
    other = stack_settings.state / "test-second-stack"  # a state folder the stack accepts (not below /tmp)
    shutil.rmtree(other, ignore_errors=True)
    try:
        result = heroes("dev", "up", "s3", env={"HEROES_STATE_DIR": str(other)})
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"port {port}" in result.stderr
        assert f"pid {holder.pid}" in result.stderr
        assert not list((other / "run").glob("*.json")), "nothing may be started for the refused stack"
    finally:
        shutil.rmtree(other, ignore_errors=True)
