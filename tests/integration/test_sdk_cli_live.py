"""The ``heroes`` command line against the running gateway, as a person in a terminal would use it: log in
(tokens kept 0600), list with --json, decide, submit from key=value and a YAML file with --wait, status, logs
(-f), outputs, energy, data put/get/rm, cancel, log out; every failure with its documented exit code."""
from __future__ import annotations

import json
import stat

import pytest
import yaml

from sdk_support import demo, run_cli  # noqa: F401

pytestmark = pytest.mark.integration


def login(url: str, cfg, user: str, password: str):
    return run_cli(["login", "--url", url, "-u", user, "--password-stdin"], {"HEROES_CONFIG_DIR": str(cfg)},
                   stdin=password + "\n")


@pytest.fixture(scope="module")
def bob_cli(demo, tmp_path_factory):
    """``heroes ...`` as bob, logged in once with his password (credentials in a folder of this test)."""
    cfg = tmp_path_factory.mktemp("bob-cfg") / "heroes"
    done = login(demo["url"], cfg, "bob", "bob-pass")
    assert done.returncode == 0, done.stderr
    return lambda *args, **kw: run_cli(list(args), {"HEROES_CONFIG_DIR": str(cfg)}, **kw)


def test_login_keeps_tokens_0600_and_a_wrong_password_is_exit_3(demo, tmp_path):
    cfg = tmp_path / "heroes"
    wrong = login(demo["url"], cfg, "bob", "not-bobs")
    assert wrong.returncode == 3 and "invalid username or password" in wrong.stderr and not cfg.exists()
    ok = login(demo["url"], cfg, "bob", "bob-pass")
    assert ok.returncode == 0 and "as bob (acme)" in ok.stderr, ok.stderr
    path = cfg / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(cfg.stat().st_mode) == 0o700
    record = json.loads(path.read_text())
    assert record["url"] == demo["url"] and record["username"] == "bob" and "bob-pass" not in path.read_text()
    env = {"HEROES_CONFIG_DIR": str(cfg)}
    assert json.loads(run_cli(["whoami", "--json"], env).stdout)["username"] == "bob"
    out = run_cli(["logout"], env)
    assert out.returncode == 0 and not path.exists()
    again = run_cli(["clusters"], env)
    assert again.returncode == 3 and "heroes login" in again.stderr


def test_listings_and_decide_speak_json(bob_cli):
    clusters = json.loads(bob_cli("clusters", "--json").stdout)
    demo = {c["name"]: c for c in clusters if c["name"] in ("alpha", "beta")}
    assert set(demo) == {"alpha", "beta"}
    assert all(c["partitions"] and c["price"]["currency"] == "EUR" for c in demo.values())
    table = bob_cli("clusters").stdout.splitlines()
    assert table[0].split()[:2] == ["CLUSTER", "PARTITION"] and any(l.startswith("alpha") for l in table[1:])
    templates = json.loads(bob_cli("templates", "--json").stdout)
    assert {"heat-diffusion", "monte-carlo-pi", "sklearn-train"} <= {t["name"] for t in templates}
    shown = bob_cli("templates", "heat-diffusion")
    assert shown.returncode == 0 and "points" in shown.stdout and "ftcs-smoothed" in shown.stdout
    decided = bob_cli("decide", "monte-carlo-pi", "samples=20000", "tasks=2", "--policy", "cost", "--json",
                      "--cluster", "alpha", "--cluster", "beta")  # other tests may enroll clusters meanwhile
    decision = json.loads(decided.stdout)
    assert decision["policy"] == "cost" and decision["choice"] in {"alpha", "beta"}
    assert {c["cluster"] for c in decision["candidates"]} == {"alpha", "beta"}
    missing = bob_cli("decide", "no-such-template")
    assert missing.returncode == 4 and "not found" in missing.stderr


