"""The one batch-script renderer (``clusterjobs/script.py``) without a cluster: every kind's script comes from
it, every value is quoted exactly once (hostile values arrive verbatim through a real bash, NUL and line
breaks in options are refused), and a workflow step's script still behaves as before when bash runs it in a
temp dir with a fake ``SLURM_JOB_ID``: the job id file, the two log lines, the exit status, ``set -u`` and the
energy collector around the command."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from heroes_service.clusterjobs import JobContext, Resources, get_kind
from heroes_service.clusterjobs import script as renderer
from heroes_service.clusterjobs.script import BatchScript, ScriptError, Shell, render_script, shell_line
from heroes_service.decision import wait
from heroes_service.workflows.cluster_files import collector_zipapp
from heroes_service.workflows.config import STAGED_COLLECTOR_COMMAND
from heroes_service.workflows.render import Context, render
from heroes_service.workflows.templates import parse_template, resolve_parameters

EXTENSIONS = Path(__file__).resolve().parents[2] / "extensions"
HOSTILE = ["'; touch canary1 #", "$(touch canary2)", "`touch canary3`", "a\nb; touch canary4", "x\rtouch canary5",
           "\"double\" 'single' \\ $HOME ${PATH} * ? [a] ~ !x %s {} -- ../../etc/passwd", "", " lead and trail ",
           "{}", "{0}", "$'\\x41'"]
PRINT_ARGV = "import os, sys; print(repr((sys.argv[1:], os.environ.get('V'), os.environ.get('W'))))"


def run_bash(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    path = cwd / "job.sh"
    path.write_text(script)
    base = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    return subprocess.run(["bash", str(path)], cwd=cwd, capture_output=True, text=True, env={**base, **env},
                          timeout=60)


# ---------------------------------------------------------------- every kind's script comes from the renderer

def step_context(template, runtime="none", image="", energy_command=(), values=None, **extra) -> Context:
    return Context(instance_id="a" * 32, template_id="b" * 32, template=template,
                   values=values if values is not None else resolve_parameters(template, {}), workdir="w",
                   user_id="u", username="bob", organization="acme", organization_id="o", runtime=runtime,
                   image_path=image, energy_command=tuple(energy_command), **extra)


def job_context(kind: str, params: dict) -> JobContext:
    return JobContext(id="abc", kind=kind, job_name=f"heroes.{kind}.abc", username="bob", organization="acme",
                      cluster="alpha", cluster_login="bob", resources=Resources(partition="compute"),
                      params=get_kind(kind).validate(params))


def test_every_kinds_script_is_the_renderers_text(monkeypatch):
    written: list[str] = []
    original = BatchScript.text

    def spy(self):
        written.append(original(self))
        return written[-1]

    monkeypatch.setattr(BatchScript, "text", spy)
    template = parse_template({"name": "t", "steps": [{"name": "s", "command": ["true"]}]})
    scripts = {
        "workflow step": render(step_context(template), template.steps[0], [])[0],
        "jupyterlab": get_kind("jupyterlab").render(job_context("jupyterlab", {
            "env": {"A": "1"}, "command": ["jupyterhub-singleuser"], "python": "/usr/bin/python3"})).script,
        "kernel": get_kind("kernel").render(job_context("kernel", {
            "key": "k" * 32, "python": "/usr/bin/python3"})).script,
    }
    for kind, text in scripts.items():
        assert text in written, f"{kind}: its script did not come from BatchScript.text"
    # the --test-only planning script is rendered once at import, by the same renderer
    assert wait.TEST_SCRIPT == render_script([], exec_argv=["true"], preamble=()) == "#!/bin/bash\nexec true\n"


def test_no_other_module_writes_a_script_of_its_own():
    """A shebang or a hand-written ``export`` line outside the renderer would be a second renderer."""
    own = re.compile(r"#!/bin/|f[\"']export |[\"']#SBATCH ")
    found = {str(p.relative_to(EXTENSIONS)) for p in EXTENSIONS.rglob("*.py") if own.search(p.read_text())}
    assert found == {"heroes_service/clusterjobs/script.py"}


def test_options_go_either_into_the_script_or_onto_sbatchs_argv():
    header = BatchScript(options=("--job-name=x", "--time=5"), argv=("true",))
    assert "#SBATCH --job-name=x\n#SBATCH --time=5\n" in header.text() and header.command_line_options() == []
    argv = BatchScript(options=("--job-name=x", "--time=5"), options_in_script=False, argv=("true",))
    assert "#SBATCH" not in argv.text() and argv.command_line_options() == ["--job-name=x", "--time=5"]
    template = parse_template({"name": "t", "steps": [{"name": "s", "command": ["true"]}]})
    script, options = render(step_context(template), template.steps[0], ["7"])
    assert "#SBATCH" not in script and "--dependency=afterok:7" in options  # steps: on the argv, recorded


def test_the_old_signature_still_renders_the_same_text():
    assert render_script(["--job-name=j"], {"B": "x y", "A": "1"}, ["/bin/prog", "a b"]) == (
        "#!/bin/bash\n#SBATCH --job-name=j\nset -eu\numask 077\nexport A=1\nexport B='x y'\nexec /bin/prog 'a b'\n")


# ---------------------------------------------------------------- every value quoted exactly once

@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_arrive_verbatim_wherever_they_go(tmp_path, value):
    """The same value as an env value, a launcher word, an argv element and a shell_line slot: bash hands
    each back unchanged (quoted twice, the quotes would show; not at all, the canaries would fire)."""
    script = BatchScript(
        preamble=("set -u",), env={"V": value},
        body=(shell_line("printf '<%s>\\n' {} > line.txt", value),),
        launcher=("env", f"W={value}"),  # a plain launcher word is a value: quoted like the argv
        argv=(sys.executable, "-c", PRINT_ARGV, value, f"--x={value}"), exec_command=False,
        epilogue=(Shell("exit $?"),)).text()
    done = run_bash(script, tmp_path)
    assert done.returncode == 0, done.stderr
    argv, env_value, launcher_value = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert argv == [value, f"--x={value}"] and env_value == value and launcher_value == value
    assert (tmp_path / "line.txt").read_bytes().decode() == f"<{value}>\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("canary")]


@pytest.mark.parametrize("where", ["env", "argv", "launcher", "line", "option", "command-line option"])
def test_nul_is_refused_everywhere(where):
    bad = "a\x00b"
    parts = {"env": dict(env={"V": bad}), "argv": dict(argv=("echo", bad)), "launcher": dict(launcher=(bad,)),
             "option": dict(options=(f"--comment={bad}",)),
             "command-line option": dict(options=(f"--comment={bad}",), options_in_script=False)}
    with pytest.raises(ScriptError):
        if where == "line":
            shell_line("echo {}", bad)
        else:
            spec = BatchScript(**{"argv": ("true",), **parts[where]})
            spec.text()
            spec.command_line_options()


@pytest.mark.parametrize("option", ["--comment=a\n#SBATCH --uid=0", "--comment=a\rb"])
def test_line_breaks_in_options_are_refused_in_both_places(option):
    for in_script in (True, False):
        spec = BatchScript(options=(option,), options_in_script=in_script, argv=("true",))
        with pytest.raises(ScriptError):
            spec.text()
            spec.command_line_options()


@pytest.mark.parametrize("name", ["BAD NAME", "A=B", "$(id)", "1X", "", "A\nB"])
def test_env_names_are_checked_not_quoted(name):
    with pytest.raises(ScriptError):
        BatchScript(env={name: "v"}).text()


def test_a_step_value_with_nul_is_refused_by_the_renderer():
    """Templates refuse NUL already; a value that got past them still never reaches a script."""
    template = parse_template({"name": "t", "parameters": [{"name": "s", "type": "string"}],
                               "steps": [{"name": "s", "command": ["echo", "{s}"]}]})
    with pytest.raises(ScriptError):
        render(step_context(template, values={"s": "a\x00b"}), template.steps[0], [])
    with pytest.raises(ScriptError):
        render(step_context(template, runtime="apptainer", image="/img\x00x", values={"s": "ok"}),
               template.steps[0], [])


def test_the_renderers_module_keeps_its_public_names():
    for name in ("ENV_NAME", "PARTITION", "ScriptError", "Resources", "format_minutes", "check_option",
                 "export_lines", "quoted", "render_script"):
        assert hasattr(renderer, name), name


# ---------------------------------------------------------------- a workflow step's script, run by bash

STEP = parse_template({"name": "t", "parameters": [{"name": "code", "type": "int", "default": 3, "min": 0,
                                                    "max": 9}],
                       "steps": [{"name": "work", "command": ["sh", "-c", "echo out; echo err >&2; "
                                                              "touch ran; exit {code}"], "energy": True}]})
LOG = r"\[heroes\] step work (job 77 on \S+|exited {rc}) at \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"


@pytest.mark.parametrize("code", [0, 3])
def test_a_step_writes_its_job_id_logs_its_start_and_end_and_exits_with_its_commands_status(tmp_path, code):
    values = resolve_parameters(STEP, {"code": code})
    script, _ = render(step_context(STEP, values=values), STEP.steps[0], [])
    done = run_bash(script, tmp_path, SLURM_JOB_ID="77")
    assert done.returncode == code and (tmp_path / "ran").exists()
    assert (tmp_path / ".heroes" / "work.jobid").read_text() == "77\n"
    assert (tmp_path / "outputs").is_dir()
    assert done.stdout == "out\n"
    first, middle, last = done.stderr.splitlines()
    assert re.fullmatch(LOG.format(rc=code), first) and "job 77 on" in first
    assert middle == "err" and re.fullmatch(LOG.format(rc=code), last) and f"exited {code} at" in last


def test_without_a_job_id_set_u_stops_the_step_before_its_command(tmp_path):
    script, _ = render(step_context(STEP), STEP.steps[0], [])
    done = run_bash(script, tmp_path)
    assert done.returncode != 0 and "SLURM_JOB_ID" in done.stderr
    assert not (tmp_path / "ran").exists() and not (tmp_path / ".heroes" / "work.jobid").exists()


def test_the_energy_collector_wraps_the_command_and_keeps_its_exit_status(tmp_path):
    """The collector (the real staged zipapp) runs the step's command; the step still exits with its status
    and logs the same lines, and the EAR CSV lands in the step's energy folder."""
    (tmp_path / ".heroes").mkdir()
    (tmp_path / ".heroes" / "heroes_energy.pyz").write_bytes(collector_zipapp())
    command = tuple(sys.executable if e == "python3" else e for e in STAGED_COLLECTOR_COMMAND)
    script, _ = render(step_context(STEP, energy_command=command), STEP.steps[0], [])
    assert ".heroes/heroes_energy.pyz --out .heroes/energy-work -- sh -c" in script
    done = run_bash(script, tmp_path, SLURM_JOB_ID="77", SLURMD_NODENAME="n1")
    assert done.returncode == 3 and (tmp_path / "ran").exists(), done.stderr
    assert (tmp_path / ".heroes" / "work.jobid").read_text() == "77\n"
    assert re.search(LOG.format(rc=3), done.stderr.splitlines()[-1])
    assert any(p.suffix == ".csv" for p in (tmp_path / ".heroes" / "energy-work").iterdir())
