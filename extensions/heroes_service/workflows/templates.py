"""Workflow templates: what an organization admin publishes and a user fills in.

A template is YAML or JSON validated by the pydantic models below (``parse_template``). It names a
container image, typed parameters (int, float, string, enum, bool, file) with bounds and defaults, inline
files (the scripts the steps run), steps (an argv with ``{placeholders}``, resources, ``depends_on``) and
output globs. Versions are assigned by the service: publishing a name again makes version n+1.

Why commands are argv lists: every rendered element is ``shlex.quote``d on its own, so a parameter value
can never become shell syntax, whatever it contains (quotes, ``$()``, backticks, ``;``, newlines). A
string command is split ONCE, at publication, with ``shlex.split`` (the template author's text, not a
user's), and placeholders are then substituted inside single elements.
"""
from __future__ import annotations

import json
import math
import posixpath
import re
import shlex
from typing import Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_RE = r"^[a-z][a-z0-9-]{0,62}$"
NAME_RULE = "1-63 characters: lowercase letters, digits and '-', starting with a letter"
PARAM_RE = r"^[a-z][a-z0-9_]{0,31}$"
STEP_RE = r"^[a-z][a-z0-9_-]{0,31}$"
FILE_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"
IMAGE_RE = r"^[a-z0-9][a-z0-9._-]{0,99}$"
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z][a-z0-9_]*)\}")
#: placeholders every step may use besides the parameters
BUILTINS = ("instance_id", "step", "outputs", "inputs")
MAX_STRING = 4096
MAX_FILES_BYTES = 256 * 1024


class TemplateError(ValueError):
    """A template or a parameter set that does not validate; ``errors`` lists (location, message)."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.errors = errors or [("", message)]


# --- parameters --------------------------------------------------------------------------------------
class Param(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=PARAM_RE, description="Identifier used as {name} in commands.")
    type: Literal["int", "float", "string", "enum", "bool", "file"]
    label: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)
    default: Any = None
    required: bool | None = Field(None, description="Default: required unless a default is given.")
    min: float | None = Field(None, description="int/float: smallest value allowed.")
    max: float | None = Field(None, description="int/float: largest value allowed.")
    min_length: int = Field(0, ge=0, le=MAX_STRING)
    max_length: int = Field(256, ge=1, le=MAX_STRING)
    choices: list[str] | None = Field(None, max_length=200, description="enum: allowed values.")
    accept: list[str] | None = Field(None, description="file: allowed name suffixes, e.g. ['.csv'].")

    @model_validator(mode="after")
    def _consistent(self) -> "Param":
        if self.type == "enum" and not self.choices:
            raise ValueError(f"parameter {self.name!r}: an enum needs 'choices'")
        if self.type != "enum" and self.choices:
            raise ValueError(f"parameter {self.name!r}: 'choices' only applies to enum")
        if any("\x00" in choice for choice in self.choices or ()):
            raise ValueError(f"parameter {self.name!r}: a choice cannot contain a NUL character")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"parameter {self.name!r}: min > max")
        if self.type == "file" and self.default is not None:
            raise ValueError(f"parameter {self.name!r}: a file parameter has no default")
        if self.default is not None:
            self.default = coerce(self, self.default)
        return self

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None

    def schema_entry(self) -> dict:
        """What a form needs to draw this parameter (the Submit app reads it)."""
        return self.model_dump(exclude_none=True) | {"required": self.is_required}


def _bounded(param: Param, value: float) -> None:
    if param.min is not None and value < param.min:
        raise ValueError(f"must be >= {param.min:g}")
    if param.max is not None and value > param.max:
        raise ValueError(f"must be <= {param.max:g}")


def coerce(param: Param, value: Any) -> Any:
    """The typed value of ``param`` for the raw ``value`` (JSON), or ValueError saying which rule it broke."""
    kind = param.type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError("must be true or false")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ValueError("must be an integer")
        try:
            number = int(value) if not isinstance(value, float) or value.is_integer() else None
        except ValueError:
            number = None
        if number is None or (isinstance(value, str) and not re.fullmatch(r"-?\d{1,18}", value.strip())):
            raise ValueError("must be an integer")
        _bounded(param, number)
        return number
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        _bounded(param, number)
        return number
    if kind in ("string", "enum"):
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if "\x00" in value:
            raise ValueError("cannot contain NUL characters")
        if kind == "enum":
            if value not in (param.choices or []):
                raise ValueError(f"must be one of {param.choices}")
            return value
        if not param.min_length <= len(value) <= param.max_length:
            raise ValueError(f"length must be between {param.min_length} and {param.max_length}")
        return value
    if kind == "file":
        return coerce_file(param, value)
    raise ValueError(f"unknown type {kind!r}")


def coerce_file(param: Param, value: Any) -> dict:
    """A file parameter's value: ``{"bucket", "key"}`` (or ``"s3://bucket/key"``) in the caller's storage."""
    if isinstance(value, str) and value.startswith("s3://"):
        bucket, _, key = value[5:].partition("/")
        value = {"bucket": bucket, "key": key}
    if not isinstance(value, dict) or not isinstance(value.get("bucket"), str) or not isinstance(value.get("key"), str):
        raise ValueError("must be {'bucket': ..., 'key': ...} or 's3://bucket/key'")
    bucket, key = value["bucket"], value["key"]
    if not bucket or not key or key.endswith("/") or "\x00" in key or len(key) > 1024:
        raise ValueError("must name one object (bucket and key, not a folder)")
    name = staged_name(key)
    if param.accept and not any(name.lower().endswith(s.lower()) for s in param.accept):
        raise ValueError(f"file name must end with one of {param.accept}")
    return {"bucket": bucket, "key": key}


def staged_name(key: str) -> str:
    """The file name an input gets on the cluster: the key's last part, verbatim (never a path)."""
    name = key.rsplit("/", 1)[-1]
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise ValueError("the key's last part is not a usable file name")
    return name


