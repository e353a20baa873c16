"""Writers for the application CSV (EAR/HEROES layout + EARLITE_ESTIMATED) and the sample file.

Values are strings already formatted by the caller; ``None`` is written as an empty field, which
means "not measured" (never zero, never an estimate passed off as a measurement).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Iterable

from . import columns as C


def _field(value: Any) -> str:
    text = "" if value is None else str(value)
    if C.SEP in text or "\n" in text or "\r" in text:
        raise ValueError(f"value {text!r} would break the ';'-separated layout")
    return text


def format_app_row(values: dict[str, Any], layout: Iterable[str] | None = None) -> str:
    """One application row in ``layout`` order (default: our EAR-lite layout)."""
    names = tuple(layout) if layout is not None else C.earlite_app_columns()
    return C.SEP.join(_field(values.get(name)) for name in names)


def write_app_csv(path: str, rows: list[str], layout: Iterable[str] | None = None) -> None:
    """Write header + rows atomically (temp file + rename), so a reader never sees half a file."""
    names = tuple(layout) if layout is not None else C.earlite_app_columns()
    _write_atomically(path, C.SEP.join(names) + "\n" + "".join(row + "\n" for row in rows))


def write_progress(path: str, values: dict[str, Any]) -> None:
    """The step's totals so far as one small JSON object, replaced atomically after every sample: a service
    can show a long job's energy while it runs by reading a few hundred bytes, not the whole timeline."""
    _write_atomically(path, json.dumps(values, sort_keys=True) + "\n")


def _write_atomically(path: str, text: str) -> None:
    """Temp file + rename, so a reader never sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class SampleWriter:
    """The per-interval timeline, appended and flushed row by row (a killed step keeps its samples)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._handle = open(path, "w", encoding="utf-8", newline="")
        self._handle.write(C.SEP.join(C.SAMPLE_COLUMNS) + "\n")
        self._handle.flush()

    def write(self, row: dict[str, Any]) -> None:
        self._handle.write(C.SEP.join(_field(row.get(name)) for name in C.SAMPLE_COLUMNS) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()
