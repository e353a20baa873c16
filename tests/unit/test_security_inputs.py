"""Input the service must refuse at once (issue 14, "Lower"): NUL bytes in template commands and enum choices,
bidirectional overrides in object keys, negative times and ids in EAR files (with their line, never "line 0"
or a numpy repr), unknown fields on write bodies, and an OpenAPI document whose references all resolve."""
from __future__ import annotations

import pytest

from heroes_energy import columns as C
from heroes_energy import synthetic
from heroes_energy.table import read_contents
from heroes_service.data.names import NameError_, check_key
from heroes_service.energy.parse import IngestRefused
from heroes_service.workflows.templates import TemplateError, parse_template


def template(**step) -> dict:
    return {"name": "t", "steps": [{"name": "a", "command": ["echo", "x"], **step}]}


@pytest.mark.parametrize("spec", [
    template(command=["echo", "a\x00b"]),
    template(command="echo 'a\x00b'"),
    {**template(command=["echo", "{mode}"]), "parameters": [{"name": "mode", "type": "enum", "choices": ["a", "b\x00"]}]},
])
def test_nul_in_commands_and_choices_is_refused_at_publication(spec):
    with pytest.raises(TemplateError, match="NUL"):
        parse_template(spec)


@pytest.mark.parametrize("char", ["\u202e", "\u202a", "\u202d", "\u2066", "\u2069", "\u200f", "\u061c"])
def test_bidi_controls_in_object_keys_are_refused(char):
    with pytest.raises(NameError_) as err:
        check_key(f"reports/invoice{char}fdp.exe")
    assert err.value.rule == "key-bidi-chars"
    assert check_key("reports/ünïcödé ☃.pdf")  # ordinary Unicode stays allowed


def _eacct(rows: int, change: dict[str, str] | None = None, at: int = 2) -> bytes:
    lines = list(synthetic.eacct_lines(rows, nodes_per_step=1, seed=3))
    if change:
        names = lines[0].split(C.SEP)
        fields = lines[at - 1].split(C.SEP)
        for name, value in change.items():
            fields[names.index(name)] = value
        lines[at - 1] = C.SEP.join(fields)
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("column, value, words", [
    ("TIME_SEC", "-5", "negative time"),
    ("DC_NODE_POWER_W", "-100.5", "negative power"),
    ("JOBID", "-1", "-1 is not an id"),
    ("STEPID", "-7", "-7 is not an id"),
    ("JOBID", str(2**63), "is not an id"),
])
def test_ear_files_with_negative_values_are_refused_with_their_line(column, value, words):
    good = _eacct(6)
    frame, errors = read_contents([("good.csv", good)])
    assert not errors and len(frame) == 6
    frame, errors = read_contents([("bad.csv", _eacct(6, {column: value}, at=4))])
    assert frame is None and len(errors) == 1
    error = errors[0]
    assert (error.file, error.line, error.column) == ("bad.csv", 4, column), error
    assert words in error.message and "np." not in error.message


def test_refusal_messages_without_a_line_do_not_say_line_0():
    refused = IngestRefused([{"file": "x.csv", "line": None, "column": "JOBID", "message": "-1 is not an id"}])
    assert refused.detail.startswith("x.csv, column JOBID: -1 is not an id")
    with_line = IngestRefused([{"file": "x.csv", "line": 4, "column": "TIME_SEC", "message": "negative time"}])
    assert with_line.detail.startswith("x.csv, line 4, column TIME_SEC")


def _app():
    import tempfile

    from heroes_service.app import create_app
    from heroes_service.settings import ServiceSettings

    # its own state dir: the default (the working directory) would leave a database in the checkout
    return create_app(ServiceSettings(state_dir=tempfile.mkdtemp(prefix="heroes-openapi-")))


def _walk(schema, components, seen):
    """Every object schema reachable from ``schema`` (references resolved), by title."""
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/components/schemas/"), f"reference that does not resolve: {ref}"
        schema = components[ref.rsplit("/", 1)[-1]]
    for key in ("anyOf", "oneOf", "allOf"):
        for part in schema.get(key, []):
            _walk(part, components, seen)
    if "properties" in schema and schema.get("title") not in seen:
        seen[schema.get("title", "?")] = schema
        for part in schema["properties"].values():
            _walk(part, components, seen)
    if "items" in schema:
        _walk(schema["items"], components, seen)


def test_write_bodies_refuse_unknown_fields_and_every_reference_resolves():
    document = _app().openapi()
    components = document.get("components", {}).get("schemas", {})
    text = str(document)
    assert "#/$defs/" not in text  # ingest_ear_files referred to a FileIn no one could find
    lenient = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("post", "put", "patch"):
                continue
            for content in operation.get("requestBody", {}).get("content", {}).values():
                seen: dict = {}
                _walk(content.get("schema", {}), components, seen)
                lenient += [f"{method.upper()} {path}: {title}" for title, schema in seen.items()
                            if schema.get("additionalProperties") is not False and "properties" in schema]
    assert not lenient, "write bodies that ignore unknown fields:\n" + "\n".join(lenient)


def test_a_smuggled_field_is_refused():
    from pydantic import ValidationError

    from heroes_service.api.auth_routes import LoginRequest
    from heroes_service.api.org_admin import UserCreate

    with pytest.raises(ValidationError, match="admin"):
        LoginRequest.model_validate({"username": "bob", "password": "x", "admin": True})
    with pytest.raises(ValidationError, match="attributes"):  # an org admin cannot set cluster_login this way
        UserCreate.model_validate({"username": "dave", "attributes": {"cluster_login": ["carol"]}})
