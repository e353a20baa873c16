"""Unit tests of the Decision & cost app and of the Submit app's inline right-sizing, with no kernel
(ipywidgets' comm is a no-op outside one) against a fake transport that answers like the decision API of the
contract: the performance policy picks the fast, dear cluster ``beta``, the cost policy the cheap ``alpha``.
Without anywidget the figure is a plain plotly Figure, updated in place by the same code as the FigureWidget."""
from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from heroes_widgets.api_client import ApiClient
from heroes_widgets.decision_app import (DecisionApp, candidate_rows, cpu_freq_text, duration, money,
                                         non_dominated, rightsizing_html)
from heroes_widgets.submit_app import SubmitApp

BASE = "http://hub.example:8000/services/heroes/api/v1"
TEMPLATE = {"id": "t1", "name": "pi", "title": "Monte Carlo pi", "version": 2, "description": "pi by darts",
            "spec": {"steps": [{"name": "solve"}]},
            "parameters": [{"name": "samples", "type": "int", "label": "Samples", "min": 1000, "max": 10**8,
                            "default": 200000},
                           {"name": "tasks", "type": "int", "label": "Tasks", "min": 1, "max": 4, "default": 2}]}
POLICIES = {"policies": [
    {"name": "performance", "title": "Earliest finish", "description": "finish first",
     "weights": {"time": 1.0, "energy": 0.0, "cost": 0.0}},
    {"name": "energy", "title": "Least energy", "description": "", "weights": {"time": 0, "energy": 1, "cost": 0}},
    {"name": "cost", "title": "Lowest cost", "description": "cheapest", "weights": {"time": 0, "energy": 0, "cost": 1}},
    {"name": "balanced", "title": "Balanced", "description": "a bit of all",
     "weights": {"time": 0.34, "energy": 0.33, "cost": 0.33}}], "default": "balanced"}


class FakeResponse:
    def __init__(self, status: int, body=None):
        self.status_code = status
        self.content = json.dumps(body).encode() if body is not None else b""
        self.reason = "Fake"

    def json(self):
        return json.loads(self.content)


def candidate(cluster, wait, run, kwh, estimated, cost, **extra) -> dict:
    base = {"cluster": cluster, "eligible": True, "reason": "", "wait_s": wait, "run_s": run, "finish_s": wait + run,
            "run_limit_s": run * 2, "energy_kwh": kwh, "energy_estimated": estimated, "cost": cost,
            "currency": "EUR", "confidence": 0.6, "meets_deadline": None, "within_budget": None, "score": 0.5,
            "cpu_freq": None}
    base.update(extra)
    return base


