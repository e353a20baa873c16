"""The demo-data component's steps without the stack: what a first run adds, that a second adds nothing, and
that a login node presenting another host key than the stack's own key file is never enrolled. The service
is an in-memory stand-in here; tests/integration/test_demo_data.py runs the component against the real one."""
from __future__ import annotations

import pytest

from heroes_dev.components import demo_data
from heroes_dev.settings import StackSettings

PINNED = {"alpha": "SHA256:" + "a" * 43, "beta": "SHA256:" + "b" * 43}


class Response:
    def __init__(self, status: int, body):
        self.status_code, self._body = status, body

    def json(self):
        return self._body


class FakeService(demo_data.DemoClient):
    """Answers the demo's REST calls from dicts; records every write."""

    def __init__(self, settings, offered=None):
        self.settings = settings
        self.offered = offered or PINNED
        self.clusters_of = {"acme": {}, "globex": {}}
        self.templates_of = {"acme": set(), "globex": set()}
        self.objects: dict[str, set[str]] = {}
        self.writes: list[tuple[str, str, str]] = []

    def close(self):
        pass

    def call(self, user, method, path, expect=(200,), **kwargs):
        org = "globex" if user in ("carol", "dave") else "acme"
        if (method, path) == ("GET", "/organization/admin/cluster/"):
            return Response(200, list(self.clusters_of[org].values()))
        if (method, path) == ("GET", "/organization/workflow/template"):
            return Response(200, [{"name": n} for n in sorted(self.templates_of[org])])
        if (method, path) == ("GET", "/organization/data/list"):
            return Response(200, {"buckets": [{"bucket": f"heroes-u-{user}", "kind": "user", "default": True}]})
        if method == "GET" and path.endswith("/list"):
            return Response(200, {"objects": [{"key": k} for k in sorted(self.objects.get(user, ()))]})
        if (method, path) == ("POST", "/organization/admin/cluster/host-key"):
            port = kwargs["json"]["port"]
            name = "alpha" if port == self.settings.ports.alpha_ssh else "beta"
            return Response(200, {"fingerprint": self.offered[name]})
        self.writes.append((user, method, path))
        if path == "/organization/admin/cluster/":
            body = kwargs["json"]
            assert body["host_key_fingerprint"] == PINNED[body["name"]]
            assert body["service_private_key"].startswith("-----BEGIN")
            self.clusters_of[org][body["name"]] = {"name": body["name"], "host_key_fingerprint": PINNED[body["name"]]}
            return Response(201, {})
        if path == "/organization/admin/workflow/template":
            name = next(line.split(":", 1)[1].strip() for line in kwargs["json"]["source"].splitlines()
                        if line.startswith("name:"))
            self.templates_of[org].add(name)
            return Response(201, {"version": 1})
        if path == "/organization/data/upload":
            self.objects.setdefault(user, set()).add(kwargs["params"]["key"])
            return Response(201, {})
        raise AssertionError(f"unexpected call {method} {path}")


@pytest.fixture
def settings(tmp_path, monkeypatch):
    settings = StackSettings(state=tmp_path)
    key = settings.etc("login") / "keys" / "heroes"
    key.parent.mkdir(parents=True)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nstand-in\n-----END OPENSSH PRIVATE KEY-----\n")
    monkeypatch.setattr(demo_data, "expected_fingerprint", lambda _settings, cluster: PINNED[cluster])
    return settings


def test_first_run_adds_everything_and_the_second_adds_nothing(settings):
    service = FakeService(settings)
    assert demo_data.missing(service, settings)
    first = demo_data.apply(settings, service)
    examples = sorted(p.stem for p in (settings.repo / demo_data.EXAMPLES).glob("*.yaml"))
    assert len(examples) == 3
    for org in ("acme", "globex"):
        assert set(service.clusters_of[org]) == {"alpha", "beta"}
        assert service.templates_of[org] == set(examples)
    assert {u for u, _, p in service.writes if p == "/organization/data/upload"} == set(demo_data.DEMO_USERS)
    # each organization's admin did their organization's part
    assert {u for u, _, p in service.writes if "/admin/" in p} == {"alice", "dave"}
    assert len(first.done) == 2 * 2 + 2 * 3 + 4
    assert demo_data.missing(service, settings) == []

    writes = len(service.writes)
    second = demo_data.apply(settings, service)
    assert second.done == [] and len(service.writes) == writes
    assert len(second.present) == len(first.done)


def test_a_login_node_with_another_host_key_is_not_enrolled(settings):
    service = FakeService(settings, offered={**PINNED, "beta": "SHA256:" + "c" * 43})
    with pytest.raises(demo_data.DemoError, match="not the stack's"):
        demo_data.apply(settings, service)
    assert "beta" not in service.clusters_of["acme"]


def test_an_enrolled_cluster_pinning_an_old_host_key_is_reported_not_replaced(settings):
    service = FakeService(settings)
    demo_data.apply(settings, service)
    service.clusters_of["globex"]["beta"]["host_key_fingerprint"] = "SHA256:" + "d" * 43
    writes = len(service.writes)
    with pytest.raises(demo_data.DemoError, match="remove the cluster .* as dave"):
        demo_data.apply(settings, service)
    assert len(service.writes) == writes
    assert "pins another host key" in " ".join(demo_data.missing(service, settings))


def test_the_cluster_profiles_make_the_policies_disagree():
    """No history: run time = request / speed. Energy and cost, computed as the decision module does for a
    one-core, ten-minute step, put beta first for energy and alpha first for cost."""
    request_s = 600.0

    def energy_j(name):
        p, speed = demo_data.CLUSTERS[name]["energy_profile"], demo_data.CLUSTERS[name]["relative_speed"]
        return (p["idle_watts_per_node"] + p["watts_per_core"]) * request_s / speed * p["pue"]

    def cost(name):
        m, speed = demo_data.CLUSTERS[name]["price_model"], demo_data.CLUSTERS[name]["relative_speed"]
        return request_s / speed / 3600 * m["per_core_hour"] + energy_j(name) / 3.6e6 * m["per_kwh"]

    assert energy_j("beta") < energy_j("alpha") and cost("alpha") < cost("beta")
    assert demo_data.CLUSTERS["beta"]["relative_speed"] > demo_data.CLUSTERS["alpha"]["relative_speed"]


def test_the_sample_input_is_a_small_deterministic_csv():
    data = demo_data.sample_csv()
    assert data == demo_data.sample_csv() and len(data) < 16_000
    header, *rows = data.decode().splitlines()
    assert header == "cores,input_gb,iterations,runtime_s" and len(rows) == 240
