"""The Admin app's Templates tab: write a workflow template in YAML, see its errors at their line and column
and the Submit form it generates while writing, publish it as a new version, list versions, withdraw one.

Checking calls ``POST /organization/admin/workflow/template/check`` (nothing is stored) whenever the text
changes (when the editor loses focus) and before publishing, so a template with an error is never sent to
be published. The preview is drawn by the Submit app's own field class (``submit_app.ParamField``), so
what the admin sees is what users will fill in.
"""
from __future__ import annotations

import html
import json

import ipywidgets as widgets

from .admin_forms import api_call, merged
from .api_client import ApiClient
from .grid import Column, Table
from .submit_app import ParamField
from .ui import css

ADMIN = "/organization/admin/workflow/template"
LIST = "/organization/workflow/template"

STARTER = """\
name: hello
title: Hello (one step)
description: Writes a greeting to outputs/hello.txt.
container:
  runtime: none
parameters:
  - {name: who, type: string, label: Who to greet, default: world, max_length: 64}
  - {name: times, type: int, label: How many times, min: 1, max: 10, default: 2}
steps:
  - name: greet
    command: [sh, -c, 'mkdir -p outputs; for i in $(seq "$1"); do echo "hello $0"; done > outputs/hello.txt',
              "{who}", "{times}"]
    resources: {memory_mb: 64, time_minutes: 2}
outputs:
  - outputs/*
"""

VERSION_COLUMNS = [Column("name", "Template", 140), Column("version", "Version", 70), Column("title", "Title", 220),
                   Column("created_by", "Published by", 110), Column("created_at", "Published at", 170,
                                                                     format=lambda v: str(v or "")[:19])]


def errors_html(errors: list[dict], source: str) -> str:
    """Each error at its line and column, with that line of the text and a caret under the column."""
    lines = source.splitlines()
    items = []
    for error in errors:
        where = f"line {error['line']}, column {error['column']}" if error.get("line") else "the whole template"
        loc = f" ({html.escape(error['loc'])})" if error.get("loc") else ""
        excerpt = ""
        if error.get("line") and 0 < error["line"] <= len(lines):
            text = lines[error["line"] - 1]
            caret = " " * max(0, (error.get("column") or 1) - 1) + "^"
            excerpt = (f"<pre style='margin:2px 0 6px 0;background:#fff4f4'>{error['line']:>4} | {html.escape(text)}\n"
                       f"     | {caret}</pre>")
        items.append(f"<div class='heroes-admin-template-error'><b style='color:#b00'>{where}</b>{loc}: "
                     f"{html.escape(error['message'])}{excerpt}</div>")
    return "".join(items)