class FakeDecisionApi:
    """A requests.Session stand-in for the routes both apps call; records every decide body and submission."""

    def __init__(self):
        self.decided: list[dict] = []
        self.submitted: list[dict] = []
        self.decide_status = 200

    def answer(self, body: dict) -> dict:
        policy = body.get("policy") or POLICIES["default"]
        alpha = candidate("alpha", 600, 1200, 0.02, True, 0.05,
                          cpu_freq={"recommended_khz": 2000000, "saving_pct": 12.0, "slowdown_pct": 3.0})
        beta = candidate("beta", 10, 300, 0.05, False, 0.90)
        gamma = candidate("gamma", 0, 0, None, True, None, eligible=False, reason="no partition fits 4 tasks",
                          wait_s=None, run_s=None, finish_s=None)
        # gamma's worse on everything than alpha: dominated (only eligible ones are plotted)
        delta = candidate("delta", 700, 1300, 0.03, True, 0.06)
        order = [beta, alpha, delta] if policy == "performance" else [alpha, delta, beta]
        deadline, budget = body.get("deadline_s"), body.get("budget")
        for c in order:
            c["meets_deadline"] = deadline is None or c["finish_s"] <= deadline  # the contract: True without one
            c["within_budget"] = budget is None or c["cost"] <= budget
        fitting = [c for c in order if c["meets_deadline"] and c["within_budget"]]
        choice = fitting[0]["cluster"] if fitting else None
        reason = (f"{'earliest finish' if policy == 'performance' else 'lowest weighted score'} on {choice}" if choice
                  else f"no cluster can meet the deadline of {deadline:.0f} s")
        if body.get("clusters"):
            order = [c for c in order if c["cluster"] in body["clusters"]]
            choice = order[0]["cluster"] if order else None
        return {"policy": policy, "weights": {}, "candidates": order + [gamma], "choice": choice, "reason": reason,
                "rightsizing": {"time_limit_s": 600, "memory_mb": 512, "cores": 1, "nodes": 1,
                                "requested": {"time_limit_s": 3600, "memory_mb": 1024, "cores": 1, "nodes": 1},
                                "basis": "history", "history_jobs": 42, "note": "upper quantile of 42 runs"},
                "history": {"jobs": 42, "basis": "history", "note": ""}}

    def request(self, method, url, params=None, json=None, data=None, headers=None, timeout=None, stream=False):
        path = urlsplit(url).path[len(urlsplit(BASE).path):]
        if path == "/organization/decision/policies":
            return FakeResponse(200, POLICIES)
        if path == "/organization/decision/decide":
            self.decided.append(json)
            if self.decide_status != 200:
                return FakeResponse(self.decide_status, {"detail": "Not Found"})
            if json["parameters"].get("tasks", 1) > 4:
                return FakeResponse(422, {"detail": "tasks must be <= 4"})
            return FakeResponse(200, self.answer(json))
        if path == "/organization/workflow/template":
            return FakeResponse(200, [{k: TEMPLATE[k] for k in ("id", "name", "title", "version")}])
        if path == "/organization/workflow/template/t1":
            return FakeResponse(200, TEMPLATE)
        if path == "/organization/cluster/":
            return FakeResponse(200, [{"name": n, "container_runtime": "none", "relative_speed": 1.0}
                                      for n in ("alpha", "beta", "delta")])
        if path == "/organization/workflow/submit":
            self.submitted.append(json)
            return FakeResponse(201, {"id": "i1", "cluster": "alpha", "state": "NEW", "steps": [], "reason": ""})
        if path == "/organization/workflow/instance/i1":
            return FakeResponse(200, {"id": "i1", "cluster": "alpha", "state": "QUEUED", "steps": [], "reason": ""})
        return FakeResponse(404, {"detail": f"no route {method} {path}"})


@pytest.fixture
def api():
    return FakeDecisionApi()


@pytest.fixture
def client(api):
    return ApiClient(base_url=BASE, token="t", session=api)


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


# --- the client ---------------------------------------------------------------------------------------------
def test_decide_sends_only_the_constraints_given(client, api):
    client.decide("t1", {"tasks": 2}, policy="cost", budget=1.5, currency="EUR")
    assert api.decided[-1] == {"template": "t1", "parameters": {"tasks": 2}, "policy": "cost", "budget": 1.5,
                               "currency": "EUR"}
    assert client.policies()["default"] == "balanced"


# --- the app ------------------------------------------------------------------------------------------------
def test_opening_decides_for_the_first_template_under_the_default_policy(client, api):
    app = DecisionApp(client)
    assert app.policy.value == "balanced" and [v for _l, v in app.policy.options][:1] == ["performance"]
    assert app.template.value == "t1" and [f.name for f in app.fields] == ["samples", "tasks"]
    assert api.decided[-1] == {"template": "t1", "parameters": {"samples": 200000, "tasks": 2},
                               "policy": "balanced"}
    assert "chooses <b>alpha</b>" in app.choice.value and "lowest weighted score" in app.choice.value
    rows = {r["cluster"].split()[0]: r for r in app.table.rows}
    table = str(app.table.rows)
    # every candidate, chosen first and starred, estimated energy marked, cost with its currency
    assert [r["cluster"] for r in app.table.rows][0] == "alpha ★ chosen"
    assert list(rows).index("alpha") < list(rows).index("beta")
    assert [n for n, r in rows.items() if r["energy"].endswith("est.")] == ["alpha", "delta"]  # beta measured
    assert "0.05 EUR" in table and "0.90 EUR" in table and "60%" in table
    assert rows["gamma"]["cluster"] == "gamma (not usable)" and "no partition fits 4 tasks" in rows["gamma"]["note"]
    assert "4 cluster(s) compared under policy balanced" in app.status.value
    assert "meets" not in table and "within" not in table  # no deadline or budget asked: no vacuous status
    app.table.select(app.table.rows[3])  # a click on a row shows its long values whole under the grid
    assert "no partition fits 4 tasks" in app.table.detail.value
    assert "10.0 min" in app.rightsizing.value and "60.0 min" in app.rightsizing.value  # recommended vs asked
    assert "512 MiB" in app.rightsizing.value and "upper quantile of 42 runs" in app.rightsizing.value
    assert "learnt from 42 finished run(s)" in app.history.value
    assert "alpha: --cpu-freq=2000000 (2.00 GHz): about 12 % less energy" in app.cpu_freq.value
    assert "cost" in app.policy_about.value or "a bit of all" in app.policy_about.value


