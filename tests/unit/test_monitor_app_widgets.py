"""Unit tests of the Monitor app with no kernel, against a fake transport that answers like the workflow API:
it opens the newest run (or the one in ``?instance=``), shows the log of the failed step (else the last one
that ran) without a click, follows the state on refresh, offers outputs as open/download links, and shows
Cancel only while a run can still be cancelled."""
from __future__ import annotations

import copy
import json
from urllib.parse import urlsplit

import pytest

from heroes_widgets.api_client import ApiClient
from heroes_widgets.monitor_app import MonitorApp, log_step_of, query_instance

BASE = "http://hub.example:8000/services/heroes/api/v1"
OLD, NEW = "a" * 32, "b" * 32


class Response:
    def __init__(self, status: int, body=None, text: str | None = None):
        self.status_code = status
        self.text = text if text is not None else ""
        self.content = text.encode() if text is not None else json.dumps(body).encode()
        self.reason = "Fake"
        self._body = copy.deepcopy(body)  # the app keeps answers: never the fake's own objects

    def json(self):
        return self._body


def instance(iid: str, state: str, steps: list[tuple[str, str, str | None]], outputs=()) -> dict:
    return {"id": iid, "name": f"run {iid[0]}", "template_name": "heat", "template_version": 1, "cluster": "alpha",
            "state": state, "reason": "", "cancel_requested": False, "created_at": f"2026-12-05T08:0{len(iid) % 9}",
            "steps": [{"name": n, "state": s, "job_id": j, "nodes": "alpha-n1" if j else "", "exit_code": None,
                       "reason": ""} for n, s, j in steps],
            "events": [], "outputs": [{"key": f"workflows/{iid}/{o}", "size": 7} for o in outputs],
            "output_bucket": "u-bob", "output_prefix": f"workflows/{iid}/"}


class FakeApi:
    def __init__(self):
        self.runs = {OLD: instance(OLD, "COMPLETED", [("pre", "COMPLETED", "1"), ("solve", "COMPLETED", "2")]),
                     NEW: instance(NEW, "RUNNING", [("pre", "COMPLETED", "3"), ("solve", "RUNNING", "4"),
                                                    ("post", "PENDING", None)])}
        self.logs_read: list[str] = []
        self.cancelled: list[str] = []

    def request(self, method, url, params=None, json=None, data=None, headers=None, timeout=None, stream=False):
        path = urlsplit(url).path.split("/api/v1", 1)[1]
        if path == "/organization/workflow/instance":
            return Response(200, [self.runs[NEW], self.runs[OLD]])
        if path.startswith("/organization/workflow/instance/") and "/log/" in path:
            step = path.rsplit("/", 1)[1]
            self.logs_read.append(step)
            return Response(200, text=f"log of {step}")
        if path.startswith("/organization/workflow/instance/"):
            iid = path.rsplit("/", 1)[1]
            if method == "DELETE":
                self.cancelled.append(iid)
                self.runs[iid]["cancel_requested"] = True
                return Response(200, {"scancelled": ["4"]})
            return Response(200, self.runs[iid]) if iid in self.runs else Response(404, {"detail": "not found"})
        if path == "/organization/data/list":
            return Response(200, {"buckets": [{"bucket": "u-bob", "kind": "user"}]})
        if path == "/organization/data/download":
            return Response(200, {"url": f"http://s3.example/{params['key']}?X-Amz-Signature=s"})
        return Response(404, {"detail": f"no route {path}"})


@pytest.fixture
def api():
    return FakeApi()


@pytest.fixture
def app(api, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/bob/")
    monkeypatch.delenv("QUERY_STRING", raising=False)
    return MonitorApp(ApiClient(base_url=BASE, token="t", session=api), auto=False)


def test_the_newest_run_opens_with_the_log_of_its_last_running_step(app, api):
    assert [r["id"] for r in app.table.rows] == [NEW, OLD]
    assert app.detail["id"] == NEW and "RUNNING" in app.head.value
    assert app.log_step.value == "solve" and app.log.value == "log of solve" and api.logs_read == ["solve"]
    assert app.cancel_button.layout.display is None  # a running instance can be cancelled
    assert [s["state"] for s in app.steps.rows] == ["COMPLETED", "RUNNING", "PENDING"]


def test_a_failed_run_shows_its_failed_step_and_outputs_as_links(app, api):
    api.runs[NEW].update(state="FAILED")
    api.runs[NEW]["steps"][0]["state"] = "FAILED"
    api.runs[NEW]["outputs"] = [{"key": f"workflows/{NEW}/outputs/result.txt", "size": 7}]
    app.refresh()  # no click, no reload: the open run follows
    assert "FAILED" in app.head.value and app.log_step.value == "pre" and app.log.value == "log of pre"
    assert app.cancel_button.layout.display == "none"  # nothing left to cancel
    assert (f"href='/user/bob/voila/render/data.ipynb?bucket=u-bob&amp;key=workflows%2F{NEW}%2Foutputs%2Fresult.txt'"
            in app.outputs.value)
    assert "heroes-monitor-output-download" in app.outputs.value and "X-Amz-Signature" in app.outputs.value
    reads = len(api.logs_read)
    app.refresh()  # a finished run is not read again and again
    assert len(api.logs_read) == reads


def test_clicking_a_row_opens_that_run_and_cancel_asks_the_service(app, api):
    app.table.select(app.table.rows[1])
    assert app.detail["id"] == OLD and app.log_step.value == "solve" and "COMPLETED" in app.head.value
    assert "run a" in app.table.detail.value  # the row whole under the grid
    app.open(NEW)
    app.cancel()
    assert api.cancelled == [NEW] and "cancel requested" in app.status.value
    assert app.cancel_button.layout.display == "none"  # asked once: the button goes


def test_the_query_names_the_run_to_open(api, monkeypatch):
    monkeypatch.setenv("QUERY_STRING", f"instance={OLD}")
    app = MonitorApp(ApiClient(base_url=BASE, token="t", session=api), auto=False)
    assert app.detail["id"] == OLD
    assert query_instance({"QUERY_STRING": ""}) is None


def test_log_step_of():
    assert log_step_of({"steps": []}) is None
    assert log_step_of({"steps": [{"name": "a", "state": "PENDING", "job_id": None}]}) == "a"
    assert log_step_of({"steps": [{"name": "a", "state": "COMPLETED", "job_id": "1"},
                                  {"name": "b", "state": "TIMEOUT", "job_id": "2"},
                                  {"name": "c", "state": "CANCELLED", "job_id": None}]}) == "b"
