"""Unit tests of the spawner's pure parts: batch script rendering (quoting checked by bash itself), the
spawn form's validation against partitions, squeue classification, sbatch --test-only parsing, and the
strict port report."""
from __future__ import annotations

import subprocess

import pytest
from batchspawner import JobStatus

from heroes_spawner import form
from heroes_spawner.api import valid_port
from heroes_spawner.jobscript import JobRequest, ScriptError, format_minutes, render
from heroes_spawner.slurm import classify, parse_test_only

PARTS = [{"name": "compute", "default": True, "available": True, "time_limit": "2:00:00", "nodes": 2,
          "cpus_per_node": 2, "memory_mb": 2048, "gres": ""},
         {"name": "gpu", "default": False, "available": True, "time_limit": "1-00:00:00", "nodes": 1,
          "cpus_per_node": 8, "memory_mb": 64000, "gres": "gpu:a100:2(S:0)"}]
CANARY = "$(touch heroes-canary)`id`;'\"\\\n$HOME"


def request(**kw) -> JobRequest:
    values = dict(job_name="jupyterhub-bob", partition="compute", cores=1, memory_mb=1024, minutes=10)
    values.update(kw)
    return JobRequest(**values)


def test_script_values_reach_the_job_verbatim(tmp_path):
    """Every exported value and argv element survives bash unchanged, and nothing in them runs."""
    script = render(request(), {"JUPYTERHUB_API_TOKEN": CANARY, "X": "a b"}, "/usr/bin/python3",
                    ["/bin/echo", CANARY])
    # instead of exec: print the token, then each argv element of the exec line
    assert script.count("\nexec ") == 1
    probe = tmp_path / "probe.sh"
    body = script.replace("\nexec ", "\nprintf '%s\\n' \"$JUPYTERHUB_API_TOKEN\"\nprintf '<%s>\\n' ", 1)
    probe.write_text(body)
    out = subprocess.run(["bash", str(probe)], capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert out.startswith(CANARY + "\n")
    assert f"<{CANARY}>" in out and "</usr/bin/python3>" in out and "<-c>" in out
    assert not (tmp_path / "heroes-canary").exists()


def test_sbatch_header():
    script = render(request(gpus=1, minutes=1500), {}, "python3", ["jupyterhub-singleuser"])
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --partition=compute" in header and "#SBATCH --cpus-per-task=1" in header
    assert "#SBATCH --mem=1024M" in header and "#SBATCH --time=1-01:00:00" in header
    assert "#SBATCH --gres=gpu:1" in header


def test_line_breaks_and_odd_env_names_are_refused():
    with pytest.raises(ScriptError):
        render(request(partition="compute\n#SBATCH --uid=0"), {}, "python3", ["x"])
    with pytest.raises(ScriptError):
        render(request(), {"BAD NAME": "1"}, "python3", ["x"])


def test_format_minutes():
    assert format_minutes(10) == "00:10:00" and format_minutes(60) == "01:00:00"
    assert format_minutes(24 * 60 + 5) == "1-00:05:00"


def test_form_gateway_and_cluster_choices():
    assert form.validate({}, PARTS) == form.Choice(cluster=None)
    choice = form.validate({"target": "cluster:alpha", "cores": "1", "minutes": "10"}, PARTS, "compute")
    assert choice == form.Choice("alpha", "compute", 1, form.DEFAULTS["memory_mb"], 10, 0)
    gpu = form.validate({"target": "cluster:alpha", "partition": "gpu", "gpus": "2", "memory_mb": "4096"}, PARTS)
    assert gpu.gpus == 2 and gpu.partition == "gpu"


@pytest.mark.parametrize("options, words", [
    ({"partition": "nope"}, "no partition"),
    ({"cores": "3"}, "2 cores per node"),
    ({"cores": "0"}, "at least 1 core"),
    ({"memory_mb": "4096"}, "2048 MB"),
    ({"minutes": "121"}, "at most 120 minutes"),
    ({"gpus": "1"}, "0 GPUs"),
    ({"cores": "two"}, "whole number"),
    ({"minutes": "-5"}, "negative"),
])
def test_form_refusals_say_why(options, words):
    with pytest.raises(form.OptionsError, match=words):
        form.validate({"target": "cluster:alpha", **options}, PARTS, "compute")


def test_form_unknown_target():
    with pytest.raises(form.OptionsError):
        form.validate({"target": "cluster:../../etc"}, PARTS)
    with pytest.raises(form.OptionsError):
        form.validate({"target": "somewhere"}, PARTS)


def test_time_limits_and_gres():
    assert form.parse_time_limit("infinite") is None and form.parse_time_limit("30") == 30
    assert form.parse_time_limit("1-02:03:00") == 1563 and form.parse_time_limit("10:00") == 10
    assert form.gpu_count("gpu:a100:2(S:0),gpu:1") == 3 and form.gpu_count("(null)") == 0


def test_form_html_escapes_and_parses():
    html = form.render_form([{"name": "alpha<b>", "partitions": PARTS, "default_partition": "compute",
                              "estimate": "expected start <now>"}])
    assert "<b>" not in html and "&lt;now&gt;" in html and 'value="cluster:alpha&lt;b&gt;"' in html
    assert form.parse_form({"target": ["gateway"], "cores": ["4"]}) == {"target": "gateway"}
    assert form.parse_form({"target": ["cluster:alpha"], "cores": ["1"], "minutes": ["10"], "gpus": [""]}) == {
        "target": "cluster:alpha", "cores": "1", "minutes": "10"}


@pytest.mark.parametrize("rc, out, err, status", [
    (0, "RUNNING|alpha-n1\n", "", JobStatus.RUNNING),
    (0, "PENDING|n/a\n", "", JobStatus.PENDING),
    (0, "CONFIGURING|alpha-n2\n", "", JobStatus.PENDING),
    (0, "COMPLETING|alpha-n1\n", "", JobStatus.NOTFOUND),
    (0, "CANCELLED by 1003|alpha-n1\n", "", JobStatus.NOTFOUND),
    (0, "", "", JobStatus.NOTFOUND),
    (1, "", "slurm_load_jobs error: Invalid job id specified", JobStatus.NOTFOUND),
    (1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)", JobStatus.UNKNOWN),
    (1, "", "squeue: error: 'x' can't be reached now", JobStatus.UNKNOWN),
    (127, "", "bash: squeue: command not found", JobStatus.UNKNOWN),
    (-1, "", "", JobStatus.UNKNOWN),
])
def test_squeue_classification(rc, out, err, status):
    assert classify(rc, out, err)[0] == status


def test_test_only_parsing():
    err = "sbatch: Job 1234 to start at 2026-11-25T21:00:00 using 1 processors on nodes alpha-n1 in partition compute"
    assert parse_test_only(err) == "expected start 2026-11-25T21:00:00 on alpha-n1"
    assert parse_test_only("sbatch: error: Batch job submission failed") == ""


def test_port_report_accepts_only_unprivileged_int_ports():
    assert valid_port(52215) == 52215
    for bad in (True, 80, 70000, "8888", 12.5, None):
        with pytest.raises(ValueError):
            valid_port(bad)


def test_gateway_state_saved_before_the_switch_is_kept():
    """A server started by HeroesLocalSpawner (state {"pid": N}) keeps its pid under HeroesSpawner."""
    from types import SimpleNamespace

    from heroes_spawner.slurm import HeroesSpawner

    spawner = HeroesSpawner(user=SimpleNamespace(name="bob", groups=[], url="/user/bob/"))
    spawner.load_state({"pid": 4242})
    assert spawner.target == "gateway" and spawner._gateway().pid == 4242
    assert spawner.get_state()["gateway"]["pid"] == 4242
