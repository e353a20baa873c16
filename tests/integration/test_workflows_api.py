"""Workflows end to end on the embedded stack: real Keycloak tokens, real S3, real sshd + Slurm of alpha and
beta (per-user certificates: bob's jobs run as bob), the charliecloud image, the reconciler in the service.
"""
from __future__ import annotations

import ast
import glob
import os
import pwd
import secrets
import subprocess

import pytest

from heroes_dev.components.slurm import slurm_conf_path
from workflow_support import (EXAMPLES, download, own_bucket, publish, swf_csv, upload, wait_final,  # noqa: F401
                              wait_state, wf)

pytestmark = pytest.mark.integration


def sacct(stack, cluster: str, *args: str) -> list[list[str]]:
    env = dict(os.environ, SLURM_CONF=str(slurm_conf_path(stack, cluster)))
    out = subprocess.run(["sacct", "--parsable2", "--noheader", "-X", "--allusers", *args], env=env,
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def examples(wf):
    alice = wf["apis"]["alice"]
    return {p.stem: publish(alice, p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))}


def test_templates_are_versioned_and_scoped(wf, examples):
    alice, bob, carol = (wf["apis"][n] for n in ("alice", "bob", "carol"))
    again = publish(alice, (EXAMPLES / "heat-diffusion.yaml").read_text())
    assert again["name"] == "heat-diffusion" and again["version"] == examples["heat-diffusion"]["version"] + 1
    listed = bob.get("/organization/workflow/template").json()
    names = {t["name"]: t for t in listed}
    assert set(examples) <= set(names) and names["heat-diffusion"]["version"] == again["version"]
    assert len(bob.get("/organization/workflow/template", params={"all_versions": True}).json()) > len(listed)
    one = bob.get(f"/organization/workflow/template/{examples['monte-carlo-pi']['id']}").json()
    assert [p["name"] for p in one["parameters"]] == ["samples", "tasks", "seed"]
    assert one["parameters"][1] | {"min": 1, "max": 4, "type": "int", "required": False} == one["parameters"][1]
    # other organizations see nothing; users cannot publish; bad templates say why
    assert carol.get("/organization/workflow/template").json() == []
    assert carol.get(f"/organization/workflow/template/{examples['heat-diffusion']['id']}").status_code == 404
    assert bob.post("/organization/admin/workflow/template", json={"source": "name: x"}).status_code == 403
    bad = alice.post("/organization/admin/workflow/template", json={"template": {
        "name": "loop", "steps": [{"name": "a", "command": ["true"], "depends_on": ["b"]},
                                  {"name": "b", "command": ["true"], "depends_on": ["a"]}]}})
    assert bad.status_code == 422 and "cycle" in bad.text
    bad = alice.post("/organization/admin/workflow/template", json={"template": {
        "name": "evil", "steps": [{"name": "a;touch /tmp/x", "command": ["true"]}]}})
    assert bad.status_code == 422 and "steps.0.name" in bad.text
    bad = alice.post("/organization/admin/workflow/template", json={"template": {
        "name": "ghost", "steps": [{"name": "a", "command": ["echo", "{nope}"]}]}})
    assert bad.status_code == 422 and "unknown placeholder" in bad.text
    r = alice.delete(f"/organization/admin/workflow/template/{again['id']}")
    assert r.status_code == 204
    assert bob.get(f"/organization/workflow/template/{again['id']}").status_code == 404


def test_parameters_are_validated(wf, examples):
    bob = wf["apis"]["bob"]
    tid = examples["heat-diffusion"]["id"]
    cases = [({"points": 3}, "points"), ({"points": "ten"}, "points"), ({"alpha": "nan"}, "alpha"),
             ({"scheme": "rk4"}, "scheme"), ({"write_profile": "maybe"}, "write_profile"), ({"bogus": 1}, "bogus")]
    for params, where in cases:
        r = bob.post("/organization/workflow/submit", json={"template_id": tid, "parameters": params,
                                                             "cluster": "alpha"})
        assert r.status_code == 422 and where in r.text, (params, r.text)
    r = bob.post("/organization/workflow/submit", json={"template_id": tid, "cluster": "gamma"})
    assert r.status_code == 404
    r = bob.post("/organization/workflow/submit", json={"template": "sklearn-train", "cluster": "alpha",
                                                         "parameters": {"target": "y", "data": "s3://nope/x.csv"}})
    assert r.status_code == 404


