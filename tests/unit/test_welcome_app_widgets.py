"""Unit tests of the start page (Welcome app), the navigation bar and the shared grid, with no kernel, against
a fake transport that answers like the API: cards and links by role (no Admin for a plain user), clusters
ready or why not, templates, recent runs whose state follows, this month's energy; the grid keeps the row
picked by a click and shows it whole."""
from __future__ import annotations

import copy
import json
from urllib.parse import urlsplit

import pytest

from heroes_widgets.api_client import ApiClient
from heroes_widgets.grid import Column, Table, grid_frame
from heroes_widgets.nav import apps_for, nav_html
from heroes_widgets.welcome_app import WelcomeApp, month_start

BASE = "http://hub.example:8000/services/heroes/api/v1"


class Response:
    def __init__(self, status: int, body=None):
        self.status_code = status
        self.content = json.dumps(body).encode() if body is not None else b""
        self.reason = "Fake"
        self._body = copy.deepcopy(body)

    def json(self):
        return self._body


class FakeApi:
    def __init__(self, roles=("user",)):
        self.roles = list(roles)
        self.state = "QUEUED"
        self.energy_params: dict = {}

    def request(self, method, url, params=None, json=None, data=None, headers=None, timeout=None, stream=False):
        path = urlsplit(url).path.split("/api/v1", 1)[1]
        answers = {
            "/organization/auth/me": {"username": "bob", "organization": "acme", "groups": [], "roles": self.roles,
                                      "via": "hub"},
            "/organization/cluster/": [{"name": "alpha", "container_runtime": "charliecloud", "relative_speed": 1.0},
                                       {"name": "beta", "container_runtime": "apptainer", "relative_speed": 2.0}],
            "/organization/workflow/template": [{"id": "t1", "name": "heat", "title": "Heat diffusion",
                                                 "version": 3}],
            "/organization/workflow/instance": [{"id": "d" * 32, "name": "first run", "template_name": "heat",
                                                 "cluster": "alpha", "state": self.state,
                                                 "created_at": "2026-12-05T08:00:00"}],
            "/organization/decision/decide": {"candidates": [
                {"cluster": "alpha", "eligible": True, "wait_s": 0, "reason": ""},
                {"cluster": "beta", "eligible": False, "wait_s": None, "reason": "login node unreachable"}]},
        }
        if path == "/organization/decision/energy/summary":
            self.energy_params = dict(params)
            return Response(200, {"groups": [{"group": "bob", "steps": 3, "energy_kwh": 0.0125, "estimated": True}]})
        if path in answers:
            return Response(200, answers[path])
        return Response(404, {"detail": f"no route {path}"})


def welcome(api, monkeypatch) -> WelcomeApp:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/bob/")
    return WelcomeApp(ApiClient(base_url=BASE, token="t", session=api), auto=False)


def test_a_user_gets_a_card_per_app_but_no_admin_card(monkeypatch):
    app = welcome(FakeApi(), monkeypatch)
    cards = app.cards.value
    for key in ("submit", "monitor", "data", "energy", "decision"):
        assert f"heroes-card-{key}' href='/user/bob/voila/render/{key}.ipynb'" in cards
    assert "heroes-card-admin" not in cards and "Welcome, bob!" in app.greeting.value


def test_an_org_admin_gets_the_admin_card_and_link(monkeypatch):
    app = welcome(FakeApi(roles=("user", "org-admin")), monkeypatch)
    assert "heroes-card-admin' href='/user/bob/voila/render/admin.ipynb'" in app.cards.value
    assert [a.key for a in apps_for({"roles": ["org-admin"]})][-1] == "admin"


def test_what_is_ready_runs_and_energy(monkeypatch):
    api = FakeApi()
    app = welcome(api, monkeypatch)
    assert "checking" in app.clusters_box.value  # the check runs in the background: the page shows at once
    app.check_clusters()
    assert "alpha</b> (charliecloud, speed 1): <span style='color:#060'>&#10004; ready</span> (starts at once)" \
        in app.clusters_box.value
    assert "beta" in app.clusters_box.value and "login node unreachable" in app.clusters_box.value
    assert "Heat diffusion" in app.templates_box.value and "(v3)" in app.templates_box.value
    assert "QUEUED" in app.recent.value and "first run" in app.recent.value
    api.state = "COMPLETED"
    app.refresh()  # what the timer does: the state follows without a reload
    assert "COMPLETED" in app.recent.value and "QUEUED" not in app.recent.value
    assert "0.0125 kWh" in app.energy.value and "3 step(s)" in app.energy.value
    assert api.energy_params["user"] == "bob" and api.energy_params["start"].endswith("-01T00:00:00+00:00")
    app.check_again()
    assert "checked again at" in app.status.value


def test_nav_bar_marks_the_current_app_and_escapes_names():
    bar = nav_html("monitor", {"username": "<b>", "organization": "acme", "roles": ["user"]}, "/user/x/")
    assert "heroes-nav-monitor heroes-nav-current' href='/user/x/voila/render/monitor.ipynb'" in bar
    assert "heroes-nav-admin" not in bar and "&lt;b&gt; (acme)" in bar and "href='/user/x/lab'" in bar
    assert month_start().endswith("-01T00:00:00+00:00")


def test_grid_keeps_the_clicked_row_and_shows_it_whole():
    picked = []
    table = Table([Column("id", "id", 60), Column("name", "name", 80)], "t", on_select=picked.append)
    long_name = "n" * 300
    table.update([{"id": "1", "name": long_name}, {"id": "2", "name": "short"}])
    table._clicked({"region": "body", "primary_key_row": 0})  # what the browser's click sends
    assert picked == [{"id": "1", "name": long_name}] and long_name in table.detail.value
    table.update([{"id": "1", "name": "renamed"}], keep="id")
    assert "renamed" in table.detail.value
    table.update([{"id": "2", "name": "x"}], keep="id")
    assert table.detail.value == "" and table.selected is None
    table._clicked({"region": "column-header", "primary_key_row": 0})  # sorting, not picking
    assert len(picked) == 1
    frame = grid_frame([Column("n", "n"), Column("s", "s")], [{"n": 10, "s": "a"}, {"n": 9, "s": None}])
    assert list(frame["n"]) == [10, 9] and list(frame["s"]) == ["a", ""]  # numbers sort as numbers


def test_launcher_cards_open_the_apps_through_a_page_not_a_redirect(monkeypatch):
    """jupyter-server-proxy rewrote a 302's path into the proxied server; the page moves on by itself."""
    import threading
    import urllib.request
    from http.server import ThreadingHTTPServer

    from heroes_widgets.launcher import redirect_handler, server_proxy_config

    servers = server_proxy_config("/venv/bin/python")["ServerProxy"]["servers"]
    assert "heroes-admin" not in servers and servers["heroes-submit"]["command"][-2:] == ["{port}", "submit"]
    assert servers["heroes-submit"]["launcher_entry"]["title"] == "HEROES Submit"
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), redirect_handler("/user/bob/voila/render/submit.ipynb"))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{httpd.server_port}/anything") as answer:
            body = answer.read().decode()
        assert answer.status == 200
        assert "url=/user/bob/voila/render/submit.ipynb" in body and 'replace("/user/bob/voila/render/submit.ipynb")' in body
    finally:
        httpd.shutdown()
