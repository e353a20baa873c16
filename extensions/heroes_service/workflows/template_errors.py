"""Where in the template's text each validation error lies (line and column), for the Admin app's editor.

``templates.parse_template`` says *what* is wrong with a location made of keys and list indices
(``steps.1.resources.memory_mb``); an author editing 80 lines of YAML needs *where*. This module composes
the YAML text into nodes (PyYAML keeps each node's start mark) and walks that path to the deepest node
that exists, so a missing field points at the mapping that lacks it. A YAML syntax error carries its own
mark. Lines and columns are 1-based, as editors show them; ``None`` when the text gives no position (a
JSON text YAML cannot compose, or a whole-template rule).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import yaml

from .templates import MAX_FILES_BYTES, Template, TemplateError, parse_template

#: a whole-template rule names the step or parameter it is about (templates.Template._graph)
_NAMED = re.compile(r"\b(step|parameter)s? '([^']+)'")


@dataclass
class Located:
    """One validation error with its place in the text."""

    loc: str
    message: str
    line: int | None = None
    column: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _child(node: yaml.Node, part) -> tuple[yaml.Node | None, yaml.Node | None]:
    """(node to point at, node to descend into) for one path element, or (None, None) when absent.

    A mapping entry points at its key (where a person reads ``memory_mb:``) and descends into its value."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item = node.value[part]
        return item, item
    return None, None


def locate_path(root: yaml.Node, path: list) -> tuple[int, int]:
    """Line and column of the deepest node of ``path`` present in the composed document."""
    point, node = root, root
    for part in path:
        found, inner = _child(node, part)
        if found is None:
            break
        point, node = found, inner
    return _mark(point)


def _path_of(loc: str, message: str, data: dict) -> list:
    """The path to walk for one error: its own location, or (for a whole-template rule naming a step or
    parameter) the position of that step or parameter in its list."""
    path: list = [int(p) if p.isdigit() else p for p in loc.split(".") if p]
    if path:
        return path
    named = _NAMED.search(message)
    if named and isinstance(data, dict):
        kind, name = named.groups()
        key = "steps" if kind == "step" else "parameters"
        for index, entry in enumerate(data.get(key) or []):
            if isinstance(entry, dict) and entry.get("name") == name:
                return [key, index]
    return []


def _syntax_error(exc: yaml.YAMLError) -> Located:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"YAML syntax: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return Located("", text[:500])
    return Located("", text[:500], mark.line + 1, mark.column + 1)


def check_source(source: str) -> tuple[Template | None, list[Located]]:
    """The template ``source`` describes and no errors, or None and every error with its line and column."""
    if len(source) > 2 * MAX_FILES_BYTES:
        return None, [Located("", "the template is too large")]
    root = None
    try:
        root = yaml.compose(source)
    except yaml.YAMLError as exc:
        syntax = _syntax_error(exc)
        try:
            parse_template(source)  # JSON that YAML cannot read (a tab in a string) is still a template
        except TemplateError:
            return None, [syntax]
    try:
        return parse_template(source), []
    except TemplateError as exc:
        data = yaml.safe_load(source) if root is not None else None
        located = []
        for loc, message in exc.errors:
            entry = Located(loc, message.removeprefix("Value error, "))
            if root is not None:
                entry.line, entry.column = locate_path(root, _path_of(loc, message, data))
            located.append(entry)
        return None, located
