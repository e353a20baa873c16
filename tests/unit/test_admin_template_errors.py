"""Template validation errors carry the line and column an editor shows (workflows/template_errors.py)."""
from __future__ import annotations

from pathlib import Path

from heroes_service.workflows.template_errors import check_source

EXAMPLES = Path(__file__).resolve().parents[2] / "extensions" / "heroes_service" / "workflows" / "examples"

SMALL = """\
name: hello
title: Hello
parameters:
  - {name: count, type: int, min: 1, max: 10, default: 3}
steps:
  - name: greet
    command: [sh, -c, "echo hello {count}"]
    resources:
      memory_mb: 64
      time_minutes: 2
"""


def lines_of(errors):
    return [(e.loc, e.line, e.column) for e in errors]


def test_every_example_checks_clean():
    for path in EXAMPLES.glob("*.yaml"):
        template, errors = check_source(path.read_text())
        assert errors == [] and template.name == path.stem


def test_a_wrong_value_points_at_its_key():
    template, errors = check_source(SMALL.replace("memory_mb: 64", "memory_mb: lots"))
    assert template is None
    assert lines_of(errors) == [("steps.0.resources.memory_mb", 9, 7)]
    assert errors[0].message == "must be an integer or '{parameter}'"  # pydantic's "Value error, " dropped


def test_a_key_in_a_flow_mapping_points_at_its_column():
    _t, errors = check_source(SMALL.replace("max: 10", "max: ten"))
    (error,) = errors
    assert error.loc.startswith("parameters.0.max") and (error.line, error.column) == (4, 38)


def test_a_missing_field_points_at_the_mapping_that_lacks_it_and_an_extra_one_at_itself():
    _t, errors = check_source(SMALL.replace("    command:", "    comand:"))
    assert lines_of(errors) == [("steps.0.command", 6, 5), ("steps.0.comand", 7, 5)]
    assert errors[1].message == "Extra inputs are not permitted"


def test_a_whole_template_rule_points_at_the_step_it_names():
    source = SMALL + "  - name: after\n    command: ['true']\n    depends_on: [greeet]\n"
    _t, errors = check_source(source)
    (error,) = errors
    assert error.loc == "" and "depends on unknown step 'greeet'" in error.message
    assert (error.line, error.column) == (11, 5)


def test_a_yaml_syntax_error_has_its_own_mark():
    _t, errors = check_source(SMALL.replace("      time_minutes: 2", "     time_minutes: 2"))
    (error,) = errors
    assert error.message.startswith("YAML syntax:") and error.line == 10


def test_texts_without_a_position():
    assert lines_of(check_source("")[1]) == [("", None, None)]
    assert lines_of(check_source("- a list")[1]) == [("", 1, 1)]
    template, errors = check_source('{"name": "x", "steps": [{"name": "a", "command": ["printf", "a\\tb"]}]}')
    assert errors == [] and template.steps[0].command == ["printf", "a\tb"]