def test_the_three_examples_complete_on_alpha_and_beta(wf, examples):
    bob, stack = wf["apis"]["bob"], wf["stack"]
    bucket = own_bucket(bob)
    upload(bob, bucket, "datasets/kth sp2.csv", swf_csv())
    submitted = {}
    for cluster in ("alpha", "beta"):
        for name, params in (("heat-diffusion", {"points": 60, "steps": 400, "label": f"on {cluster}"}),
                             ("monte-carlo-pi", {"samples": 40000, "tasks": 2}),
                             ("sklearn-train", {"data": {"bucket": bucket, "key": "datasets/kth sp2.csv"},
                                                "target": "runtime_s", "trees": 20, "log_target": True})):
            r = bob.post("/organization/workflow/submit", json={"template": name, "parameters": params,
                                                                 "cluster": cluster})
            assert r.status_code == 201, r.text
            body = r.json()
            assert all(s["job_id"] for s in body["steps"]), body
            submitted[body["id"]] = (cluster, name)
    done = wait_final(bob, list(submitted), timeout=420)
    for iid, body in done.items():
        cluster, name = submitted[iid]
        assert body["state"] == "COMPLETED", body
        keys = {o["key"]: o for o in body["outputs"]}
        prefix = body["output_prefix"]
        assert prefix == f"workflows/{iid}/" and body["output_bucket"] == bucket
        # the events tell the story in order, every step is bob's job on the chosen cluster
        states = [e["to_state"] for e in body["events"] if not e["step"]]
        assert states[:1] == ["NEW"] and states[-2:] == ["STAGING_OUT", "COMPLETED"], states
        for step in body["steps"]:
            assert step["state"] == "COMPLETED" and step["exit_code"] == 0 and step["nodes"].startswith(cluster)
            rows = sacct(stack, cluster, "-j", step["job_id"], "-o", "JobID,User,State,JobName")
            assert rows[0][1:] == ["bob", "COMPLETED", step["job_name"]], rows
        if name == "heat-diffusion":
            summary = download(bob, bucket, prefix + "outputs/summary.txt").decode()
            assert summary.startswith("image=heroes python3 image"), summary  # ran inside the container
            assert f"label=on {cluster}\n" in summary
            assert float(summary.split("max_error=")[1]) < 1e-3
            assert prefix + "outputs/profile.csv" in keys and prefix + "logs/simulate.log" in keys
        elif name == "monte-carlo-pi":
            pi = dict(line.split("=") for line in download(bob, bucket, prefix + "outputs/pi.txt").decode().split())
            assert pi["parts"] == "2" and pi["samples"] == "80000" and abs(float(pi["pi"]) - 3.14159) < 0.05
            assert {prefix + "work/part-0.txt", prefix + "work/part-1.txt"} <= set(keys)
            solve = next(s for s in body["steps"] if s["name"] == "solve")
            rows = sacct(stack, cluster, "-j", solve["job_id"], "-o", "JobID,NTasks,AllocCPUS")
            assert int(rows[0][2]) >= 2
        else:
            metrics = dict(line.split("=", 1) for line in
                           download(bob, bucket, prefix + "outputs/metrics.txt").decode().split())
            assert metrics["rows"] == "3000" and metrics["model"] == "random-forest", metrics
            assert float(metrics["r2"]) > 0.1, metrics
            image = download(bob, bucket, prefix + "outputs/image.txt").decode()
            assert image.startswith("heroes python3 image"), image  # trained inside the container
            assert keys[prefix + "outputs/model.pkl"]["size"] > 1000
    # visualization: the nodes of one instance
    iid = next(iter(done))
    vis = bob.get("/organization/workflow/visualization", params={"instance_id": iid}).json()
    assert vis["nodes"] and all(n.startswith(submitted[iid][0]) for n in vis["nodes"])
    # carol sees none of it; alice (org admin) lists the template's instances
    carol, alice = wf["apis"]["carol"], wf["apis"]["alice"]
    assert carol.get(f"/organization/workflow/instance/{iid}").status_code == 404
    assert carol.delete(f"/organization/workflow/instance/{iid}").status_code == 404
    assert iid not in {i["id"] for i in carol.get("/organization/workflow/instance").json()}
    listed = alice.get(f"/organization/admin/workflow/instance/{examples['heat-diffusion']['id']}").json()
    assert {i for i, (c, n) in submitted.items() if n == "heat-diffusion"} <= {i["id"] for i in listed}
    assert bob.get(f"/organization/admin/workflow/instance/{examples['heat-diffusion']['id']}").status_code == 403


