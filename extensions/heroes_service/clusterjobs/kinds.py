"""The registry of job kinds: what differs between a JupyterLab server, a kernel, a desktop, ...

A kind is a small object (see the package docstring for a full example) that knows its own parameters and
its batch script; everything else - the intent row, ``sbatch`` once, the one ``squeue`` per cluster, cancel,
the ledger - is the same for every kind and lives in ``service.py`` / ``reconciler.py`` / ``ledger.py``.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .script import Resources

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .models import ClusterJob

KIND_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}$")


class JobSpecError(ValueError):
    """A kind's parameters or resources do not fit (the API answers 422 with this message); ``field`` names
    the request field at fault when there is one (a form can mark it)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Rendered:
    """A kind's batch script (secrets may be inside: it is sent to sbatch and never stored)."""

    script: str
    #: files to write in the account's home before sbatch: relative path -> (content, mode)
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: folders to create (mode 0700) before sbatch, relative to the account's home
    folders: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobContext:
    """Everything a kind may use to render one job (plain values, no ORM, no connector)."""

    id: str
    kind: str
    job_name: str
    username: str
    organization: str
    cluster: str
    cluster_login: str
    resources: Resources
    params: dict[str, Any]
    settings: Any = None          # the ClusterJobsSettings of the service

    def sbatch_options(self, output: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
        return self.resources.sbatch_options(self.job_name, output, extra)


class JobKind:
    """Base class of kinds. Override ``validate`` and ``render``; the hooks are optional."""

    name = ""

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """The kind's parameters, checked (raise ``JobSpecError``); returned clean."""
        return {}

    def render(self, job: JobContext) -> Rendered:  # pragma: no cover - abstract
        raise NotImplementedError

    def public_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """What of ``params`` may be stored in the row and answered (never tokens or keys)."""
        return {}

    def on_running(self, job: "ClusterJob", service: Any) -> dict[str, Any]:
        """Extra fields of the state answer once the job runs (connection details, tunnelled ports)."""
        return {}

    def on_end(self, job: "ClusterJob", service: Any) -> None:
        """Called once when the job has ended (cancelled or seen final): close tunnels, remove files."""


_KINDS: dict[str, JobKind] = {}
_lock = threading.Lock()


def register_kind(kind: JobKind) -> JobKind:
    """Add ``kind`` (a name registered twice with another object is refused: two kinds, one name)."""
    if not KIND_NAME.match(kind.name or ""):
        raise ValueError(f"job kind name {kind.name!r} must match {KIND_NAME.pattern}")
    with _lock:
        known = _KINDS.get(kind.name)
        if known is not None and type(known) is not type(kind):
            raise ValueError(f"job kind {kind.name!r} is already registered by {type(known).__name__}")
        _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> JobKind:
    with _lock:
        kind = _KINDS.get(name)
    if kind is None:
        raise JobSpecError(f"unknown job kind {name!r}; known: {', '.join(sorted(_KINDS)) or 'none'}")
    return kind


def kinds() -> list[str]:
    with _lock:
        return sorted(_KINDS)
