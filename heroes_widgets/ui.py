"""Small pieces every app's widgets share: CSS classes (the browser tests find widgets by them), a coloured
status line, and showing a plotly figure as a widget."""
from __future__ import annotations

import html

import ipywidgets as widgets


def css(widget, *names: str):
    """``widget`` with the CSS classes ``names`` added (returned, so it can be used inline)."""
    for name in names:
        widget.add_class(name)
    return widget


def message(text: str, error: bool = False) -> str:
    """A status line: red for an error, green otherwise; the text is escaped (it may come from the API)."""
    return f"<span style='color:{'#b00' if error else '#060'}'>{html.escape(text)}</span>"


def figure_widget(fig):
    """A figure as a widget: a FigureWidget as it is, a static figure inside an Output (no anywidget)."""
    if isinstance(fig, widgets.DOMWidget):
        return fig
    out = widgets.Output()
    with out:
        from IPython.display import display

        display(fig)
    return out


class AppShell:
    """What every app shows the same way: its root widget (``self.widget``) in the notebook, and a status line
    (``self.status``, an HTML widget) for what just happened."""

    def display(self):
        from IPython.display import display

        display(self.widget)
        return self

    def report(self, text: str, error: bool = False) -> None:
        self.status.value = message(text, error)
