"""One table widget for every app: an ipydatagrid grid people can sort, filter (each column header's menu)
and resize (drag a header's border), with long values cut with an ellipsis and shown whole on demand (click
a row: the row's full values appear under the grid, and ``on_select`` gets the row).

Why a grid instead of the ``<table>`` strings the apps built by hand: a hand-built table cannot be sorted or
filtered, and one long name stretched it until a column fell off the page (the Energy app's power column).
The grid keeps a fixed width and scrolls instead.

The grid draws on a canvas, so its cells are not in the page's DOM. What a person (and a browser test)
reads as text is the row detail under the grid (CSS class ``<name>-detail``) and the ``<name>-count`` line;
a row is picked by clicking it. Rows are plain dicts; ``columns`` say which keys show, in which order,
under which title.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import ipywidgets as widgets

from .ui import css

#: pixel sizes the grid is drawn with (browser tests compute a row's position from them)
ROW_PX = 26
HEADER_PX = 30
MAX_VISIBLE_ROWS = 12


@dataclass(frozen=True)
class Column:
    """One shown column: the row dict's ``key``, its ``title`` and its starting width in pixels (people may
    resize it); ``format`` turns the raw value into the text shown (the detail shows the same text, whole)."""

    key: str
    title: str
    width: int = 120
    format: Callable[[Any], str] | None = None

    def text(self, row: dict) -> str:
        value = row.get(self.key)
        if self.format is not None:
            return self.format(value)
        return "" if value is None else str(value)


def grid_frame(columns: Sequence[Column], rows: Sequence[dict]):
    """The rows as the DataFrame the grid shows: the columns' titles, every value as its shown text (so
    sorting and filtering see what people see), numbers kept as numbers so they sort as numbers."""
    import pandas as pd

    data = {}
    for col in columns:
        values = [row.get(col.key) for row in rows]
        numeric = col.format is None and values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       for v in values)
        data[col.title] = values if numeric else [col.text(row) for row in rows]
    return pd.DataFrame(data, columns=[c.title for c in columns])


def detail_html(columns: Sequence[Column], row: dict) -> str:
    """A row's values whole, one per line (what the grid cut with an ellipsis)."""
    items = "".join(f"<tr><th style='text-align:left;padding-right:1em;vertical-align:top'>{html.escape(c.title)}</th>"
                    f"<td style='white-space:pre-wrap;word-break:break-all'>{html.escape(c.text(row))}</td></tr>"
                    for c in columns)
    return f"<table>{items}</table>"


class Table:
    """A grid of ``rows`` (dicts) under ``columns``; ``name`` prefixes its CSS classes (``<name>``,
    ``<name>-grid``, ``<name>-detail``, ``<name>-count``, ``<name>-empty``)."""

    def __init__(self, columns: Sequence[Column], name: str, on_select: Callable[[dict], None] | None = None,
                 empty: str = "nothing to show yet", width: str = "100%"):
        self.columns = list(columns)
        self.name = name
        self.on_select = on_select
        self.empty_text = empty
        self.rows: list[dict] = []
        self.selected: dict | None = None
        self.count = css(widgets.HTML(""), f"{name}-count")
        self.empty = css(widgets.HTML(f"<i>{html.escape(empty)}</i>"), f"{name}-empty")
        self.detail = css(widgets.HTML(""), f"{name}-detail")
        self.grid = self._make_grid(width)
        self.grid.layout.display = "none"
        self.widget = css(widgets.VBox([self.count, self.empty, self.grid, self.detail]), name)

    def _make_grid(self, width: str):
        from ipydatagrid import DataGrid, TextRenderer

        grid = DataGrid(grid_frame(self.columns, []), selection_mode="row", editable=False,
                        header_visibility="column", base_row_size=ROW_PX, base_column_header_size=HEADER_PX,
                        column_widths={c.title: c.width for c in self.columns},
                        default_renderer=TextRenderer(text_elide_direction="right"),
                        layout=widgets.Layout(width=width, height=self._height(0)))
        css(grid, f"{self.name}-grid")
        grid.on_cell_click(self._clicked)
        return grid

    @staticmethod
    def _height(n_rows: int) -> str:
        return f"{HEADER_PX + ROW_PX * max(1, min(n_rows, MAX_VISIBLE_ROWS)) + 18}px"

    def update(self, rows: Sequence[dict], keep: str | None = None) -> None:
        """Show ``rows``; the row detail stays on the row whose ``keep`` key equals the selected one's
        (refreshed with its new values), or is cleared when that row is gone."""
        self.rows = list(rows)
        self.grid.data = grid_frame(self.columns, self.rows)
        self.grid.layout.height = self._height(len(self.rows))
        self.grid.layout.display = None if self.rows else "none"
        self.empty.layout.display = "none" if self.rows else None
        self.count.value = f"<small>{len(self.rows)} row(s): click a row for its details; sort, filter and " \
                           "resize from the column headers</small>" if self.rows else ""
        if self.selected is not None and keep:
            same = next((r for r in self.rows if r.get(keep) == self.selected.get(keep)), None)
            self._show(same)
        elif self.selected is not None:
            self._show(None)

    def _clicked(self, cell: dict) -> None:
        if cell.get("region") != "body":
            return
        index = cell.get("primary_key_row")
        if isinstance(index, int) and 0 <= index < len(self.rows):
            self.select(self.rows[index])

    def select(self, row: dict | None) -> None:
        """Show ``row`` whole under the grid and tell ``on_select`` (also what a click does)."""
        self._show(row)
        if row is not None and self.on_select is not None:
            self.on_select(row)

    def _show(self, row: dict | None) -> None:
        self.selected = row
        self.detail.value = detail_html(self.columns, row) if row is not None else ""
