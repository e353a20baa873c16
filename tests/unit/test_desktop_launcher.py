"""The JupyterLab launcher's Desktop as the stack configures it (the live test is
tests/e2e/test_cluster_lab_desktop.py): the session script, the pins, the hub's pointer to the script."""
from __future__ import annotations

import subprocess
from pathlib import Path

from heroes_dev.components.jupyterhub import SINGLEUSER_REQUIREMENTS
from heroes_widgets.launcher import DESKTOP_SESSION, desktop_session_script

REPO = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, tuple[int, ...]]:
    return {name: tuple(int(part) for part in version.split("."))
            for name, _, version in (r.partition("==") for r in SINGLEUSER_REQUIREMENTS) if version}


def test_the_session_is_valid_sh_and_keeps_openbox_in_front(tmp_path):
    script = tmp_path / DESKTOP_SESSION
    script.write_text(desktop_session_script())
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0
    lines = [line for line in desktop_session_script().splitlines() if line and not line.startswith("#")]
    # vncserver ends the desktop when the session ends: the window manager is exec'd, the terminal its child
    assert lines[-1] == "exec openbox --startup 'xterm -geometry 100x30+40+40'"
    assert desktop_session_script().startswith("#!/bin/sh\n")


def test_the_proxy_is_one_that_authenticates_websockets():
    pins = _pins()
    assert pins["jupyter-server-proxy"] >= (4, 2, 0)  # CVE-2024-28179 fixed in 4.1.1; raw_socket_proxy since 4.2
    assert pins["jupyter-remote-desktop-proxy"] >= (3, 0, 0)  # Unix socket, no websockify


def test_the_hub_points_the_package_at_the_stacks_session():
    config = (REPO / "hub_config" / "jupyterhub_config.py").read_text()
    assert f'"JUPYTER_REMOTE_DESKTOP_PROXY_XSTARTUP": str(user_bin / "{DESKTOP_SESSION}")' in config
