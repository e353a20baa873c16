"""Template language and script rendering, without a cluster: validation rules, parameter coercion, and
the rendered batch script run through a real bash to prove every value arrives as one verbatim argv
element and no canary fires."""
from __future__ import annotations

import ast
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from heroes_service.workflows.render import Context, job_name, render
from heroes_service.workflows.templates import (TemplateError, outputs_match, parse_template, resolve_parameters,
                                                 staged_name)

EXAMPLES = Path(__file__).resolve().parents[2] / "extensions" / "heroes_service" / "workflows" / "examples"


def minimal(**extra) -> dict:
    return {"name": "t", "steps": [{"name": "a", "command": ["true"]}], **extra}


def test_examples_parse_and_order():
    orders = {p.stem: [s.name for s in parse_template(p.read_text()).ordered_steps()] for p in EXAMPLES.glob("*.yaml")}
    assert orders == {"heat-diffusion": ["simulate"], "monte-carlo-pi": ["pre", "solve", "post"],
                      "sklearn-train": ["train"]}


def test_json_and_yaml_are_the_same_template():
    import json

    as_yaml = parse_template("name: t\nsteps:\n  - {name: a, command: 'echo hi {step}'}\n")
    as_json = parse_template(json.dumps({"name": "t", "steps": [{"name": "a", "command": ["echo", "hi", "{step}"]}]}))
    assert as_yaml.model_dump() == as_json.model_dump()


@pytest.mark.parametrize("spec, words", [
    (minimal(name="Bad Name"), "name"),
    ({"name": "t", "steps": []}, "steps"),
    ({"name": "t", "steps": [{"name": "a", "command": ["x"], "depends_on": ["zz"]}]}, "unknown step"),
    ({"name": "t", "steps": [{"name": "a", "command": ["x"], "depends_on": ["a"]}]}, "cycle"),
    ({"name": "t", "steps": [{"name": "a", "command": ["x {y}"]}]}, "unknown placeholder"),
    (minimal(parameters=[{"name": "e", "type": "enum"}]), "choices"),
    (minimal(parameters=[{"name": "n", "type": "int", "min": 5, "max": 1}]), "min > max"),
    (minimal(parameters=[{"name": "n", "type": "int", "max": 3, "default": 9}]), "must be <= 3"),
    (minimal(parameters=[{"name": "step", "type": "int"}]), "reserved"),
    (minimal(files={"../x.py": "x"}), "no paths"),
    (minimal(outputs=["../../etc/*"]), "without '..'"),
    (minimal(outputs=["/etc/passwd"]), "relative"),
    ({"name": "t", "steps": [{"name": "a", "command": ["x"], "resources": {"tasks": "{nope}"}}]}, "int parameter"),
    ({"name": "t", "steps": [{"name": "a", "command": ["x"], "resources": {"nodes": 0}}]}, "between"),
    ({"name": "t", "steps": [{"name": "a;b", "command": ["x"]}]}, "steps.0.name"),
    ("name: [unclosed", "YAML"),
])
def test_invalid_templates_say_why(spec, words):
    with pytest.raises(TemplateError) as caught:
        parse_template(spec)
    assert words in str(caught.value)


def test_parameters_are_coerced_and_bounded():
    template = parse_template(minimal(parameters=[
        {"name": "n", "type": "int", "min": 1, "max": 10, "default": 2},
        {"name": "x", "type": "float", "min": 0},
        {"name": "s", "type": "string", "max_length": 5, "required": False},
        {"name": "e", "type": "enum", "choices": ["a", "b"], "default": "a"},
        {"name": "b", "type": "bool", "default": False},
        {"name": "f", "type": "file", "accept": [".csv"], "required": False},
    ]))
    values = resolve_parameters(template, {"x": "2.5", "b": "true", "f": "s3://bk/dir/it's.csv"})
    assert values == {"n": 2, "x": 2.5, "e": "a", "b": True, "f": {"bucket": "bk", "key": "dir/it's.csv"}}
    with pytest.raises(TemplateError) as caught:
        resolve_parameters(template, {"n": 11, "x": "inf", "s": "toolong", "e": "c", "b": 1, "f": "s3://bk/a.txt",
                                      "zz": 1})
    where = {loc for loc, _ in caught.value.errors}
    assert where == {"parameters.n", "parameters.x", "parameters.s", "parameters.e", "parameters.b",
                     "parameters.f", "parameters.zz"}
    with pytest.raises(TemplateError, match="parameters.x: required"):
        resolve_parameters(template, {})
    for bad in ("..", "a/..", "a/"):
        with pytest.raises(ValueError):
            staged_name(bad)


