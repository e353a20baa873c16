"""The desktop's batch script, from the one renderer (``clusterjobs.script.render_script``), without a cluster.

The script is run for real here with stand-ins for the X programs (``Xvnc``, ``xauth``, ``openbox`` record how
they were called): hostile values reach the programs as single arguments and never run, the runtime folder is
private, the X cookie never appears in an argv, ``ready`` is written where the tracker reads it. Run under
the real energy collector (the staged zipapp), the desktop leaves the collector's totals and EAR CSV behind.
"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from heroes_service.clusterjobs.script import Resources, ScriptError
from heroes_service.visualization.script import (COLLECTOR_FILE, DESKTOP_BODY, PROGRESS_FILE, desktop_script,
                                                 parse_ready)
from heroes_service.workflows.cluster_files import collector_zipapp

HOSTILE_DIR = "it's $(touch INJECTED) `touch INJECTED` \"x\"; touch INJECTED"
HOSTILE_TITLE = "a'b; touch INJECTED $(touch INJECTED)"
RESOURCES = Resources(partition="debug", cores=2, memory_mb=512, minutes=90, gpus=1)

XVNC = r"""#!/bin/bash
printf '%s\n' "$@" > "$STUBS_LOG/xvnc.argv"
while [ $# -gt 0 ]; do
  case "$1" in
    -displayfd) fd=$2; shift ;;
    -rfbunixpath) sock=$2; shift ;;
  esac
  shift
done
stat -c %a "$(dirname "$sock")" > "$STUBS_LOG/runtime.mode"
echo 7 >&"$fd"
sleep "${STUB_XVNC_S:-0.5}"
"""
XAUTH = r"""#!/bin/bash
printf '%s\n' "$@" >> "$STUBS_LOG/xauth.argv"
cat > /dev/null
"""
OPENBOX = r"""#!/bin/bash
printf '%s\n' "$@" > "$STUBS_LOG/openbox.argv"
printf '%s\n' "$PWD" > "$STUBS_LOG/openbox.pwd"
"""


def script(session_dir: str, work_dir: str = "/w", **kwargs) -> str:
    return desktop_script(session_dir, work_dir, "heroes.desktop.abc", RESOURCES, **kwargs)


def test_the_script_comes_from_the_one_renderer():
    text = script("/home/bob/.heroes-desktops/abc", "/home/bob/it's here", title=HOSTILE_TITLE)
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    sbatch = [line.removeprefix("#SBATCH ") for line in lines if line.startswith("#SBATCH ")]
    assert sbatch == RESOURCES.sbatch_options("heroes.desktop.abc", "/home/bob/.heroes-desktops/abc/desktop.log")
    assert "--time=01:30:00" in sbatch and "--gres=gpu:1" in sbatch
    # the working directory (a folder the user may name) is never an #SBATCH option: sbatch splits those at blanks
    assert not any(o.startswith("--chdir") for o in sbatch)
    assert "export HEROES_DESKTOP_WORK_DIR='/home/bob/it'\"'\"'s here'" in lines
    exec_line = [line for line in lines if line.startswith("exec ")]  # the first; the others are the body's own
    assert exec_line[0].startswith(
        "exec python3 /home/bob/.heroes-desktops/abc/heroes_energy.pyz --out /home/bob/.heroes-desktops/abc/energy "
        "--interval 5 --progress /home/bob/.heroes-desktops/abc/energy/progress.json -- bash -c ")
    # the body is fixed text: the values reach it through the variables only
    assert "{" not in DESKTOP_BODY.replace("${", "").replace("{ ", "")
    plain = script("/s", energy=False)
    assert [line for line in plain.splitlines() if line.startswith("exec ")][0].startswith("exec bash -c ")


def test_values_that_cannot_be_written_safely_are_refused():
    for bad in ("/home/bob/my desktops/x", "relative/x", "/home/bob/../etc/x", "/x\n#SBATCH --uid=0"):
        with pytest.raises(ScriptError):
            script(bad)
    with pytest.raises(ValueError):
        script("/s", geometry="1x1; reboot")
    with pytest.raises(ScriptError):
        desktop_script("/s", "/w", "heroes.desktop.abc", Resources(partition="a b"))


@pytest.fixture
def stubs(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    for name, text in (("Xvnc", XVNC), ("xauth", XAUTH), ("openbox", OPENBOX)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir, log


def run_script(tmp_path, stubs, text: str, **env) -> subprocess.CompletedProcess:
    bin_dir, log = stubs
    environ = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUBS_LOG": str(log), "TMPDIR": str(tmp_path / "t"),
               "SLURMD_NODENAME": "n1", "HOME": str(tmp_path), **env}
    (tmp_path / "t").mkdir(exist_ok=True)
    return subprocess.run(["bash", "-c", text], cwd=tmp_path, env=environ, capture_output=True, text=True,
                          timeout=60)


def test_the_desktop_runs_with_hostile_values_as_plain_arguments(tmp_path, stubs):
    session_dir, work = tmp_path / "session", tmp_path / HOSTILE_DIR
    session_dir.mkdir()
    work.mkdir()
    done = run_script(tmp_path, stubs, script(str(session_dir), str(work), title=HOSTILE_TITLE, list_outputs=True,
                                              energy=False))
    assert done.returncode == 0, done.stderr
    log = stubs[1]
    assert not list(tmp_path.rglob("INJECTED")), "a value ran as shell"
    xvnc = (log / "xvnc.argv").read_text().splitlines()
    for flag, value in (("-rfbport", "-1"), ("-rfbunixmode", "0600"), ("-SecurityTypes", "None"),
                        ("-geometry", "1280x800"), ("-desktop", HOSTILE_TITLE)):
        assert xvnc[xvnc.index(flag) + 1] == value
    assert "-nolisten" in xvnc and "-auth" in xvnc
    assert (log / "runtime.mode").read_text().strip() == "700"
    # the cookie went to xauth on stdin: no argv of any program holds 32 hex digits
    argvs = "".join((log / name).read_text() for name in ("xvnc.argv", "xauth.argv", "openbox.argv"))
    assert not re.search(r"[0-9a-f]{32}", argvs)
    assert (log / "openbox.pwd").read_text().strip() == str(work)
    ready = parse_ready((session_dir / "ready").read_text())
    assert ready is not None and ready["node"] == "n1" and ready["display"] == 7
    assert ready["socket"].startswith(str(tmp_path / "t" / "heroes-desktop."))
    assert not Path(ready["socket"]).parent.exists(), "the trap removed the runtime folder"


def test_under_the_collector_the_desktop_leaves_its_energy(tmp_path, stubs):
    session_dir = tmp_path / "session"
    session_dir.mkdir(mode=0o700)
    (session_dir / COLLECTOR_FILE).write_bytes(collector_zipapp())
    done = run_script(tmp_path, stubs, script(str(session_dir), str(tmp_path)), SLURM_JOB_ID="4242",
                      STUB_XVNC_S="1.5")
    assert done.returncode == 0, done.stderr
    progress = json.loads((session_dir / PROGRESS_FILE).read_text())
    assert progress["final"] is True and progress["job_id"] == "4242" and progress["time_s"] >= 1.0
    assert progress["energy_j"] > 0
    files = sorted(p.name for p in (session_dir / "energy").iterdir())
    assert files == ["heroes.4242.0.n1.csv", "heroes.4242.0.n1.samples.csv", "progress.json"]
    assert stat.S_IMODE(os.stat(session_dir / "energy").st_mode) == 0o700  # umask 077 of the script
