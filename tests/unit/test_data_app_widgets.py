"""Unit tests of the Data app widgets and the API client, with no kernel (ipywidgets' comm is a no-op
outside one) against a fake transport that answers like the data API (an in-memory bucket store)."""
from __future__ import annotations

import datetime
import json
from urllib.parse import urlsplit

import pytest

from heroes_widgets import api_client
from heroes_widgets.api_client import ApiClient, ServiceCallError
from heroes_widgets.data_app import DataApp, InputPicker, csv_preview_rows, human_size

BASE = "http://hub.example:8000/services/heroes/api/v1"


class FakeResponse:
    def __init__(self, status: int, body=None, content: bytes | None = None):
        self.status_code = status
        self.content = content if content is not None else (json.dumps(body).encode() if body is not None else b"")
        self.reason = "Fake"

    def json(self):
        return json.loads(self.content)


class FakeDataApi:
    """A requests.Session stand-in: the data routes over a dict of buckets; records every call."""

    def __init__(self):
        self.store = {"u-bob": {}, "o-acme": {"shared.csv": b"a,b\n1,2\n"}}
        self.access = {"u-bob": "write", "o-acme": "read"}
        self.calls = []
        self.down = False

    def request(self, method, url, params=None, json=None, data=None, headers=None, timeout=None, stream=False):
        self.calls.append((method, url, params, headers))
        if self.down:
            raise ConnectionError("refused")
        path = urlsplit(url).path[len(urlsplit(BASE).path):]
        params = params or {}
        if path == "/organization/data/list":
            return FakeResponse(200, {"buckets": [
                {"bucket": b, "kind": "user" if b.startswith("u-") else "organization", "name": "default",
                 "default": True, "access": a, "manage": False} for b, a in self.access.items()]})
        if path.startswith("/organization/data/bucket/") and path.endswith("/list"):
            bucket = path.split("/")[4]
            prefix = params.get("prefix", "")
            folders, objects = set(), []
            for key, value in self.store[bucket].items():
                if not key.startswith(prefix) or key == prefix:
                    continue
                rest = key[len(prefix):]
                if "/" in rest:
                    folders.add(prefix + rest.split("/")[0] + "/")
                else:
                    objects.append({"key": key, "size": len(value), "etag": "x", "last_modified": "now"})
            return FakeResponse(200, {"bucket": bucket, "prefix": prefix, "access": self.access[bucket],
                                      "folders": sorted(folders), "objects": objects, "next_token": None})
        if path.startswith("/organization/data/bucket/") and method == "POST":
            bucket = path.split("/")[4]
            self.store[bucket][json["folder"]] = b""
            return FakeResponse(201, {"bucket": bucket, "folder": json["folder"]})
        if path.startswith("/organization/data/bucket/") and method == "DELETE":
            bucket = path.split("/")[4]
            key = params["key"]
            gone = [k for k in self.store[bucket] if k == key or (key.endswith("/") and k.startswith(key))]
            for k in gone:
                del self.store[bucket][k]
            return FakeResponse(200, {"bucket": bucket, "deleted": len(gone)})
        if path == "/organization/data/upload":
            bucket = params["bucket"]
            if self.access[bucket] != "write":
                return FakeResponse(403, {"detail": f"{bucket} is read-only for you"})
            body = b"".join(iter(data))
            assert len(data) == len(body)  # a sized body: requests sends Content-Length
            self.store[bucket][params["key"]] = body
            return FakeResponse(201, {"bucket": bucket, "key": params["key"], "size": len(body)})
        if path == "/organization/data/download":
            body = self.store[params["bucket"]][params["key"]]
            rng = (headers or {}).get("Range")
            if rng:
                end = int(rng.split("-")[1])
                return FakeResponse(206, content=body[: end + 1])
            return FakeResponse(200, content=body)
        return FakeResponse(404, {"detail": "Not Found"})


@pytest.fixture
def fake():
    return FakeDataApi()


@pytest.fixture
def client(fake):
    return ApiClient(base_url=BASE, token="tok", session=fake)


def test_base_url_from_environment():
    assert api_client.default_base_url({"HEROES_API_URL": "http://x/api/"}) == "http://x/api"
    assert (api_client.default_base_url({"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api"})
            == "http://127.0.0.1:8081/services/heroes/api/v1")
    with pytest.raises(ServiceCallError, match="HEROES_API_URL"):
        api_client.default_base_url({})


def test_client_sends_user_token_and_maps_errors(client, fake):
    client.buckets()
    assert fake.calls[-1][3]["Authorization"] == "token tok"
    with pytest.raises(ServiceCallError) as err:
        client.call("GET", "/nope")
    assert err.value.status == 404 and err.value.detail == "Not Found"
    fake.down = True
    with pytest.raises(ServiceCallError) as err:
        client.buckets()
    assert err.value.status == 503 and "cannot be reached" in err.value.detail


def test_upload_reports_progress_in_chunks(client, fake):
    seen = []
    body = b"x" * (api_client.CHUNK * 2 + 10)
    client.upload("u-bob", "big.bin", body, progress=lambda sent, total: seen.append((sent, total)))
    assert fake.store["u-bob"]["big.bin"] == body
    assert seen[0] == (0, len(body)) and seen[-1] == (len(body), len(body)) and len(seen) == 4


