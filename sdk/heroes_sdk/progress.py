"""Progress bars that suit where the code runs.

``progress=`` of uploads, downloads and ``wait`` takes:

* ``True`` / ``"auto"`` (default): a tqdm widget in a notebook, a tqdm text bar on an interactive terminal,
  and plain lines (one per tenth, or per step change) when stderr is a file or a pipe, so CI logs and
  ``heroes ... 2> log`` stay readable;
* ``"tqdm"`` or ``"plain"`` to force one; ``False`` / ``None`` for nothing;
* a callable ``progress(done, total, status)``: your own (``total`` None when unknown).
"""
from __future__ import annotations

import sys
from typing import Callable, Union

ProgressSpec = Union[bool, str, None, Callable[..., None]]


def in_notebook() -> bool:
    """Whether we run in a Jupyter kernel (where a widget bar renders)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except AttributeError:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class PlainBar:
    """A bar that prints a line when the tenth (bytes) or the status (steps) changes; no control codes."""

    def __init__(self, total: float | None, desc: str, unit: str, stream=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0.0
        self.stream = stream or sys.stderr
        self._last_tenth = -1
        self._last_status = None

    def _amount(self, value: float) -> str:
        if self.unit != "B":
            return f"{value:g}"
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if value < 1024 or unit == "TiB":
                return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            value /= 1024
        return ""

    def update(self, delta: float = 1, status: str = "") -> None:
        self.n += delta
        tenth = int(10 * self.n / self.total) if self.total else -1
        if tenth != self._last_tenth or (status and status != self._last_status):
            self._last_tenth, self._last_status = tenth, status or self._last_status
            shown = f"{self._amount(self.n)}" + (f" of {self._amount(self.total)}" if self.total else "")
            pct = f" {100 * self.n / self.total:3.0f}%" if self.total else ""
            print(f"{self.desc}:{pct} {shown}" + (f" | {status}" if status else ""), file=self.stream, flush=True)

    def close(self) -> None:
        pass


class TqdmBar:
    """tqdm (a widget in notebooks, text elsewhere) behind the same two calls as :class:`PlainBar`."""

    def __init__(self, total: float | None, desc: str, unit: str, notebook: bool):
        if notebook:
            from tqdm.notebook import tqdm
        else:
            from tqdm import tqdm
        scale = unit == "B"
        self.bar = tqdm(total=total, desc=desc, unit="B" if scale else unit, unit_scale=scale,
                        unit_divisor=1024 if scale else 1000, leave=True, dynamic_ncols=True)

    @property
    def n(self) -> float:
        return self.bar.n

    def update(self, delta: float = 1, status: str = "") -> None:
        if status:
            self.bar.set_postfix_str(status, refresh=False)
        self.bar.update(delta)

    def close(self) -> None:
        self.bar.close()


class CallbackBar:
    """Calls the user's ``progress(done, total, status)`` after every change."""

    def __init__(self, total: float | None, func: Callable[..., None]):
        self.total, self.func, self.n = total, func, 0.0

    def update(self, delta: float = 1, status: str = "") -> None:
        self.n += delta
        self.func(self.n, self.total, status)

    def close(self) -> None:
        pass


class NoBar:
    n = 0.0

    def update(self, delta: float = 1, status: str = "") -> None:
        self.n += delta

    def close(self) -> None:
        pass


def make_bar(progress: ProgressSpec, total: float | None, desc: str, unit: str = "B"):
    """The bar ``progress`` asks for (see the module docstring)."""
    if progress is None or progress is False:
        return NoBar()
    if callable(progress):
        return CallbackBar(total, progress)
    if progress == "plain":
        return PlainBar(total, desc, unit)
    notebook = in_notebook()
    if progress == "tqdm" or notebook or sys.stderr.isatty():
        try:
            return TqdmBar(total, desc, unit, notebook)
        except Exception:  # noqa: BLE001 - tqdm.notebook without ipywidgets raises at creation: print lines
            pass
    return PlainBar(total, desc, unit)