def staged_path(param_name: str, key: str) -> str:
    """Where an input file lies relative to the instance directory (what ``{param}`` renders to)."""
    return f"inputs/{param_name}/{staged_name(key)}"


# --- steps -------------------------------------------------------------------------------------------
IntOrRef = Union[int, str]


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: IntOrRef = Field(1, description="Nodes (int or '{int parameter}').")
    tasks: IntOrRef = Field(1, description="Tasks; >1 runs the command once per task with srun.")
    cpus_per_task: IntOrRef = 1
    memory_mb: IntOrRef = Field(256, description="Memory per node, MiB.")
    time_minutes: IntOrRef = Field(10, description="Wall-time limit, minutes.")
    gpus: IntOrRef = 0
    partition: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,63}$")
    # Floors for the decision module's right-sizing (a recommendation never goes below them); optional, so
    # templates written before they existed validate unchanged. None means the contract's default (1 min,
    # 64 MiB, 1 core).
    min_time_minutes: int | None = Field(None, ge=1, le=7 * 24 * 60,
                                         description="Right-sizing never recommends a shorter time limit.")
    min_memory_mb: int | None = Field(None, ge=1, le=4 * 1024**2,
                                      description="Right-sizing never recommends less memory per node (MiB).")
    min_cores: int | None = Field(None, ge=1, le=256,
                                  description="Right-sizing never recommends fewer cores per task.")

    LIMITS: ClassVar[dict[str, tuple[int, int]]] = {"nodes": (1, 64), "tasks": (1, 4096), "cpus_per_task": (1, 256), "memory_mb": (1, 4 * 1024**2),
              "time_minutes": (1, 7 * 24 * 60), "gpus": (0, 64)}

    @field_validator("nodes", "tasks", "cpus_per_task", "memory_mb", "time_minutes", "gpus")
    @classmethod
    def _int_or_ref(cls, value, info):
        if isinstance(value, bool):
            raise ValueError("must be an integer or '{parameter}'")
        if isinstance(value, int):
            lo, hi = cls.LIMITS[info.field_name]
            if not lo <= value <= hi:
                raise ValueError(f"must be between {lo} and {hi}")
            return value
        if not re.fullmatch(r"\{[a-z][a-z0-9_]*\}", value):
            raise ValueError("must be an integer or '{parameter}'")
        return value

    @model_validator(mode="after")
    def _floors_below_requests(self) -> "Resources":
        """A floor above a fixed request would make every right-sized request larger than the template's own."""
        for floor, request in (("min_time_minutes", "time_minutes"), ("min_memory_mb", "memory_mb"),
                               ("min_cores", "cpus_per_task")):
            low, value = getattr(self, floor), getattr(self, request)
            if low is not None and isinstance(value, int) and low > value:
                raise ValueError(f"{floor}={low} is above {request}={value}")
        return self

    def minimums(self) -> dict[str, int]:
        """Right-sizing floors: the template's, else the contract's defaults (1 minute, 64 MiB, 1 core)."""
        return {"time_minutes": self.min_time_minutes or 1, "memory_mb": self.min_memory_mb or 64,
                "cores": self.min_cores or 1}

    def resolved(self, values: dict[str, Any]) -> dict[str, Any]:
        """Concrete integers for one instance (references read from the parameters, bounds re-checked)."""
        out: dict[str, Any] = {"partition": self.partition}
        for name, (lo, hi) in self.LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, str):
                value = values[value[1:-1]]
            value = int(value)
            if not lo <= value <= hi:
                raise TemplateError(f"resource {name}={value} is outside {lo}..{hi}", [(f"resources.{name}",
                                                                                       "out of range")])
            out[name] = value
        return out


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=STEP_RE)
    description: str = Field("", max_length=2000)
    command: list[str] = Field(min_length=1, max_length=256,
                               description="argv; a string is split once with shlex at publication.")
    depends_on: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    energy: bool = Field(True, description="Measure the step's energy (run it under the energy collector) wherever the "
                                         "service has an energy hook; energy: false opts a step out.")

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            try:
                value = shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"cannot split the command: {exc}") from None
        if isinstance(value, list) and any(isinstance(e, str) and "\x00" in e for e in value):
            raise ValueError("a command element cannot contain a NUL character (it cannot cross SSH)")
        return value


