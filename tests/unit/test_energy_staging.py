"""How a workflow step runs under the EAR-lite collector: the energy hook in the batch script (inside the
container launcher, placeholders filled), the zipapp the engine stages (runs on a bare python3 with only the
standard library), and one collector per node when srun starts several tasks.
"""
from __future__ import annotations

import os
import subprocess
import sys

from heroes_service.workflows.config import STAGED_COLLECTOR_COMMAND
from heroes_service.workflows.engine import collector_zipapp
from heroes_service.workflows.render import COLLECTOR_PATH, Context, energy_wrapper, render
from heroes_service.workflows.templates import parse_template, resolve_parameters


def context(template, runtime: str, energy_command=STAGED_COLLECTOR_COMMAND) -> Context:
    return Context(instance_id="a" * 32, template_id="b" * 32, template=template,
                   values=resolve_parameters(template, {}), workdir="w", user_id="", username="bob",
                   organization="acme", organization_id="", runtime=runtime,
                   image_path="/img/python3" if runtime != "none" else "", energy_command=tuple(energy_command))


TEMPLATE = parse_template({"name": "t", "steps": [
    {"name": "burn", "command": ["python3", "burn.py"], "energy": True},
    {"name": "post", "command": ["python3", "post.py"], "depends_on": ["burn"], "energy": False}]})


def test_the_wrapper_fills_the_collector_and_the_steps_folder():
    assert energy_wrapper(STAGED_COLLECTOR_COMMAND, "burn") == [
        "python3", COLLECTOR_PATH, "--out", ".heroes/energy-burn", "--"]


def test_energy_steps_run_under_the_collector_inside_the_container():
    script, _ = render(context(TEMPLATE, "charliecloud"), TEMPLATE.steps[0], [])
    assert ("ch-run -b \"$PWD\":/mnt -c /mnt /img/python3 -- python3 .heroes/heroes_energy.pyz "
            "--out .heroes/energy-burn -- python3 burn.py") in script
    script, _ = render(context(TEMPLATE, "charliecloud"), TEMPLATE.steps[1], ["1"])
    assert "heroes_energy" not in script  # energy: false
    script, _ = render(context(TEMPLATE, "none", energy_command=()), TEMPLATE.steps[0], [])
    assert "heroes_energy" not in script and "\npython3 burn.py\n" in script  # no hook configured


def run_zipapp(tmp_path, env_extra: dict, *command: str) -> subprocess.CompletedProcess:
    app = tmp_path / "heroes_energy.pyz"
    app.write_bytes(collector_zipapp())
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env_extra}  # no PYTHONPATH: stdlib only
    return subprocess.run([sys.executable, "-I", str(app), "--out", str(tmp_path / "out"), "--job-id", "7", "--",
                           *command], env=env, capture_output=True, text=True, timeout=60)


def test_the_staged_zipapp_collects_with_the_standard_library_only(tmp_path):
    done = run_zipapp(tmp_path, {"SLURMD_NODENAME": "alpha-n2"}, "sh", "-c", "exit 3")
    assert done.returncode == 3, done.stderr  # the step's exit status is the collector's
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "heroes.7.0.alpha-n2.csv", "heroes.7.0.alpha-n2.samples.csv"]  # Slurm's node name, not the host's


def test_only_the_first_task_of_a_node_collects(tmp_path):
    done = run_zipapp(tmp_path, {"SLURM_LOCALID": "1"}, "sh", "-c", "echo ran; exit 4")
    assert done.returncode == 4 and done.stdout == "ran\n", done.stderr
    assert not (tmp_path / "out").exists()
