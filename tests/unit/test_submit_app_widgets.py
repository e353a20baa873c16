"""Unit tests of the Submit app with no kernel, against a fake transport that answers like the workflow API:
number fields refuse what they cannot hold (12.7 or 1e30 in a whole-number field) with a message and nothing
is sent, nothing typed is ever changed, and the state shown follows the run to its end (no stale QUEUED)."""
from __future__ import annotations

import copy
import json
from urllib.parse import urlsplit

import pytest

from heroes_widgets.api_client import ApiClient
from heroes_widgets.submit_app import SubmitApp, parse_number

BASE = "http://hub.example:8000/services/heroes/api/v1"
IID = "c" * 32
TEMPLATE = {"id": "t1", "name": "heat", "title": "Heat diffusion", "version": 1, "description": "heat",
            "spec": {"steps": [{"name": "solve"}]},
            "parameters": [{"name": "steps", "type": "int", "label": "Steps", "min": 1, "max": 1000, "default": 50},
                           {"name": "alpha", "type": "float", "label": "Alpha", "min": 0.0, "max": 1.0,
                            "default": 0.25}]}


class Response:
    def __init__(self, status: int, body=None):
        self.status_code = status
        self.content = json.dumps(body).encode() if body is not None else b""
        self.reason = "Fake"
        self._body = copy.deepcopy(body)

    def json(self):
        return self._body


class FakeApi:
    def __init__(self):
        self.submitted: list[dict] = []
        self.states = ["SUBMITTING", "QUEUED", "RUNNING", "COMPLETED"]
        self.reads = 0

    def instance(self, state: str) -> dict:
        return {"id": IID, "name": "", "cluster": "alpha", "state": state, "reason": "",
                "steps": [{"name": "solve", "job_id": "7" if state != "SUBMITTING" else None}]}

    def request(self, method, url, params=None, json=None, data=None, headers=None, timeout=None, stream=False):
        path = urlsplit(url).path.split("/api/v1", 1)[1]
        if path == "/organization/workflow/template":
            return Response(200, [{k: TEMPLATE[k] for k in ("id", "name", "title", "version")}])
        if path == "/organization/workflow/template/t1":
            return Response(200, TEMPLATE)
        if path == "/organization/cluster/":
            return Response(200, [{"name": "alpha", "container_runtime": "charliecloud", "relative_speed": 1.0}])
        if path == "/organization/decision/decide":
            return Response(503, {"detail": "no decision API here"})
        if path == "/organization/workflow/submit":
            self.submitted.append(json)
            return Response(201, self.instance("NEW"))
        if path == f"/organization/workflow/instance/{IID}":
            state = self.states[min(self.reads, len(self.states) - 1)]
            self.reads += 1
            return Response(200, self.instance(state))
        return Response(404, {"detail": f"no route {path}"})


@pytest.fixture
def api():
    return FakeApi()


@pytest.fixture
def app(api):
    app = SubmitApp(ApiClient(base_url=BASE, token="t", session=api), poll_s=0.01)
    app.template.value = "t1"
    return app


def field(app, name):
    return next(f for f in app.fields if f.name == name)


@pytest.mark.parametrize("typed", ["12.7", "1e30", "12,5", "", "ten", "99999999999999999999"])
def test_a_whole_number_field_refuses_what_it_cannot_hold_and_nothing_is_sent(app, api, typed):
    steps = field(app, "steps")
    steps.input.value = typed
    assert steps.input.value == typed  # nothing typed is changed (IntText made 127 of 12.7)
    assert app.submit() is None and api.submitted == []
    assert steps.message.value and "color:#b00" in steps.message.value
    assert "nothing was submitted" in app.status.value


def test_float_fields_refuse_non_numbers_and_bounds_apply(app, api):
    alpha = field(app, "alpha")
    for typed, problem in (("nan", "not a finite number"), ("1e30", "must be &lt;= 1"), ("x", "not a number")):
        alpha.input.value = typed
        assert app.submit() is None and problem in alpha.message.value
    alpha.input.value = "0.5"
    assert alpha.message.value == "" and alpha.value == 0.5
    assert api.submitted == []


def test_valid_values_are_sent_as_numbers_and_the_state_follows_to_the_end(app, api):
    field(app, "steps").input.value = "120"
    iid = app.submit(wait=True)  # returns once Slurm has the step; the follower goes on
    assert iid == IID and api.submitted[-1]["parameters"] == {"steps": 120, "alpha": 0.25}
    app._follow(IID, app._submitted)  # the rest of the polling, run here to the end
    assert "COMPLETED" in app.state.value and "QUEUED" not in app.state.value
    assert app.progress.bar_style == "success" and not app.submit_button.disabled
    assert f"monitor.ipynb?instance={IID}" in app.state.value


def test_parse_number():
    assert parse_number(" 12 ", "int") == (12, "") and parse_number("-3", "int") == (-3, "")
    assert parse_number("12.7", "int")[0] is None and parse_number("1e30", "int")[0] is None
    assert parse_number("1e-3", "float") == (0.001, "") and parse_number("inf", "float")[0] is None