class Container(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runtime: Literal["cluster", "charliecloud", "apptainer", "none"] = Field(
        "cluster", description="'cluster': the runtime the cluster was enrolled with; 'none': on the node's OS.")
    image: str = Field("python3", pattern=IMAGE_RE, description="Image name, looked up in the cluster's image dir.")


class Template(BaseModel):
    """A workflow template as published (``version`` is set by the service)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_RE, description=NAME_RULE)
    title: str = Field("", max_length=200, description="Free text shown to users (HEROES_TEMPLATE_NAME).")
    description: str = Field("", max_length=10000)
    version: int | None = Field(None, ge=1, description="Assigned by the service.")
    container: Container = Field(default_factory=Container)
    parameters: list[Param] = Field(default_factory=list, max_length=100)
    files: dict[str, str] = Field(default_factory=dict, description="Inline files written to the instance dir.")
    steps: list[Step] = Field(min_length=1, max_length=50)
    outputs: list[str] = Field(default_factory=list, max_length=100,
                               description="Globs relative to the instance dir, staged back to S3.")

    @field_validator("files")
    @classmethod
    def _files(cls, files: dict[str, str]) -> dict[str, str]:
        total = 0
        for name, text in files.items():
            if not re.fullmatch(FILE_RE, name) or name in (".", ".."):
                raise ValueError(f"file name {name!r}: letters, digits, '_', '.', '-' only (no paths)")
            total += len(text.encode())
        if total > MAX_FILES_BYTES:
            raise ValueError(f"inline files exceed {MAX_FILES_BYTES} bytes; stage big files as inputs")
        return files

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, globs: list[str]) -> list[str]:
        for pattern in globs:
            parts = pattern.split("/")
            if not pattern or pattern.startswith("/") or ".." in parts or "\x00" in pattern:
                raise ValueError(f"output glob {pattern!r} must be relative to the instance dir, without '..'")
        return globs

    @model_validator(mode="after")
    def _graph(self) -> "Template":
        params = {p.name: p for p in self.parameters}
        if len(params) != len(self.parameters):
            raise ValueError("parameter names must be unique")
        clash = set(params) & set(BUILTINS)
        if clash:
            raise ValueError(f"parameter names {sorted(clash)} are reserved")
        steps = {s.name: s for s in self.steps}
        if len(steps) != len(self.steps):
            raise ValueError("step names must be unique")
        for step in self.steps:
            for dep in step.depends_on:
                if dep not in steps:
                    raise ValueError(f"step {step.name!r} depends on unknown step {dep!r}")
            for element in step.command:
                for ref in placeholders(element):
                    if ref not in params and ref not in BUILTINS:
                        raise ValueError(f"step {step.name!r}: unknown placeholder {{{ref}}}")
            for field_name in Resources.LIMITS:
                value = getattr(step.resources, field_name)
                if isinstance(value, str):
                    ref = value[1:-1]
                    if ref not in params or params[ref].type != "int":
                        raise ValueError(f"step {step.name!r}: resources.{field_name} must reference an int "
                                         f"parameter, not {value!r}")
        topological_order(self.steps)  # raises on a cycle
        return self

    # -- helpers
    def param(self, name: str) -> Param | None:
        return next((p for p in self.parameters if p.name == name), None)

    def ordered_steps(self) -> list[Step]:
        return topological_order(self.steps)

    def form_schema(self) -> list[dict]:
        return [p.schema_entry() for p in self.parameters]


def placeholders(element: str) -> list[str]:
    return [m.group(1) for m in PLACEHOLDER.finditer(element) if m.group(1)]


def render_element(element: str, values: dict[str, str]) -> str:
    """Substitute ``{name}`` with the value's text (``{{``/``}}`` are literal braces). No quoting here:
    the element stays ONE argv element and is quoted as a whole when the script is written."""
    def sub(match: re.Match) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return values[match.group(1)]

    return PLACEHOLDER.sub(sub, element)


def topological_order(steps: list[Step]) -> list[Step]:
    """Steps ordered so that every step comes after its dependencies (stable: template order otherwise)."""
    remaining = {s.name: s for s in steps}
    done: list[Step] = []
    names: set[str] = set()
    while remaining:
        ready = [s for s in steps if s.name in remaining and all(d in names for d in s.depends_on)]
        if not ready:
            raise ValueError(f"the steps' depends_on form a cycle among {sorted(remaining)}")
        for step in ready:
            done.append(step)
            names.add(step.name)
            del remaining[step.name]
    return done


# --- parsing and resolving -----------------------------------------------------------------------------
def parse_template(source: str | dict) -> Template:
    """A ``Template`` from YAML/JSON text or an already-decoded object; ``TemplateError`` otherwise."""
    data = source
    if isinstance(source, str):
        if len(source) > 2 * MAX_FILES_BYTES:
            raise TemplateError("the template is too large")
        try:
            data = yaml.safe_load(source)  # YAML is a superset of JSON
        except yaml.YAMLError as exc:
            try:
                data = json.loads(source)
            except ValueError:
                raise TemplateError(f"not valid YAML or JSON: {str(exc)[:300]}") from None
    if not isinstance(data, dict):
        raise TemplateError("a template is a mapping (YAML) or an object (JSON)")
    try:
        return Template.model_validate(data)
    except ValidationError as exc:
        errors = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise TemplateError("invalid template: " + "; ".join(f"{loc}: {msg}" for loc, msg in errors[:10]),
                            errors) from None


def resolve_parameters(template: Template, given: dict[str, Any] | None) -> dict[str, Any]:
    """Typed values for every parameter (defaults applied); ``TemplateError`` lists every broken rule."""
    given = dict(given or {})
    errors: list[tuple[str, str]] = []
    unknown = sorted(set(given) - {p.name for p in template.parameters})
    for name in unknown:
        errors.append((f"parameters.{name}"[:80], "unknown parameter"))
    values: dict[str, Any] = {}
    for param in template.parameters:
        if param.name in given and given[param.name] is not None:
            try:
                values[param.name] = coerce(param, given[param.name])
            except ValueError as exc:
                errors.append((f"parameters.{param.name}", str(exc)))
        elif param.default is not None:
            values[param.name] = param.default
        elif param.is_required:
            errors.append((f"parameters.{param.name}", "required"))
    if errors:
        raise TemplateError("invalid parameters: " + "; ".join(f"{loc}: {msg}" for loc, msg in errors), errors)
    return values


def text_of(param: Param, value: Any) -> str:
    """How a typed value appears in a command and in HEROES_PARAM_* (files: their staged path)."""
    if param.type == "bool":
        return "true" if value else "false"
    if param.type == "float":
        return repr(float(value))
    if param.type == "file":
        return staged_path(param.name, value["key"])
    return str(value)


def outputs_match(patterns: list[str], relpath: str) -> bool:
    """Whether ``relpath`` (relative to the instance dir) is an output: fnmatch, where '*' crosses '/'."""
    from fnmatch import fnmatchcase

    relpath = posixpath.normpath(relpath)
    return any(fnmatchcase(relpath, p) for p in patterns)