def test_app_uploads_previews_and_picker_sees_the_file(client, fake):
    app = DataApp(client)
    assert app.browser.bucket.value == "u-bob"
    csv_bytes = b"name,value\nalpha,1\nbeta,2\n"
    app.upload.value = ({"name": "inputs.csv", "type": "text/csv", "size": len(csv_bytes),
                         "content": memoryview(csv_bytes), "last_modified": datetime.datetime.now()},)
    assert fake.store["u-bob"]["inputs.csv"] == csv_bytes
    assert "uploaded inputs.csv" in app.status.value
    assert app.progress.value == 100 and app.upload.value == ()
    app.browser.listing.value = ("file", "inputs.csv")
    app.preview()
    note, table = app.preview_box.children[0].children
    assert "inputs.csv" in note.value and "columns: name, value" in note.value
    assert table.children[2].get_visible_data().values.tolist() == [["alpha", "1"], ["beta", "2"]]  # the grid
    # the picker lists the new file and picks it as a workflow input
    labels = [label for label, _ in app.picker.browser.listing.options]
    assert any(label.startswith("inputs.csv") for label in labels)
    app.picker.browser.listing.value = ("file", "inputs.csv")
    assert app.picker.value == {"bucket": "u-bob", "key": "inputs.csv"}
    assert "s3://u-bob/inputs.csv" in app.picker.chosen.value


def test_folders_delete_and_read_only_bucket(client, fake):
    app = DataApp(client, with_picker=False)
    app.folder_name.value = "runs"
    app.create_folder()
    assert "runs/" in fake.store["u-bob"]
    app.browser.listing.value = ("dir", "runs/")
    assert app.browser.prefix == "runs/"
    app.browser.go_up()
    assert app.browser.prefix == ""
    fake.store["u-bob"]["gone.txt"] = b"bye"
    app.browser.refresh()
    app.browser.listing.value = ("file", "gone.txt")
    app.delete()
    assert "gone.txt" in fake.store["u-bob"] and "Confirm" in app.delete_button.description
    app.delete()
    assert "gone.txt" not in fake.store["u-bob"]
    # the organization's bucket is read-only: an upload is refused before any byte leaves
    app.browser.bucket.value = "o-acme"
    app.upload.value = ({"name": "x.csv", "type": "text/csv", "size": 1, "content": memoryview(b"x"),
                         "last_modified": datetime.datetime.now()},)
    assert "read-only" in app.status.value and "x.csv" not in fake.store["o-acme"]


def test_picker_alone(client):
    picker = InputPicker(client)
    picker.browser.bucket.value = "o-acme"
    picker.browser.listing.value = ("file", "shared.csv")
    assert picker.value == {"bucket": "o-acme", "key": "shared.csv"}


def test_csv_preview_drops_a_cut_last_line_and_sizes():
    header, rows = csv_preview_rows(b"a;b\n1;2\n3;4\n5;", truncated=True)
    assert header == ["a", "b"] and rows == [["1", "2"], ["3", "4"]]  # the cut last line is not shown
    assert human_size(512) == "512 B" and human_size(1536) == "1.5 KiB"


def test_a_run_folder_opens_itself_and_shows_the_runs_label(monkeypatch):
    """Clicking a run's folder enters that folder, not its first sub-folder (a Select that keeps the clicked
    value picks the new listing's first entry, logs/, when its options change); the run's label shows."""
    run = "e" * 32
    api = FakeDataApi()
    api.store["u-bob"].update({f"workflows/{run}/logs/solve.out": b"ok", f"workflows/{run}/outputs/x.txt": b"1"})
    original = api.request

    def request(method, url, params=None, **kw):
        if urlsplit(url).path.endswith("/organization/workflow/instance"):
            return FakeResponse(200, [{"id": run, "name": "my heat run", "template_name": "heat",
                                       "state": "COMPLETED", "created_at": "2026-12-05T08:30:00"}])
        return original(method, url, params=params, **kw)

    monkeypatch.setattr(api, "request", request)
    app = DataApp(ApiClient(base_url=BASE, token="t", session=api), with_picker=False)
    listing = app.browser.listing
    listing.value = ("dir", "workflows/")
    entries = dict((value, label) for label, value in listing.options)
    label = entries[("dir", f"workflows/{run}/")]
    assert label.startswith("[run] my heat run — heat, COMPLETED, 2026-12-05 08:30") and run in label
    listing.value = ("dir", f"workflows/{run}/")  # the click
    assert app.browser.prefix == f"workflows/{run}/" and listing.value is None
    assert [v for _l, v in listing.options] == [("dir", f"workflows/{run}/logs/"), ("dir", f"workflows/{run}/outputs/")]


def test_the_query_opens_a_file_in_its_folder_with_its_preview(fake, monkeypatch):
    """The Monitor app's "open" link of an output: ?bucket=&key= selects the file and previews it."""
    fake.store["u-bob"]["workflows/r1/outputs/summary.txt"] = b"max_error=0.001\n"
    monkeypatch.setenv("QUERY_STRING", "bucket=u-bob&key=workflows%2Fr1%2Foutputs%2Fsummary.txt")
    app = DataApp(ApiClient(base_url=BASE, token="t", session=fake), with_picker=False)
    assert app.browser.prefix == "workflows/r1/outputs/"
    assert app.browser.listing.value == ("file", "workflows/r1/outputs/summary.txt")
    assert "max_error=0.001" in app.preview_box.children[0].value
    app.show_object("o-nobody", "x")
    assert "you have no bucket o-nobody" in app.status.value