def test_the_plot_marks_the_choice_and_the_non_dominated_candidates(client):
    app = DecisionApp(client)
    fig = app.figure
    points = trace(fig, "candidates")
    assert list(points.text) == ["alpha (est.)", "delta (est.)", "beta"]  # gamma is not eligible: not drawn
    assert list(points.x) == [30.0, 2000 / 60, 5.1666666666666666] and list(points.y) == [0.05, 0.06, 0.90]
    assert list(points.marker.color) == [0.02, 0.03, 0.05]  # energy as colour ...
    assert points.marker.size[2] > points.marker.size[1] > points.marker.size[0]  # ... and as size
    front = trace(fig, "non-dominated")
    assert sorted(zip(front.x, front.y)) == sorted([(30.0, 0.05), (310 / 60, 0.90)])  # delta is dominated by alpha
    chosen = trace(fig, "chosen")
    assert (list(chosen.x), list(chosen.y), list(chosen.text)) == ([30.0], [0.05], ["alpha"])
    assert fig.layout.title.text == "balanced: chosen alpha" and fig.layout.yaxis.title.text == "cost (EUR)"


def test_switching_policy_asks_again_and_updates_in_place(client, api):
    app = DecisionApp(client)
    fig, asked = app.figure, len(api.decided)
    app.policy.value = "performance"
    assert len(api.decided) == asked + 1 and api.decided[-1]["policy"] == "performance"
    assert "chooses <b>beta</b>" in app.choice.value and "earliest finish" in app.choice.value
    assert [r["cluster"] for r in app.table.rows][:2] == ["beta ★ chosen", "alpha"]
    assert app.figure is fig  # the same figure, its data replaced
    assert list(trace(fig, "chosen").text) == ["beta"] and list(trace(fig, "chosen").y) == [0.90]
    assert fig.layout.title.text == "performance: chosen beta"
    app.policy.value = "cost"
    assert list(trace(fig, "chosen").text) == ["alpha"] and "chooses <b>alpha</b>" in app.choice.value


def test_deadline_budget_and_clusters_are_sent_and_an_impossible_deadline_is_reported(client, api):
    app = DecisionApp(client)
    app.budget.value = "2.0"
    app.currency.value = "eur"
    assert api.decided[-1]["budget"] == 2.0 and api.decided[-1]["currency"] == "EUR"
    app.deadline.value = "1"  # one minute: nobody finishes in time
    assert api.decided[-1]["deadline_s"] == 60
    assert "chooses no cluster" in app.choice.value and "no cluster can meet the deadline of 60 s" in app.choice.value
    assert [r["deadline"] for r in app.table.rows].count("✗ misses") == 3
    assert [r["budget"] for r in app.table.rows].count("✓ within") == 3
    assert list(trace(app.figure, "chosen").x) == [] and app.figure.layout.title.text == "balanced: no cluster chosen"
    app.deadline.value = "1e30"  # refused with a message, never clamped to something else
    assert "deadline: between 0 and 1e+06" in app.status.value and api.decided[-1]["deadline_s"] == 60
    app.deadline.value = "0"
    assert "deadline_s" not in api.decided[-1]
    app.clusters.value = ("beta",)
    assert api.decided[-1]["clusters"] == ["beta"] and "chooses <b>beta</b>" in app.choice.value


def test_a_refusal_is_shown_and_the_last_answer_kept(client, api):
    app = DecisionApp(client)
    app.currency.value = "euro"
    assert "three capital letters" in app.status.value
    app.currency.value = ""
    tasks = next(f for f in app.fields if f.name == "tasks")
    tasks.input.value = "9"  # the form says so and nothing is sent
    sent = len(api.decided)
    app.decide()
    assert len(api.decided) == sent and "fix the fields" in app.status.value
    tasks.input.value = "3"
    api.decide_status = 503
    app.policy.value = "performance"
    assert "no decision: Not Found" in app.status.value and "chooses <b>alpha</b>" in app.choice.value


