"""The Data app (Voila: notebooks/data.ipynb): browse the buckets a user may use, upload with a progress
bar, download, delete, create folders, preview CSV files (first rows) and images, and pick a file as a
workflow input. It calls the HEROES data API only (:mod:`heroes_widgets.api_client`).

The browsing itself and :class:`InputPicker` (the reusable file picker the Submit app embeds for every
``file`` parameter) live in :mod:`heroes_widgets.data_browser`. ``?bucket=&key=`` in the page's address
opens a file's folder and previews it (the Monitor app's "open" links).

Every widget a browser test needs carries a CSS class ``heroes-data-*`` / ``heroes-picker-*``; every
action ends in the status line (``heroes-data-status``): what was done, or the service's own message.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import mimetypes
import os
from urllib.parse import parse_qs

import ipywidgets as widgets

from .api_client import ApiClient, ServiceCallError
from .data_browser import Browser, InputPicker, human_size  # noqa: F401 (InputPicker: the apps' import)
from .grid import Column, Table
from .ui import AppShell, css as _css

CSV_PREVIEW_BYTES = 64 * 1024
CSV_PREVIEW_ROWS = 10
IMAGE_PREVIEW_BYTES = 10 * 1024 * 1024
TEXT_PREVIEW_BYTES = 4 * 1024
#: downloads up to this size come inline (a data: link); bigger ones through a presigned S3 URL
INLINE_DOWNLOAD_BYTES = 20 * 1024 * 1024
IMAGE_TYPES = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "gif": "gif", "webp": "webp", "svg": "svg+xml"}
CSV_TYPES = {"csv": ",", "tsv": "\t"}


def extension(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def csv_preview_rows(data: bytes, truncated: bool, rows: int = CSV_PREVIEW_ROWS,
                     delimiter: str = ",") -> tuple[list[str], list[list[str]]]:
    """The header and the first ``rows`` rows of a CSV head (a cut last line is dropped, never shown)."""
    text = data.decode("utf-8", errors="replace")
    if truncated and "\n" in text:
        text = text[: text.rfind("\n") + 1]
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|") if delimiter == "," else None
    except csv.Error:
        dialect = None
    reader = csv.reader(io.StringIO(text), dialect) if dialect else csv.reader(io.StringIO(text),
                                                                                delimiter=delimiter)
    table = []
    for i, row in enumerate(reader):
        if i > rows:
            break
        table.append(row)
    return (table[0], table[1:]) if table else ([], [])


def csv_preview(key: str, data: bytes, truncated: bool, delimiter: str = ","):
    """The preview of a CSV head as a grid (sortable, long cells whole on a click), its first rows only."""
    header, rows = csv_preview_rows(data, truncated, delimiter=delimiter)
    if not header:
        return widgets.HTML(f"<b>{html.escape(key)}</b>: <i>empty file</i>")
    titles = [title or f"column {i + 1}" for i, title in enumerate(header)]
    titles = [t if titles.index(t) == i else f"{t} ({i + 1})" for i, t in enumerate(titles)]  # unique titles
    table = Table([Column(str(i), t, 120) for i, t in enumerate(titles)], "heroes-data-csv-grid", empty="no rows")
    table.update([{str(i): cell for i, cell in enumerate(row)} for row in rows])
    note = widgets.HTML(f"<b>{html.escape(key)}</b> <i>(first {len(rows)} row(s); columns: "
                        f"{html.escape(', '.join(titles))})</i>")
    return _css(widgets.VBox([note, table.widget]), "heroes-data-csv")


class DataApp(AppShell):
    """The whole Data app: browser, actions, upload, preview and a picker showing what workflows see."""

    def __init__(self, client: ApiClient | None = None, with_picker: bool = True):
        self.status = _css(widgets.HTML(""), "heroes-data-status")
        try:
            self.client = client or ApiClient()
        except ServiceCallError as exc:
            self.client = None
            self.status.value = self._message(exc.detail, True)
            self.widget = widgets.VBox([widgets.HTML("<h3>HEROES data</h3>"), self.status])
            return
        self.browser = Browser(self.client, "heroes-data", self.report)
        self.browser.listing.observe(self._clicked, names="value")
        self.preview_box = _css(widgets.VBox([]), "heroes-data-preview")
        self.link = _css(widgets.HTML(""), "heroes-data-download-link")
        self._armed_delete: tuple[str, str] | None = None

        def button(label, icon, css, action):
            b = _css(widgets.Button(description=label, icon=icon), css)
            b.on_click(lambda _: action())
            return b

        self.refresh_button = button("Refresh", "refresh", "heroes-data-refresh", self.refresh)
        self.preview_button = button("Preview", "eye", "heroes-data-preview-button", self.preview)
        self.download_button = button("Download", "download", "heroes-data-download", self.download)
        self.delete_button = button("Delete", "trash", "heroes-data-delete", self.delete)
        self.delete_button.button_style = "danger"
        self.folder_name = _css(widgets.Text(placeholder="new folder name"), "heroes-data-folder-name")
        self.mkdir_button = button("Create folder", "folder", "heroes-data-mkdir", self.create_folder)
        self.upload = _css(widgets.FileUpload(multiple=True, description="Upload"), "heroes-data-upload")
        self.upload.observe(self._uploaded, names="value")
        self.progress = _css(widgets.IntProgress(value=0, min=0, max=100, description="Upload"),
                             "heroes-data-progress")
        self.progress_label = _css(widgets.HTML(""), "heroes-data-progress-label")
        self.picker = InputPicker(self.client, "Pick a workflow input") if with_picker else None
        parts = [  # the page's title is the notebook's own (no second "HEROES data")
            widgets.HBox([self.browser.bucket, self.browser.up, self.refresh_button]),
            self.browser.path,
            self.browser.listing,
            widgets.HBox([self.preview_button, self.download_button, self.delete_button]),
            widgets.HBox([self.folder_name, self.mkdir_button]),
            widgets.HBox([self.upload, self.progress, self.progress_label]),
            self.status, self.link, self.preview_box,
        ]
        if self.picker is not None:
            parts += [widgets.HTML("<hr/>"), self.picker]
        self.widget = _css(widgets.VBox(parts), "heroes-data-app")
        self.browser.load_buckets()
        asked = parse_qs(os.environ.get("QUERY_STRING", ""))  # ?bucket=&key= (the Monitor app's "open" links)
        if asked.get("bucket") and asked.get("key"):
            self.show_object(asked["bucket"][0], asked["key"][0])

    def show_object(self, bucket: str, key: str) -> None:
        """Open the folder holding ``key``, select that file and preview it."""
        if bucket not in [value for _label, value in self.browser.bucket.options]:
            self.report(f"you have no bucket {bucket}", True)
            return
        self.browser.bucket.value = bucket
        self.browser.open(key.rsplit("/", 1)[0] + "/" if "/" in key else "")
        if ("file", key) not in [value for _label, value in self.browser.listing.options]:
            self.report(f"{key} is not in {bucket}", True)
            return
        self.browser.listing.value = ("file", key)
        self.preview()

    # --- feedback ---------------------------------------------------------------------------------------
    @staticmethod
    def _message(text: str, error: bool) -> str:
        return f"<span style='color:{'#b00' if error else '#060'}'>{html.escape(text)}</span>"

    def report(self, text: str, error: bool = False) -> None:
        self.status.value = self._message(text, error)

    def _call(self, fn, done: str | None = None):
        """``fn()``'s answer, or None after showing the service's error in the status line."""
        try:
            result = fn()
        except ServiceCallError as exc:
            self.report(exc.detail, True)
            return None
        if done:
            self.report(done)
        return result if result is not None else True

    # --- navigation -------------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.browser.load_buckets()

    def _after_change(self) -> None:
        self.browser.refresh()
        if self.picker is not None:
            self.picker.refresh()

    def _clicked(self, change) -> None:
        entry = change["new"]
        self._armed_delete = None
        self.delete_button.description = "Delete"
        if entry and entry[0] == "dir":
            self.browser.open(entry[1])

    def _selected_file(self) -> str | None:
        entry = self.browser.selected()
        if not entry or entry[0] != "file":
            self.report("select a file first", True)
            return None
        return entry[1]

    # --- actions ----------------------------------------------------------------------------------------
    def create_folder(self) -> None:
        name = self.folder_name.value.strip().strip("/")
        if not name:
            self.report("type a folder name first", True)
            return
        if self._call(lambda: self.client.create_folder(self.browser.bucket.value, self.browser.prefix + name),
                      f"created folder {name}/"):
            self.folder_name.value = ""
            self._after_change()

    def delete(self) -> None:
        """Two clicks: the first arms (and says what would go), the second deletes."""
        entry = self.browser.selected()
        if not entry:
            self.report("select a file or folder first", True)
            return
        target = (self.browser.bucket.value, entry[1])
        if self._armed_delete != target:
            self._armed_delete = target
            self.delete_button.description = "Confirm delete"
            what = "the folder and everything in it" if entry[0] == "dir" else "the file"
            self.report(f"click 'Confirm delete' to delete {what}: {entry[1]}", True)
            return
        self._armed_delete = None
        self.delete_button.description = "Delete"
        answer = self._call(lambda: self.client.delete(*target))
        if answer:
            count = answer.get("deleted", 1) if isinstance(answer, dict) else 1
            self.report(f"deleted {entry[1]} ({count} object(s))")
            self.preview_box.children = []
            self._after_change()

    def download(self) -> None:
        """A link the browser saves: inline data for small files, a presigned S3 URL for big ones."""
        key = self._selected_file()
        if key is None:
            return
        bucket = self.browser.bucket.value
        size = getattr(self.browser, "objects", {}).get(key, {}).get("size", 0)
        name = key.rsplit("/", 1)[-1]
        if size <= INLINE_DOWNLOAD_BYTES:
            data = self._call(lambda: self.client.download(bucket, key))
            if data is None:
                return
            mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
            href = f"data:{mime};base64,{base64.b64encode(data if isinstance(data, bytes) else b'').decode()}"
        else:
            href = self._call(lambda: self.client.presigned_download(bucket, key))
            if href is None:
                return
        self.link.value = (f"<a href='{html.escape(href, quote=True)}' download='{html.escape(name, quote=True)}' "
                           f"target='_blank'>Save {html.escape(name)} ({human_size(size)})</a>")
        self.report(f"download of {name} ready: click the link")

    def preview(self) -> None:
        key = self._selected_file()
        if key is None:
            return
        bucket = self.browser.bucket.value
        ext = extension(key)
        size = getattr(self.browser, "objects", {}).get(key, {}).get("size")
        if ext in CSV_TYPES:
            data = self._call(lambda: self.client.download(bucket, key, CSV_PREVIEW_BYTES))
            if data is None:
                return
            truncated = size is None or size > len(data)
            self.preview_box.children = [csv_preview(key, data, truncated, CSV_TYPES[ext])]
        elif ext in IMAGE_TYPES:
            if size is not None and size > IMAGE_PREVIEW_BYTES:
                self.report(f"{key} is too big to preview ({human_size(size)})", True)
                return
            data = self._call(lambda: self.client.download(bucket, key))
            if data is None:
                return
            self.preview_box.children = [widgets.HTML(f"<b>{html.escape(key)}</b>"),
                                         _css(widgets.Image(value=data, format=IMAGE_TYPES[ext],
                                                            layout=widgets.Layout(max_width="600px")),
                                              "heroes-data-image")]
        else:
            data = self._call(lambda: self.client.download(bucket, key, TEXT_PREVIEW_BYTES))
            if data is None:
                return
            if b"\0" in data[:1024]:
                self.preview_box.children = [widgets.HTML(f"<i>{html.escape(key)}: binary file, no preview</i>")]
            else:
                text = data.decode("utf-8", errors="replace")
                self.preview_box.children = [_css(widgets.HTML(f"<b>{html.escape(key)}</b><pre>"
                                                               f"{html.escape(text)}</pre>"), "heroes-data-text")]
        self.report(f"preview of {key}")

    # --- upload -----------------------------------------------------------------------------------------
    def _uploaded(self, change) -> None:
        files = change["new"]
        if not files:
            return
        bucket = self.browser.bucket.value
        if not self.browser.writable():
            self.report(f"{bucket} is read-only for you: nothing uploaded", True)
            self._reset_upload()
            return
        done = []
        for item in files:
            name = item["name"]
            key = self.browser.prefix + name

            def progress(sent: int, total: int | None, name=name) -> None:
                total = total or 1
                self.progress.value = int(100 * sent / total)
                self.progress_label.value = f"{html.escape(name)}: {human_size(sent)} / {human_size(total)}"

            result = self._call(lambda: self.client.upload(bucket, key, item["content"],
                                                           content_type=item.get("type") or "",
                                                           progress=progress))
            if result is None:
                self.progress.bar_style = "danger"
                break
            done.append(name)
        self._reset_upload()
        if done:
            self.progress.bar_style = "success"
            self.report(f"uploaded {', '.join(done)} to {bucket}/{self.browser.prefix}")
            self._after_change()

    def _reset_upload(self) -> None:
        with self.upload.hold_trait_notifications():
            self.upload.value = ()
