"""Browsing the buckets a user may use, shared by the Data app and the Submit app's file parameters:
:class:`Browser` (a bucket dropdown and a folder listing; a workflow run's folder says the run's label) and
:class:`InputPicker` (click a folder to enter it, a file to pick it; ``value`` is ``{"bucket", "key"}``,
what the workflows API takes, or None). Calls the HEROES data API only.
"""
from __future__ import annotations

import html
import re
from typing import Callable

import ipywidgets as widgets
import traitlets

from .api_client import ApiClient, ServiceCallError
from .ui import css as _css, message as _msg

#: where the workflow engine puts a run's files in the owner's bucket
RUN_FOLDER = re.compile(r"workflows/([0-9a-f]{32})/")


def human_size(n: int | None) -> str:
    """Bytes for people (1.5 KiB, 3.0 MiB)."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _can_write(bucket: dict) -> bool:
    """The data API says ``access: "write"`` (or "read") for each bucket."""
    return str(bucket.get("access", "")).lower() == "write"


class Browser:
    """What both the app and the picker do: a bucket dropdown and a folder listing below a prefix."""

    def __init__(self, client: ApiClient, prefix_class: str, report: Callable[[str, bool], None]):
        self.client = client
        self.report = report
        self.prefix = ""
        self.buckets: list[dict] = []
        self._run_cache: dict[str, dict] = {}
        self._run_cache_prefix: str | None = None
        self.bucket = _css(widgets.Dropdown(options=[], description="Bucket"), f"{prefix_class}-bucket")
        self.path = _css(widgets.HTML(""), f"{prefix_class}-path")
        self.listing = _css(widgets.Select(options=[], rows=10, layout=widgets.Layout(width="95%")),
                            f"{prefix_class}-list")
        self.up = _css(widgets.Button(description="Up", icon="arrow-up", layout=widgets.Layout(width="80px")),
                       f"{prefix_class}-up")
        self.up.on_click(lambda _: self.go_up())
        self.bucket.observe(self._bucket_changed, names="value")

    # --- reading ----------------------------------------------------------------------------------------
    def load_buckets(self) -> None:
        try:
            self.buckets = self.client.buckets()
        except ServiceCallError as exc:
            self.report(f"cannot list your buckets: {exc.detail}", True)
            return
        current = self.bucket.value
        options = [(self._bucket_label(b), b["bucket"]) for b in self.buckets]
        self.bucket.options = options
        names = [b["bucket"] for b in self.buckets]
        if current in names:
            self.bucket.value = current
        elif names:
            self.bucket.value = names[0]
        self.refresh()

    @staticmethod
    def _bucket_label(b: dict) -> str:
        owner = "personal" if b.get("kind") == "user" else "organization"
        name = "" if b.get("default", True) else f" {b.get('name')}"
        access = "" if _can_write(b) else " (read-only)"
        return f"{owner}{name}{access}: {b['bucket']}"

    def writable(self) -> bool:
        return any(b["bucket"] == self.bucket.value and _can_write(b) for b in self.buckets)

    def _bucket_changed(self, _change) -> None:
        self.prefix = ""
        self.refresh()

    def refresh(self) -> None:
        """List the current folder: sub-folders first (values ``("dir", prefix)``), then files."""
        bucket = self.bucket.value
        self.path.value = f"<code>{html.escape(f'{bucket}/{self.prefix}' if bucket else '')}</code>"
        if not bucket:
            self.listing.options = []
            return
        try:
            page = self.client.list_objects(bucket, self.prefix)
        except ServiceCallError as exc:
            self.report(f"cannot list {bucket}/{self.prefix}: {exc.detail}", True)
            return
        self.objects = {o["key"]: o for o in page["objects"]}
        self._run_cache_prefix = None  # runs' labels and states read again at every listing
        options = [(self._folder_label(f), ("dir", f)) for f in page["folders"]]
        options += [(f"{o['key'][len(self.prefix):]} ({human_size(o['size'])})", ("file", o["key"]))
                    for o in page["objects"] if not o["key"].endswith("/")]
        # value None BEFORE new options: a Select that still holds the clicked folder picks the new first
        # entry when its options change, and that "click" opened logs/ instead of the run's folder
        self.listing.value = None
        self.listing.options = options

    def _folder_label(self, folder: str) -> str:
        """``[dir] name/``; a workflow run's folder (``workflows/<id>/``) also says the run's label."""
        name = folder[len(self.prefix):]
        run = RUN_FOLDER.fullmatch(folder)
        if not run:
            return f"[dir] {name}"
        instance = self._runs().get(run.group(1))
        if instance is None:
            return f"[run] {name}"
        label = instance.get("name") or "(no label)"
        return (f"[run] {label} — {instance.get('template_name', '')}, {instance.get('state', '')}, "
                f"{str(instance.get('created_at', ''))[:16].replace('T', ' ')} ({name})")

    def _runs(self) -> dict[str, dict]:
        """The user's workflow instances by id (read once per listing of the workflows/ folder)."""
        if self._run_cache_prefix != self.prefix:
            self._run_cache_prefix = self.prefix
            try:
                instances = self.client.call("GET", "/organization/workflow/instance", params={"limit": 2000})
            except ServiceCallError:
                instances = []
            self._run_cache = {i["id"]: i for i in instances or []}
        return self._run_cache

    def open(self, prefix: str) -> None:
        self.prefix = prefix
        self.refresh()

    def go_up(self) -> None:
        if self.prefix:
            parent = self.prefix.rstrip("/").rsplit("/", 1)
            self.open(parent[0] + "/" if len(parent) == 2 else "")

    def selected(self) -> tuple[str, str] | None:
        return self.listing.value


class InputPicker(widgets.VBox):
    """A file picker over the user's buckets: double-purpose listing (click a folder to enter it, click a
    file to pick it). ``value`` is ``{"bucket", "key"}`` of the picked file, or None."""

    value = traitlets.Dict(allow_none=True, default_value=None)

    def __init__(self, client: ApiClient | None = None, description: str = "Input file",
                 css_prefix: str = "heroes-picker", **kwargs):
        self.client = client or ApiClient()
        self.message = _css(widgets.HTML(""), f"{css_prefix}-message")
        self.browser = Browser(self.client, css_prefix, self._report)
        self.browser.listing.rows = 6
        self.browser.listing.observe(self._clicked, names="value")
        self.chosen = _css(widgets.HTML("<i>no file picked</i>"), f"{css_prefix}-selected")
        title = widgets.HTML(f"<b>{html.escape(description)}</b>")
        super().__init__([title, widgets.HBox([self.browser.bucket, self.browser.up]), self.browser.path,
                          self.browser.listing, self.chosen, self.message], **kwargs)
        _css(self, css_prefix)
        self.browser.load_buckets()

    def _report(self, text: str, error: bool) -> None:
        self.message.value = _msg(text, error)

    def _clicked(self, change) -> None:
        entry = change["new"]
        if not entry:
            return
        kind, key = entry
        if kind == "dir":
            self.browser.open(key)
        else:
            self.value = {"bucket": self.browser.bucket.value, "key": key}

    @traitlets.observe("value")
    def _show(self, change) -> None:
        picked = change["new"]
        self.chosen.value = (f"Picked: <code>s3://{html.escape(picked['bucket'])}/{html.escape(picked['key'])}"
                             "</code>" if picked else "<i>no file picked</i>")

    def refresh(self) -> None:
        """Re-read buckets and the current folder (after uploads elsewhere)."""
        self.browser.load_buckets()