def test_outputs_globs():
    assert outputs_match(["outputs/*"], "outputs/a/b.txt")
    assert outputs_match(["work/part-*.txt"], "work/part-3.txt")
    assert not outputs_match(["outputs/*"], "inputs/f/x")


CANARY = "/tmp/heroes-unit-canary"
NASTY = [f"'; touch {CANARY}1 #", f"$(touch {CANARY}2)", f"`touch {CANARY}3`", f"a\nb; touch {CANARY}4",
         "\"double\" 'single' \\ $HOME ${PATH} * ? [a] ~ !x %s {} ../../etc/passwd", "", " lead and trail "]


@pytest.mark.parametrize("value", NASTY)
def test_rendered_script_passes_values_verbatim_through_bash(tmp_path, value):
    template = parse_template({
        "name": "t", "title": value,
        "parameters": [{"name": "s", "type": "string", "min_length": 0, "max_length": 500},
                       {"name": "e", "type": "enum", "choices": [value or "x", "y"]}],
        "steps": [{"name": "show", "command": ["python3", "-c",
                                               "import sys, os; print(repr((sys.argv[1:], os.environ['HEROES_TEMPLATE_NAME'], "
                                               "os.environ['HEROES_PARAM_S'])))",
                                               "{s}", "--x={s}", "{e}"]}]})
    values = resolve_parameters(template, {"s": value, "e": value or "x"})
    ctx = Context(instance_id="0" * 32, template_id="1" * 32, template=template, values=values, workdir=str(tmp_path),
                  user_id="u", username="bob", organization="acme", organization_id="o", runtime="none", image_path="")
    script, options = render(ctx, template.steps[0], ["11", "12"])
    assert f"--job-name={job_name('0' * 32, 'show')}" in options and "--dependency=afterok:11:12" in options
    for canary in range(1, 5):
        Path(f"{CANARY}{canary}").unlink(missing_ok=True)
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, SLURM_JOB_ID="42"))
    assert result.returncode == 0, result.stderr
    argv, title, env_s = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert argv == [value, f"--x={value}", value or "x"] and title == (value or "t") and env_s == value
    assert not any(Path(f"{CANARY}{i}").exists() for i in range(1, 5))
    assert (tmp_path / ".heroes" / "show.jobid").read_text() == "42\n"


def test_container_launchers():
    template = parse_template({"name": "t", "steps": [{"name": "s", "command": ["python3", "x.py", "{n}"],
                                                        "resources": {"tasks": "{n}"}}],
                               "parameters": [{"name": "n", "type": "int", "default": 4}]})
    values = resolve_parameters(template, {})
    base = dict(instance_id="a" * 32, template_id="b" * 32, template=template, values=values, workdir="w",
                user_id="", username="bob", organization="acme", organization_id="")
    script, options = render(Context(**base, runtime="charliecloud", image_path="/img dir/python3"), template.steps[0],
                             [])
    assert "srun ch-run -b \"$PWD\":/mnt -c /mnt '/img dir/python3' -- python3 x.py 4" in script
    assert "--ntasks=4" in options
    script, _ = render(Context(**base, runtime="none", image_path=""), template.steps[0], [])
    assert "\nsrun python3 x.py 4\n" in script
    line = next(x for x in script.splitlines() if x.startswith("export HEROES_USER_NAME="))
    assert shlex.split(line.split("=", 1)[1]) == ["bob"]