def test_helpers():
    assert duration(None) == "—" and duration(45) == "45 s"
    assert duration(600) == "10.0 min" and duration(9000) == "2.5 h"
    assert money(0.0012, "EUR") == "0.0012 EUR" and money(3, "USD") == "3.00 USD" and money(None, "EUR") == "—"
    assert cpu_freq_text(None) == "" and "1.80 GHz" in cpu_freq_text({"recommended_khz": 1800000, "saving_pct": 9,
                                                                       "slowdown_pct": 2})
    pts = [{"finish_s": 1, "cost": 5, "energy_kwh": 1}, {"finish_s": 5, "cost": 1, "energy_kwh": 1},
           {"finish_s": 5, "cost": 5, "energy_kwh": 1}, {"finish_s": 5, "cost": 5, "energy_kwh": 0.5},
           {"finish_s": 1, "cost": 5, "energy_kwh": 1}]
    # the third is beaten by the fourth (less energy); equal points do not dominate each other
    assert non_dominated(pts) == [True, True, False, True, True]
    assert candidate_rows([], None) == []
    assert "no history yet" in rightsizing_html({"basis": "template-defaults", "requested": {}})
    assert "42 finished runs" in rightsizing_html({"basis": "history", "history_jobs": 42, "requested": {}})


# --- the Submit app's inline right-sizing -------------------------------------------------------------------
def test_submit_shows_the_recommendation_and_sends_what_was_accepted(client, api):
    app = SubmitApp(client, poll_s=0)
    assert app.advice_box.layout.display == "none"  # nothing to advise before a template is chosen
    app.template.value = "t1"
    assert api.decided[-1] == {"template": "t1", "parameters": {"samples": 200000, "tasks": 2}}
    assert app.advice_box.layout.display is None  # shown
    assert "auto would choose <b>alpha</b>" in app.rightsizing.value and "10 min" in app.rightsizing.value
    assert "--cpu-freq=2000000" in app.rightsizing.value and app.accept_cpu_freq.layout.display is None
    app.cluster.value = "beta"  # beta has no frequency advice: that checkbox goes away
    assert api.decided[-1]["clusters"] == ["beta"] and app.accept_cpu_freq.layout.display == "none"
    app.submit(wait=True)
    assert "accept_rightsizing" not in api.submitted[-1] and "cpu_freq_khz" not in api.submitted[-1]
    app.cluster.value = "auto"
    app.accept_rightsizing.value = app.accept_cpu_freq.value = True
    app.submit(wait=True)
    assert api.submitted[-1]["accept_rightsizing"] is True and api.submitted[-1]["cpu_freq_khz"] == 2000000
    assert api.submitted[-1]["cluster"] == "auto"


def test_submit_works_without_the_decision_api(client, api):
    api.decide_status = 404
    app = SubmitApp(client, poll_s=0)
    app.template.value = "t1"
    assert api.decided and app.advice_box.layout.display == "none"
    app.accept_rightsizing.value = True  # hidden and stale: never sent
    assert app.submit(wait=True) == "i1"
    assert "accept_rightsizing" not in api.submitted[-1]


def test_the_figure_is_made_live_on_display_with_what_it_shows_so_far(client):
    """A FigureWidget's changes before its view exists are lost, so the app builds it when it is shown."""
    app = DecisionApp(client)
    assert app.plot_box.children == () and not app.live
    app.go_live()
    assert app.live and len(app.plot_box.children) == 1
    assert list(trace(app.figure, "chosen").text) == ["alpha"]  # the decision taken before display is kept
    app.policy.value = "performance"
    assert list(trace(app.figure, "chosen").text) == ["beta"] and len(app.plot_box.children) == 1


def test_both_apps_show_the_requests_the_history_says_are_too_tight():
    from heroes_widgets.submit_app import advice_html

    rs = {"time_limit_s": 3600, "memory_mb": 1024, "cores": 2, "nodes": 1, "basis": "history", "history_jobs": 5,
          "requested": {"time_limit_s": 3600, "memory_mb": 1024}, "note": "",
          "warnings": ["step run: 2 of its last 5 runs hit the time limit (TIMEOUT) <see>"]}
    for text in (rightsizing_html(rs), advice_html(rs, {}, "alpha", auto=False)):
        assert "2 of its last 5 runs hit the time limit (TIMEOUT) &lt;see&gt;" in text   # escaped, shown
    assert "warning" not in rightsizing_html({**rs, "warnings": []})