FAIL_CHAIN = {
    "name": "fail-chain", "title": "prepare -> break -> after",
    "steps": [
        {"name": "prepare", "command": ["python3", "-c", "print('prepared')"]},
        {"name": "break", "depends_on": ["prepare"],
         "command": ["python3", "-c", "import sys; print('about to fail: disk on fire', file=sys.stderr); sys.exit(3)"]},
        {"name": "after", "depends_on": ["break"], "command": ["python3", "-c", "open('outputs/after-ran', 'w')"]},
    ],
    "outputs": ["outputs/*"],
}


def test_a_failing_step_fails_the_instance_and_its_dependents_never_run(wf):
    alice, bob, stack = wf["apis"]["alice"], wf["apis"]["bob"], wf["stack"]
    publish(alice, FAIL_CHAIN)
    r = bob.post("/organization/workflow/submit", json={"template": "fail-chain", "cluster": "beta"})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    body = wait_final(bob, [iid], timeout=180)[iid]
    assert body["state"] == "FAILED" and body["exit_code"] == 3, body
    assert "step break failed with exit code 3" in body["reason"]
    steps = {s["name"]: s for s in body["steps"]}
    assert steps["prepare"]["state"] == "COMPLETED"
    assert steps["break"]["state"] == "FAILED" and steps["break"]["exit_code"] == 3
    assert "about to fail: disk on fire" in steps["break"]["log_tail"]
    assert steps["after"]["state"] == "SKIPPED" and steps["after"]["started_at"] is None
    # Slurm cancels the dependent itself; its Start may then equal End, but it never got a node or ran
    rows = sacct(stack, "beta", "-j", steps["after"]["job_id"], "-o", "JobID,State,NodeList,Elapsed")
    assert rows[0][1].startswith("CANCELLED") and rows[0][2:] == ["None assigned", "00:00:00"], rows
    home = pwd.getpwnam("bob").pw_dir
    assert not os.path.exists(f"{home}/heroes-work/bob/workflows/{iid}/outputs/after-ran")
    assert not os.path.exists(f"{home}/heroes-work/bob/workflows/{iid}/.heroes/after.jobid")
    log = bob.get(f"/organization/workflow/instance/{iid}/log/break")
    assert log.status_code == 200 and "disk on fire" in log.text and "[heroes] step break exited 3" in log.text


def test_cancel_stops_every_step(wf):
    alice, bob, stack = wf["apis"]["alice"], wf["apis"]["bob"], wf["stack"]
    publish(alice, {"name": "sleeper", "steps": [
        {"name": "nap", "command": ["sleep", "600"]},
        {"name": "wake", "depends_on": ["nap"], "command": ["true"]}]})
    r = bob.post("/organization/workflow/submit", json={"template": "sleeper", "cluster": "alpha"})
    iid = r.json()["id"]
    wait_state(bob, iid, {"RUNNING"})
    assert wf["apis"]["carol"].delete(f"/organization/workflow/instance/{iid}").status_code == 404
    # the cluster cannot be removed under a live instance (its jobs would run on untracked)
    r = alice.delete(f"/organization/admin/cluster/{wf['clusters']['alpha']}")
    assert r.status_code == 409 and iid in r.text and "cluster-in-use" in r.text, r.text
    assert alice.get(f"/organization/admin/cluster/{wf['clusters']['alpha']}").status_code == 200
    r = bob.delete(f"/organization/workflow/instance/{iid}")
    assert r.status_code == 202 and len(r.json()["scancelled"]) == 2, r.text
    body = wait_final(bob, [iid], timeout=90)[iid]
    assert body["state"] == "CANCELLED", body
    assert {s["state"] for s in body["steps"]} == {"CANCELLED"}
    for step in body["steps"]:
        assert sacct(stack, "alpha", "-j", step["job_id"], "-o", "State")[0][0].startswith("CANCELLED")
    assert bob.delete(f"/organization/workflow/instance/{iid}").status_code == 409