def test_submit_wait_status_logs_outputs_energy(bob_cli, tmp_path):
    refused = bob_cli("submit", "heat-diffusion", "points=3", "--cluster", "alpha")
    assert refused.returncode == 5 and "points" in refused.stderr and ">= 8" in refused.stderr
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"points": 40, "steps": 500, "label": "from yaml"}))
    run = bob_cli("submit", "heat-diffusion", "-f", str(params), "steps=200", "--wait")  # auto: the queues count
    assert run.returncode == 0, run.stderr
    iid = run.stdout.strip()
    assert len(iid) == 32 and f"{iid}: COMPLETED" in run.stderr
    status = json.loads(bob_cli("status", iid, "--json").stdout)
    assert status["state"] == "COMPLETED" and status["cluster"] in ("alpha", "beta")
    assert status["parameters"] | {"points": 40, "steps": 200, "label": "from yaml"} == status["parameters"]
    assert iid in {i["id"] for i in json.loads(bob_cli("status", "--json", "--limit", "5").stdout)}
    assert "max_error=" in bob_cli("logs", iid, "simulate").stdout
    outputs = json.loads(bob_cli("outputs", "ls", iid, "--json").stdout)
    assert "outputs/summary.txt" in {o["name"] for o in outputs}
    summary = bob_cli("outputs", "get", iid, "outputs/summary.txt", "-o", "-")
    assert summary.returncode == 0 and "label=from yaml\nscheme=ftcs\npoints=40\nsteps=200\n" in summary.stdout
    fetched = bob_cli("outputs", "get", iid, "outputs/profile.csv", "-o", str(tmp_path))
    assert fetched.returncode == 0 and (tmp_path / "profile.csv").read_text().startswith("x,u,exact\n")
    energy = json.loads(bob_cli("energy", iid, "--json").stdout)
    assert [r["instance_id"] for r in energy] == [iid] and energy[0]["energy_j"] > 0
    ended = bob_cli("cancel", iid)
    assert ended.returncode == 5 and "already ended" in ended.stderr
    nowhere = bob_cli("status", "0" * 32)
    assert nowhere.returncode == 4 and "not found" in nowhere.stderr


def test_logs_follow_a_pipeline_to_its_end(bob_cli):
    submitted = bob_cli("submit", "monte-carlo-pi", "samples=30000", "tasks=2")  # auto: where it starts soonest
    iid = submitted.stdout.strip()
    assert submitted.returncode == 0 and len(iid) == 32, submitted.stderr
    followed = bob_cli("logs", "-f", iid, timeout=420)
    assert followed.returncode == 0, followed.stderr
    assert "[post] pi ~ 3.1" in followed.stdout, followed.stdout[-2000:]
    assert json.loads(bob_cli("status", iid, "--json").stdout)["state"] == "COMPLETED"


def test_data_put_ls_get_rm(bob_cli, tmp_path):
    local = tmp_path / "notes.csv"
    local.write_text("a,b\n1,2\n")
    put = bob_cli("data", "put", str(local), "sdk-cli/notes.csv")
    assert put.returncode == 0 and put.stdout.strip().endswith("sdk-cli/notes.csv (8 bytes)"), put
    again = bob_cli("data", "put", str(local), "sdk-cli/notes.csv", "--no-overwrite")
    assert again.returncode == 5 and "already exists" in again.stderr
    listing = json.loads(bob_cli("data", "ls", "sdk-cli/", "--json").stdout)
    assert [(o["key"], o["size"]) for o in listing["objects"]] == [("sdk-cli/notes.csv", 8)]
    assert bob_cli("data", "get", "sdk-cli/notes.csv", "-").stdout == "a,b\n1,2\n"
    assert bob_cli("data", "rm", "sdk-cli/").returncode == 0
    assert json.loads(bob_cli("data", "ls", "sdk-cli/", "--json").stdout)["objects"] == []
    assert bob_cli("data", "get", "sdk-cli/notes.csv", str(tmp_path / "x")).returncode == 4


def test_carol_cannot_reach_bobs_instance_from_the_command_line(demo, bob_cli, tmp_path):
    iid = json.loads(bob_cli("status", "--json", "--limit", "1").stdout)[0]["id"]
    cfg = tmp_path / "carol"
    assert login(demo["url"], cfg, "carol", "carol-pass").returncode == 0
    env = {"HEROES_CONFIG_DIR": str(cfg)}
    for args in (["status", iid], ["logs", iid], ["cancel", iid], ["outputs", "ls", iid]):
        seen = run_cli(args, env)
        assert seen.returncode == 4 and "not found" in seen.stderr, (args, seen)
    assert iid not in run_cli(["status", "--json"], env).stdout
