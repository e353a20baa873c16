"""The ``heroes`` user commands without a service (requests answered by a fake): parameters from key=value and
YAML, the documented exit codes, --json listings, the login file's mode, and the gateway's CLI keeping its own
``dev`` and ``decision`` groups next to them."""
from __future__ import annotations

import json
import os
import stat

import pytest
import requests

from heroes_dev.cli import build_parser as gateway_parser
from heroes_sdk import cli, errors
from sdk_fakes import FakeResponse, FakeTransport, instance

ME = {"username": "bob", "organization": "acme", "groups": [], "roles": ["user"], "via": "keycloak"}
TOKENS = {"access_token": "acc", "refresh_token": "ref", "expires_in": 300, "refresh_expires_in": 1800}
CLUSTERS = [{"id": "c1", "name": "alpha", "partitions": [{"name": "debug", "default": True, "nodes": 2,
                                                          "cpus_per_node": 4, "memory_mb": 8000}],
             "price_model": {"kind": "on-premises", "currency": "EUR", "per_core_hour": 0.02}}]


@pytest.fixture
def service(monkeypatch, tmp_path):
    """Every requests.Session answers from ``routes`` (path -> body or FakeResponse); config in tmp_path."""
    routes: dict = {}

    def route(method, path, call):
        answer = routes.get((method, path), routes.get(path))
        if answer is None:
            return FakeResponse(404, {"detail": f"no route {path}"})
        if callable(answer):
            return answer(call)
        return answer if isinstance(answer, FakeResponse) else FakeResponse(200, answer)

    transport = FakeTransport(route)
    monkeypatch.setattr(requests.Session, "request", lambda self, method, url, **kw: transport.request(method, url, **kw))
    monkeypatch.setenv("HEROES_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("HEROES_API_URL", "http://gw.test")
    for name in ("JUPYTERHUB_API_TOKEN", "HEROES_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    transport.routes = routes
    return transport


def run(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_parameters_from_words_and_a_yaml_file(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("points: 100\nlabel: from file\nalpha: 0.5\n")
    args = cli.build_parser().parse_args(["submit", "heat-diffusion", "-f", str(params), "points=200",
                                          "write_profile=false", "label=two words", "data=s3://b/k.csv", "empty="])
    from heroes_sdk.cli_commands import parameters

    assert parameters(args) == {"points": 200, "label": "two words", "alpha": 0.5, "write_profile": False,
                                "data": "s3://b/k.csv", "empty": ""}
    with pytest.raises(cli.UsageError, match="not key=value"):
        parameters(cli.build_parser().parse_args(["decide", "t", "points"]))
    params.write_text("- a list\n")
    with pytest.raises(cli.UsageError, match="mapping"):
        parameters(cli.build_parser().parse_args(["decide", "t", "-f", str(params)]))


def test_exit_codes_are_the_documented_ones():
    inst = type("I", (), {"id": "x", "state": "FAILED", "reason": ""})()
    cases = [(cli.UsageError("x"), 2), (errors.AuthenticationError("x", 401), 3), (errors.NotFound("x", 404), 4),
             (errors.PermissionDenied("x", 403), 4), (errors.InvalidRequest("x", 422), 5),
             (errors.Conflict("x", 409), 5), (errors.QuotaExceeded("x", 413), 5),
             (errors.ServiceUnavailable("x", 503), 6), (errors.SubmitUncertain("x", "l"), 6),
             (errors.HeroesError("x", 500), 6), (errors.InstanceFailed(inst), 7),
             (errors.WaitTimeout(inst, 1), 8), (errors.HeroesError("x"), 1)]
    assert [(type(e).__name__, cli.exit_code(e)) for e, _ in cases] == [(type(e).__name__, c) for e, c in cases]
    for code in range(9):
        assert f"{code} " in cli.EXIT_CODES_HELP


def test_not_logged_in_is_exit_3_with_a_hint(service, capsys):
    code, out, err = run(["clusters"], capsys)
    assert code == 3 and out == "" and "heroes login" in err


def test_login_keeps_tokens_0600_and_listings_speak_json(service, capsys, monkeypatch, tmp_path):
    service.routes["/organization/auth/login"] = lambda call: (
        FakeResponse(200, TOKENS) if call["json"]["password"] == "bob-pass" else
        FakeResponse(401, {"detail": "invalid username or password"}))
    service.routes["/organization/auth/me"] = ME
    service.routes["/organization/cluster/"] = CLUSTERS
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("wrong\n"))
    code, _, err = run(["login", "-u", "bob", "--password-stdin"], capsys)
    assert code == 3 and "invalid username or password" in err
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("bob-pass\n"))
    code, _, err = run(["login", "-u", "bob", "--password-stdin"], capsys)
    path = tmp_path / "cfg" / "credentials.json"
    assert code == 0 and "as bob (acme)" in err and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "bob-pass" not in path.read_text()
    code, out, _ = run(["clusters", "--json"], capsys)
    assert code == 0 and json.loads(out)[0]["partitions"][0]["cpus_per_node"] == 4
    code, out, _ = run(["clusters"], capsys)
    assert code == 0 and out.splitlines()[0].split()[:2] == ["CLUSTER", "PARTITION"] and "debug*" in out
    assert service.calls[-1]["headers"]["Authorization"] == "Bearer acc"


def test_submit_wait_exit_7_when_the_instance_fails(service, capsys, monkeypatch):
    monkeypatch.setenv("HEROES_ACCESS_TOKEN", "acc")
    failed = instance(state="FAILED", reason="step simulate exited 1")
    service.routes[("POST", "/organization/workflow/submit")] = lambda call: FakeResponse(201, instance())
    service.routes[f"/organization/workflow/instance/{'a' * 32}"] = failed
    code, out, err = run(["submit", "heat-diffusion", "points=20", "--cluster", "alpha", "--wait"], capsys)
    assert code == 7 and out.strip() == "a" * 32 and "FAILED" in err and "exited 1" in err
    submitted = next(c for c in service.calls if c["method"] == "POST")["json"]
    assert submitted["parameters"] == {"points": 20} and submitted["cluster"] == "alpha"
    code, out, _ = run(["status", "--json", "a" * 32], capsys)
    assert code == 0 and json.loads(out)["state"] == "FAILED" and "client" not in json.loads(out)
    service.routes[f"/organization/workflow/instance/{'b' * 32}"] = FakeResponse(404, {"detail": "instance not found"})
    code, _, err = run(["status", "b" * 32], capsys)
    assert code == 4 and "instance not found" in err


def test_the_gateway_cli_keeps_its_groups():
    parser = gateway_parser()
    assert parser.parse_args(["dev", "status", "--json"]).json is True
    assert parser.parse_args(["decision", "evaluate", "--trace", "x.swf"]).trace == "x.swf"
    args = parser.parse_args(["submit", "heat-diffusion", "points=3", "--wait"])
    assert args.wait and args.values == ["points=3"]
    assert parser.parse_args(["data", "put", "f.csv", "in/f.csv"]).key == "in/f.csv"
    assert parser.parse_args(["logs", "-f", "abc", "simulate"]).follow is True