def test_injection_canaries_arrive_verbatim_and_never_fire(wf):
    alice, bob = wf["apis"]["alice"], wf["apis"]["bob"]
    tag = secrets.token_hex(4)
    canary = f"/tmp/heroes-canary-{tag}"
    nasty = (f"'; touch {canary}-1; echo '$(touch {canary}-2)`touch {canary}-3`\"$(touch {canary}-4)\"; "
             f"touch {canary}-5 && echo ../../etc/passwd\n touch {canary}-6 \\ $HOME {{}} %s %n")
    enum_value = f"$(touch {canary}-7)"
    title = f"Title `touch {canary}-8` $(touch {canary}-9) ';\n"
    template = {
        "name": "canary-args", "title": title,
        "parameters": [
            {"name": "s", "type": "string", "max_length": 1000},
            {"name": "e", "type": "enum", "choices": [enum_value, "plain"]},
            {"name": "i", "type": "int", "default": -7},
            {"name": "x", "type": "float", "default": 1.5},
            {"name": "b", "type": "bool", "default": False},
            {"name": "f", "type": "file"},
        ],
        "files": {"show.py": (
            "import os, sys\n"
            "env = dict((k, v) for k, v in os.environ.items() if k.startswith('HEROES_'))\n"
            "content = open(sys.argv[-1]).read()\n"
            "open('outputs/args.txt', 'w').write(repr((sys.argv[1:], env, content)))\n")},
        "steps": [{"name": "show", "command": ["python3", "show.py", "{s}", "--opt={s}", "{e}", "{i}", "{x}", "{b}",
                                                "{f}"]}],
        "outputs": ["outputs/*"],
    }
    publish(alice, template)
    bucket = own_bucket(bob)
    key = f"canaries/it's $(touch {tag}-10) `touch {tag}-11`; & | > x.txt"
    upload(bob, bucket, key, b"file content arrives\n")
    params = {"s": nasty, "e": enum_value, "f": {"bucket": bucket, "key": key}}
    r = bob.post("/organization/workflow/submit", json={"template": "canary-args", "cluster": "alpha",
                                                         "parameters": params, "name": nasty[:190]})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    assert r.json()["name"] == nasty[:190]
    body = wait_final(bob, [iid], timeout=180)[iid]
    assert body["state"] == "COMPLETED", body
    argv, env, content = ast.literal_eval(download(bob, bucket, f"workflows/{iid}/outputs/args.txt").decode())
    staged = "inputs/f/" + key.rsplit("/", 1)[-1]
    assert argv == [nasty, f"--opt={nasty}", enum_value, "-7", "1.5", "false", staged]
    assert content == "file content arrives\n"
    assert env["HEROES_TEMPLATE_NAME"] == title and env["HEROES_PARAM_S"] == nasty
    assert env["HEROES_INSTANCE_WORKFLOW_ID"] == iid and env["HEROES_ORGANIZATION_NAME"] == "acme"
    assert env["HEROES_USER_ID"] and env["HEROES_TEMPLATE_WORKFLOW_ID"] == body["template_id"]
    home = pwd.getpwnam("bob").pw_dir
    fired = glob.glob(f"/tmp/heroes-canary-{tag}*")
    names = {os.path.basename(p) for p in glob.glob(f"{home}/heroes-work/**", recursive=True)}
    fired += sorted(names & {f"{tag}-10", f"{tag}-11"})
    assert fired == [], fired
    # a key with '..' never reaches the cluster
    r = bob.post("/organization/workflow/submit", json={"template": "canary-args", "cluster": "alpha", "parameters": {
        "s": "x", "e": "plain", "f": {"bucket": bucket, "key": "canaries/../../etc/passwd"}}})
    assert r.status_code == 422 and "key" in r.text