class TemplatesTab:
    def __init__(self, client: ApiClient, report):
        self.client, self.report = client, report
        self.versions: list[dict] = []
        self.checked: dict | None = None
        self.editor = css(widgets.Textarea(value=STARTER, continuous_update=False,
                                           layout=widgets.Layout(width="100%", height="360px")),
                          "heroes-admin-template-editor")
        check = css(widgets.Button(description="Check"), "heroes-admin-template-check")
        publish = css(widgets.Button(description="Publish as a new version", button_style="primary", icon="upload",
                                     layout=widgets.Layout(width="auto")),
                      "heroes-admin-template-publish")
        check.on_click(lambda _b: self.check())
        publish.on_click(lambda _b: self.publish())
        self.editor.observe(lambda _change: self.check(), names="value")
        self.errors = css(widgets.HTML(""), "heroes-admin-template-errors")
        self.preview_title = css(widgets.HTML(""), "heroes-admin-template-preview-title")
        self.preview = css(widgets.VBox([]), "heroes-admin-template-preview")
        self.table = Table(VERSION_COLUMNS, "heroes-admin-templates", empty="no template published yet",
                           on_select=lambda row: setattr(self.version_pick, "value", row["id"]))
        self.all_versions = css(widgets.Checkbox(description="every version", value=True, indent=False),
                                "heroes-admin-template-all")
        self.all_versions.observe(lambda _change: self.refresh(), names="value")
        self.version_pick = css(widgets.Dropdown(options=[], description="Version"), "heroes-admin-template-version")
        load = css(widgets.Button(description="Open in the editor"), "heroes-admin-template-load")
        withdraw = css(widgets.Button(description="Withdraw this version", button_style="danger"),
                       "heroes-admin-template-withdraw")
        load.on_click(lambda _b: self.load(self.version_pick.value))
        withdraw.on_click(lambda _b: self.withdraw(self.version_pick.value))
        editor_box = widgets.VBox([widgets.HTML("<b>Template (YAML)</b>"), self.editor,
                                   widgets.HBox([check, publish]), self.errors],
                                  layout=widgets.Layout(width="58%"))
        preview_box = widgets.VBox([self.preview_title, self.preview], layout=widgets.Layout(width="40%",
                                                                                              margin="0 0 0 2%"))
        self.widget = widgets.VBox([
            widgets.HTML("<b>Published templates</b> <small>(users see the latest version of each)</small>"),
            self.all_versions, self.table.widget, widgets.HBox([self.version_pick, load, withdraw]),
            widgets.HBox([editor_box, preview_box])])

    def refresh(self, answer: dict | None = None, gone: str | None = None) -> None:
        """The versions from the API, with this app's own last change in it (``answer``, ``gone``: see merged)."""
        params = {"all_versions": "true"} if self.all_versions.value else None
        listed = api_call(self.report, lambda: self.client.call("GET", LIST, params=params)) or []
        if answer is not None and not self.all_versions.value:
            listed = [t for t in listed if t["name"] != answer["name"]]  # the new version replaces the latest
        self.versions = sorted(merged(listed, answer, gone), key=lambda t: (t["name"], -t["version"]))
        self.table.update(self.versions, keep="id")
        current = self.version_pick.value
        self.version_pick.options = [(f"{t['name']} v{t['version']}", t["id"]) for t in self.versions]
        ids = [t["id"] for t in self.versions]
        self.version_pick.value = current if current in ids else (ids[0] if ids else None)

    # --- editing ---------------------------------------------------------------------------------------
    def check(self) -> dict | None:
        """Validate the editor's text: errors at their line and column, or the form it generates."""
        source = self.editor.value
        answer = api_call(self.report, lambda: self.client.call("POST", f"{ADMIN}/check", json={"source": source}))
        if not answer:
            return None
        self.checked = answer
        if not answer["ok"]:
            count = len(answer["errors"])
            self.errors.value = (f"<p style='color:#b00'>{count} error(s): nothing can be published until they are "
                                 f"fixed</p>{errors_html(answer['errors'], source)}")
            self.preview_title.value = "<i>the Submit form appears here once the template is valid</i>"
            self.preview.children = []
            return answer
        self.errors.value = (f"<p class='heroes-admin-template-ok' style='color:#060'>&#10004; valid: publishing "
                             f"makes <b>{html.escape(answer['name'])} v{answer['next_version']}</b></p>")
        self._preview(answer)
        return answer

    def _preview(self, answer: dict) -> None:
        """The Submit form this template generates, drawn by the Submit app's own fields."""
        steps = " → ".join(answer["steps"])
        self.preview_title.value = (f"<b>Preview: the Submit form of {html.escape(answer['title'] or answer['name'])}"
                                    f"</b><br><small>{html.escape(answer['description'])}</small><br>"
                                    f"<small>steps: {html.escape(steps)}</small>")
        fields = [ParamField(spec, self.client) for spec in answer["parameters"]]
        self.preview.children = [f.widget for f in fields] or [widgets.HTML("<i>no parameters to fill in</i>")]

    def publish(self) -> dict | None:
        answer = self.check()
        if not answer or not answer["ok"]:
            if answer:
                self.report("not published: fix the errors shown under the editor", True)
            return None
        source = self.editor.value
        published = api_call(self.report, lambda: self.client.call("POST", ADMIN, json={"source": source}))
        if not published:
            return None
        self.report(f"published {published['name']} v{published['version']}: users of the organization can run it now")
        self.refresh(answer=published)
        self.version_pick.value = published["id"]
        self.check()  # the next version number
        return published

    # --- versions --------------------------------------------------------------------------------------
    def load(self, template_id: str | None) -> None:
        if not template_id:
            self.report("pick a version first", True)
            return
        template = api_call(self.report, lambda: self.client.call("GET", f"{LIST}/{template_id}"))
        if template:
            # a template published as an object has no text: its JSON is valid YAML
            self.editor.value = template["source"] or json.dumps(template["spec"], indent=2)
            self.report(f"{template['name']} v{template['version']} is in the editor: publishing it makes a new "
                        "version")

    def withdraw(self, template_id: str | None) -> None:
        """Users no longer see the version; instances already run keep their record."""
        row = next((t for t in self.versions if t["id"] == template_id), None)
        if row is None:
            self.report("pick a version first", True)
            return
        if api_call(self.report, lambda: self.client.call("DELETE", f"{ADMIN}/{template_id}"),
                    f"{row['name']} v{row['version']} withdrawn: users no longer see it"):
            self.refresh(gone=template_id)
