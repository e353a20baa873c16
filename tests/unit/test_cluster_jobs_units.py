"""Unit tests of cluster jobs' pure parts: the one batch-script renderer (quoting checked by bash itself),
resources checked against partitions, the kind registry and the kinds' parameters, what one squeue + one
sacct say about each tracked job, and the ledger's reading of the accounting."""
from __future__ import annotations

import subprocess

import pytest

from heroes_service.clusterjobs import JobContext, JobKind, JobSpecError, Resources, get_kind, register_kind
from heroes_service.clusterjobs.jupyterlab import REPORT_PORT
from heroes_service.clusterjobs.ledger import elapsed_seconds
from heroes_service.clusterjobs.reconciler import ENDED, FINAL, LIVE, MISSING, needs_accounting, observe
from heroes_service.clusterjobs.resources import check_resources, gpu_count, parse_time_limit
from heroes_service.clusterjobs.script import ScriptError, format_minutes, render_script
from heroes_service.clusters.slurm import Job

PARTS = [{"name": "compute", "default": True, "available": True, "time_limit": "2:00:00", "nodes": 2,
          "cpus_per_node": 2, "memory_mb": 2048, "gres": ""},
         {"name": "gpu", "default": False, "available": True, "time_limit": "1-00:00:00", "nodes": 1,
          "cpus_per_node": 8, "memory_mb": 64000, "gres": "gpu:a100:2(S:0)"}]
CANARY = "$(touch heroes-canary)`id`;'\"\\\n$HOME"


def context(kind: str, params: dict, **resources) -> JobContext:
    values = dict(partition="compute", cores=1, memory_mb=1024, minutes=10)
    values.update(resources)
    return JobContext(id="abc", kind=kind, job_name=f"heroes.{kind}.abc", username="bob", organization="acme",
                      cluster="alpha", cluster_login="bob", resources=Resources(**values),
                      params=get_kind(kind).validate(params))


def lab(env: dict | None = None, command: list[str] | None = None, **resources) -> str:
    params = {"env": env or {}, "command": command or ["jupyterhub-singleuser"], "python": "/usr/bin/python3"}
    return get_kind("jupyterlab").render(context("jupyterlab", params, **resources)).script


def test_script_values_reach_the_job_verbatim(tmp_path):
    """Every exported value and argv element survives bash unchanged, and nothing in them runs."""
    script = lab({"JUPYTERHUB_API_TOKEN": CANARY, "X": "a b"}, ["/bin/echo", CANARY])
    assert script.count("\nexec ") == 1
    probe = tmp_path / "probe.sh"
    body = script.replace("\nexec ", "\nprintf '%s\\n' \"$JUPYTERHUB_API_TOKEN\"\nprintf '<%s>\\n' ", 1)
    probe.write_text(body)
    out = subprocess.run(["bash", str(probe)], capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert out.startswith(CANARY + "\n")
    assert f"<{CANARY}>" in out and "</usr/bin/python3>" in out and "<-c>" in out and f"<{REPORT_PORT}>" in out
    assert not (tmp_path / "heroes-canary").exists()


def test_sbatch_header():
    script = lab(gpus=1, minutes=1500)
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert header[0] == "#SBATCH --job-name=heroes.jupyterlab.abc"
    assert "#SBATCH --partition=compute" in header and "#SBATCH --cpus-per-task=1" in header
    assert "#SBATCH --mem=1024M" in header and "#SBATCH --time=1-01:00:00" in header
    assert "#SBATCH --gres=gpu:1" in header


def test_line_breaks_and_odd_env_names_are_refused():
    with pytest.raises(ScriptError):
        lab(partition="compute\n#SBATCH --uid=0")
    with pytest.raises(ScriptError):
        render_script(["--x=1\n#SBATCH --uid=0"])
    with pytest.raises(JobSpecError):
        get_kind("jupyterlab").validate({"env": {"BAD NAME": "1"}, "command": ["x"], "python": "p"})


def test_format_minutes():
    assert format_minutes(10) == "00:10:00" and format_minutes(60) == "01:00:00"
    assert format_minutes(24 * 60 + 5) == "1-00:05:00"


def test_kernel_key_travels_in_the_script_only():
    kind = get_kind("kernel")
    params = {"key": "k" * 32, "python": "/usr/bin/python3", "bind_ip": "127.0.0.1"}
    rendered = kind.render(context("kernel", params))
    assert "export HEROES_KERNEL_KEY=" + "k" * 32 in rendered.script and rendered.folders == (".heroes/kernels",)
    assert kind.public_params(kind.validate(params)) == {"bind_ip": "127.0.0.1"}
    for bad in ({"key": "short", "python": "p"}, {"key": "k" * 32, "python": ""},
                {"key": "k" * 32, "python": "p", "bind_ip": "node; rm -rf"}):
        with pytest.raises(JobSpecError):
            kind.validate(bad)


def test_resources_within_the_partition():
    assert check_resources({"cores": "1", "minutes": "10"}, PARTS, "compute") == \
        Resources("compute", 1, 2048, 10, 0)
    gpu = check_resources({"partition": "gpu", "gpus": "2", "memory_mb": "4096"}, PARTS)
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
def test_resource_refusals_say_why(options, words):
    with pytest.raises(JobSpecError, match=words):
        check_resources(options, PARTS, "compute")


def test_time_limits_and_gres():
    assert parse_time_limit("infinite") is None and parse_time_limit("30") == 30
    assert parse_time_limit("1-02:03:00") == 1563 and parse_time_limit("10:00") == 10
    assert gpu_count("gpu:a100:2(S:0),gpu:1") == 3 and gpu_count("(null)") == 0


def test_kind_registry_refuses_a_second_kind_of_one_name():
    class Other(JobKind):
        name = "jupyterlab"

    with pytest.raises(ValueError):
        register_kind(Other())
    with pytest.raises(JobSpecError, match="unknown job kind"):
        get_kind("no-such-kind")

    class Bad(JobKind):
        name = "Bad Name"

    with pytest.raises(ValueError):
        register_kind(Bad())


def job(job_id: str, state: str, **kw) -> Job:
    return Job(job_id=job_id, state=state, user="bob", **kw)


def test_one_squeue_and_one_sacct_say_everything():
    queue = {"1": job("1", "RUNNING", nodes="n1"), "2": job("2", "COMPLETED"), "3": job("3", "CANCELLED"),
             "4": job("4", "PENDING")}
    accounted = {"5": job("5", "FAILED", partition="compute", exit_code=2),
                 "6": job("6", "FAILED"),  # provisional record: no partition yet
                 "7": job("7", "RUNNING", partition="compute")}
    seen = observe({k: k for k in "12345678"} | {"new": None}, queue, accounted)
    assert {k: v.kind for k, v in seen.items()} == {"1": LIVE, "2": FINAL, "3": ENDED, "4": LIVE, "5": FINAL,
                                                    "6": MISSING, "7": LIVE, "8": MISSING}
    assert [j for j in "12345678" if needs_accounting(j, queue)] == ["2", "3", "5", "6", "7", "8"]
    with_record = observe({"2": "2"}, queue, {"2": job("2", "COMPLETED", partition="compute", alloc_tres="cpu=1")})
    assert with_record["2"].kind == FINAL and with_record["2"].job.alloc_tres == "cpu=1"


def test_elapsed_for_the_ledger():
    assert elapsed_seconds("00:00:03") == 3 and elapsed_seconds("1-02:00:00") == 93600
    assert elapsed_seconds("05:07") == 307 and elapsed_seconds("") is None and elapsed_seconds("INVALID") is None
