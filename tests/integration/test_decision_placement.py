"""Placement on the real embedded clusters: Slurm's own queue-wait plan (``sbatch --test-only`` as bob, by
per-user certificate), price models, policies, constraints, right-sizing and ``auto`` in the submit.

The service runs in-process (``workflow_support.wf``: real Keycloak, S3, sshd + Slurm of alpha and beta). The
clusters are enrolled again here with different price models and speeds: alpha is the fast, dear one (speed
2.0, 0.10 EUR per core-hour), beta the slow, cheap one (speed 1.0, 0.01 EUR per core-hour). To fill alpha, bob
submits long sleep jobs there through the API; they are cancelled at the end by their instance (scancel of
their own job ids only).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import time

import pytest

from heroes_dev.components.login import host_key_fingerprint, ssh_port
from heroes_dev.components.slurm import slurm_conf_path
from heroes_dev.settings import shared_data_dir
from heroes_energy import columns as C
from heroes_energy import synthetic
from heroes_service.decision import catalog as catalogs
from heroes_service.decision.wait import wait_cache
from workflow_support import publish, submit, wait_final, wait_state, wf  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

AWS_CATALOG = "aws-ec2-ondemand-2022-11-22.json"
PRICES = {
    "alpha": {"price_model": {"currency": "EUR", "per_core_hour": 0.10, "per_kwh": 0.30},
              "energy_profile": {"idle_watts_per_node": 40, "watts_per_core": 15, "pue": 1.3,
                                 "nominal_cpu_freq_khz": 2_400_000,
                                 "cpu_freqs_khz": [1_200_000, 1_600_000, 2_000_000, 2_400_000]},
              "relative_speed": 2.0},
    "beta": {"price_model": {"currency": "EUR", "per_core_hour": 0.01, "per_kwh": 0.20},
             "energy_profile": {"idle_watts_per_node": 30, "watts_per_core": 10, "pue": 1.1},
             "relative_speed": 1.0},
}
PROBE = {"name": "placement-probe", "container": {"runtime": "none"},
         "parameters": [{"name": "seconds", "type": "int", "default": 1, "min": 0, "max": 60}],
         "steps": [{"name": "run", "command": ["sleep", "{seconds}"],
                    "resources": {"cpus_per_task": 1, "memory_mb": 512, "time_minutes": 10,
                                  "min_time_minutes": 3, "min_memory_mb": 200}}]}
FREQ = {"name": "placement-freq", "container": {"runtime": "none"},
        "steps": [{"name": "show", "command": ["sh", "-c", "echo cpu_freq_req=$SLURM_CPU_FREQ_REQ"],
                   "resources": {"memory_mb": 64, "time_minutes": 2}}]}
OVERRUN = {"name": "placement-overrun", "container": {"runtime": "none"},
           "steps": [{"name": "run", "command": ["sleep", "300"],
                      "resources": {"cpus_per_task": 1, "memory_mb": 128, "time_minutes": 1}}]}
HOLD = {"name": "placement-hold", "container": {"runtime": "none"},
        "steps": [{"name": "hold", "command": ["sleep", "3000"],
                   "resources": {"cpus_per_task": 2, "memory_mb": 256, "time_minutes": 60}}]}


def enroll(alice, stack, cluster: str) -> str:
    fingerprint = host_key_fingerprint(stack, cluster)
    r = alice.post("/organization/admin/cluster/", json={
        "name": cluster, "host": stack.host, "port": ssh_port(stack, cluster), "host_key_fingerprint": fingerprint,
        "work_dir": "heroes-work/{login}", "container_runtime": "charliecloud", **PRICES[cluster]})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def sacct_fields(stack, cluster: str, job_id: str, fields: str) -> list[str]:
    """The job's accounting fields, once slurmdbd has them all (its record can lag the job's end)."""
    env = dict(os.environ, SLURM_CONF=str(slurm_conf_path(stack, cluster)))
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(["sacct", "--parsable2", "--noheader", "-X", "--allusers", "-j", job_id, "-o", fields],
                             env=env, capture_output=True, text=True, check=True).stdout
        values = (out.strip().splitlines() or [""])[0].split("|")
        if all(values) and len(values) == len(fields.split(",")) or time.monotonic() > deadline:
            return values
        time.sleep(1)


@pytest.fixture(scope="module")
def placed(wf):
    """alpha and beta enrolled with the price models above (replacing workflow_support's enrollment)."""
    alice, stack = wf["apis"]["alice"], wf["stack"]
    for cluster_id in wf["clusters"].values():
        assert alice.delete(f"/organization/admin/cluster/{cluster_id}").status_code == 204
    ids = {c: enroll(alice, stack, c) for c in ("alpha", "beta")}
    wf["clusters"].clear()
    wf["clusters"].update(ids)  # workflow_support's teardown deletes these
    templates = {t["name"]: publish(alice, t) for t in (PROBE, FREQ, HOLD)}
    wait_cache().clear()
    yield {**wf, "templates": templates}


def decide(api, **body):
    r = api.post("/organization/decision/decide", json={"template": PROBE["name"], **body})
    assert r.status_code == 200, r.text
    return r.json()


def by_cluster(decision: dict) -> dict[str, dict]:
    return {c["cluster"]: c for c in decision["candidates"]}


def test_policies_listed(placed):
    body = placed["apis"]["bob"].get("/organization/decision/policies").json()
    names = [p["name"] for p in body["policies"]]
    assert names == ["performance", "energy", "cost", "balanced"] and body["default"] == "balanced"
    weights = {p["name"]: p["weights"] for p in body["policies"]}
    assert weights["performance"] == {"time": 1.0, "energy": 0.0, "cost": 0.0}
    assert weights["balanced"] == {"time": 0.34, "energy": 0.33, "cost": 0.33}


def test_every_candidate_is_predicted_with_an_explicit_currency(placed):
    decision = decide(placed["apis"]["bob"], policy="balanced")
    rows = by_cluster(decision)
    assert set(rows) == {"alpha", "beta"}
    for row in rows.values():
        assert row["eligible"], row
        assert row["wait_s"] is not None and row["wait_s"] >= 0
        assert row["finish_s"] == pytest.approx(row["wait_s"] + row["run_s"], abs=0.2)
        assert row["currency"] == "EUR" and row["cost"] > 0 and row["energy_kwh"] > 0
        assert 0 < row["confidence"] <= 1
    assert decision["choice"] in rows and decision["reason"]
    assert decision["history"]["basis"] in ("history", "template-defaults")
    if decision["history"]["basis"] == "template-defaults":
        assert "template defaults" in decision["history"]["note"]
    # candidates are ordered best first
    assert decision["candidates"][0]["cluster"] == decision["choice"]


def test_cost_policy_picks_the_cheaper_cluster(placed):
    decision = decide(placed["apis"]["bob"], policy="cost")
    rows = by_cluster(decision)
    cheapest = min(rows.values(), key=lambda r: r["cost"])["cluster"]
    assert decision["choice"] == cheapest == "beta", decision
    assert rows["beta"]["cost"] < rows["alpha"]["cost"]
    assert "cheapest" in decision["reason"] and "EUR" in decision["reason"]
    # a budget below every cost: no choice, and the reason names the budget
    low = decide(placed["apis"]["bob"], policy="cost", budget=rows["beta"]["cost"] / 10, currency="EUR")
    assert low["choice"] is None and "budget" in low["reason"]
    assert not any(c["within_budget"] for c in low["candidates"])
    # a budget in a currency no cluster is priced in fits nobody (no exchange rates are invented)
    usd = decide(placed["apis"]["bob"], policy="cost", budget=1e6, currency="USD")
    assert usd["choice"] is None and not any(c["within_budget"] for c in usd["candidates"])


def test_cloud_price_model_from_a_real_catalog(placed, monkeypatch):
    """A third cluster (alpha's login node again) priced as AWS hpc6a.48xlarge nodes in us-east-2, from the real
    2022 catalog in the shared data (a service reads catalogs only from its configured folders, by name)."""
    alice, bob, stack = placed["apis"]["alice"], placed["apis"]["bob"], placed["stack"]
    monkeypatch.setenv("HEROES_SERVICE_DECISION_CATALOG_DIRS", json.dumps([str(shared_data_dir())]))
    catalogs.get_catalog_settings.cache_clear()
    base = {"name": "alpha-cloud", "host": stack.host, "port": ssh_port(stack, "alpha"),
            "host_key_fingerprint": host_key_fingerprint(stack, "alpha"), "work_dir": "heroes-work/{login}",
            "container_runtime": "none"}
    cloud = {"kind": "cloud", "catalog": AWS_CATALOG, "instance_type": "hpc6a.48xlarge", "region": "us-east-2"}
    try:
        for bad in ({**cloud, "instance_type": "hpc6a.96xlarge"}, {**cloud, "region": "us-east-1"},
                    {**cloud, "catalog": "../../etc/passwd"}, {**cloud, "currency": "EUR"}):
            r = alice.post("/organization/admin/cluster/", json={**base, "price_model": bad})
            assert r.status_code == 422, (bad, r.text)
        r = alice.post("/organization/admin/cluster/", json={**base, "price_model": cloud})
        assert r.status_code == 201, r.text
        cluster_id = r.json()["id"]
        assert r.json()["price_model"]["currency"] == "USD"
        try:
            rows = by_cluster(decide(bob, policy="cost", currency="EUR"))
            row = rows["alpha-cloud"]
            assert row["eligible"] and row["currency"] == "USD" and row["cost_kind"] == "cloud"
            assert row["cost"] == pytest.approx(2.88 * max(row["run_s"], 60) / 3600, rel=1e-3)
            assert "hpc6a.48xlarge" in row["cost_note"]
            only_usd = decide(bob, policy="cost", clusters=["alpha-cloud"])
            assert only_usd["choice"] == "alpha-cloud" and "USD" in only_usd["reason"]
        finally:
            assert alice.delete(f"/organization/admin/cluster/{cluster_id}").status_code == 204
    finally:
        monkeypatch.delenv("HEROES_SERVICE_DECISION_CATALOG_DIRS")
        catalogs.get_catalog_settings.cache_clear()


def test_deadline_no_cluster_can_meet_is_reported(placed):
    decision = decide(placed["apis"]["bob"], policy="performance", deadline_s=1)
    assert decision["choice"] is None
    assert "no cluster can meet the deadline of 1 s" in decision["reason"], decision["reason"]
    assert all(c["meets_deadline"] is False and c["eligible"] for c in decision["candidates"])
    generous = decide(placed["apis"]["bob"], policy="performance", deadline_s=7 * 86400)
    assert generous["choice"] is not None and "meets the deadline" in generous["reason"]


def test_rightsizing_never_goes_below_the_template_minimum(placed):
    bob = placed["apis"]["bob"]
    # a few real runs of one second: a learnt recommendation would go far below the 10 min / 512 MiB requested
    ids = []
    for _ in range(3):
        r = bob.post("/organization/workflow/submit", json={"template": PROBE["name"], "cluster": "beta",
                                                             "parameters": {"seconds": 1}})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    assert all(b["state"] == "COMPLETED" for b in wait_final(bob, ids, timeout=240).values())
    # the estimates refit in the background when the history grows: ask until they learnt from these runs
    deadline = time.monotonic() + 120
    while True:
        sizing = decide(bob, policy="balanced", parameters={"seconds": 1}, clusters=["beta"])["rightsizing"]
        if sizing["basis"] == "history" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sizing["requested"]["time_limit_s"] == 600 and sizing["requested"]["memory_mb"] == 512
    # learnt from the runs above: a 1 s job would get far less than 3 minutes, so the floor holds it
    assert sizing["basis"] == "history" and sizing["history_jobs"] >= 3, sizing
    assert 180 <= sizing["time_limit_s"] < 600, sizing    # min_time_minutes: 3, and below the request
    assert sizing["memory_mb"] >= 200, sizing       # min_memory_mb: 200
    assert sizing["time_limit_s"] <= 600 and sizing["memory_mb"] <= 512 and sizing["cores"] >= 1
    # accepted at submission, it becomes the job's real sbatch limits (read back from Slurm's accounting)
    r = bob.post("/organization/workflow/submit", json={"template": PROBE["name"], "cluster": "beta",
                                                         "parameters": {"seconds": 1}, "accept_rightsizing": True})
    assert r.status_code == 201, r.text
    body = wait_final(bob, [r.json()["id"]], timeout=240)[r.json()["id"]]
    assert body["state"] == "COMPLETED", body
    assert any("right-sizing accepted" in e["detail"] for e in body["events"]), body["events"]
    limit_min, req_mem = sacct_fields(placed["stack"], "beta", body["steps"][0]["job_id"], "TimelimitRaw,ReqMem")
    assert 3 <= int(limit_min) <= sizing["time_limit_s"] // 60 + 1 and int(limit_min) < 10, (limit_min, sizing)
    assert req_mem.endswith("M") and 200 <= int(req_mem.rstrip("Mn")) <= 512, req_mem


def memory_bound_ear_csv(instance: dict, node: str) -> str:
    """HEROES-plugin EAR rows for an instance's steps, measured memory-bound (CPI 2.5, 150 GB/s: EAR's limits
    are CPI >= 0.8 and >= 100 GB/s), as EAR would have written them on that cluster."""
    rng = random.Random(7)
    layout = C.heroes_app_columns()
    lines = [C.SEP.join(layout)]
    for step in instance["steps"]:
        values = synthetic.ear_row_values(int(step["job_id"]), 0, node, rng, num_gpus=1)
        values.update(dict(zip(C.HEROES_ID_COLUMNS, (instance["id"], PROBE["name"], "bob", "acme", "org"))))
        values.update({"MAX_POWER_W": "300.0", **{name: "0.1" for name in C.PHASE_COLUMNS},
                       "CPI": "2.500000", "MEM_GBS": "150.000000", "TIME_SEC": "1.000000",
                       "DC_NODE_POWER_W": "200.000000"})
        lines.append(C.SEP.join(values[name] for name in layout))
    return "\n".join(lines) + "\n"


def test_memory_bound_history_gets_cpu_frequency_advice(placed):
    """The probe's finished runs on beta get EAR records saying memory-bound: the estimate says so and every
    candidate gets lower-frequency advice within EAR's 5 % slowdown (alpha: one of its offered frequencies)."""
    bob = placed["apis"]["bob"]
    done = [i for i in bob.get("/organization/workflow/instance").json()
            if i["template_name"] == PROBE["name"] and i["cluster"] == "beta" and i["state"] == "COMPLETED"]
    assert done, "the right-sizing test's runs are the history here"
    for summary in done:
        inst = bob.get(f"/organization/workflow/instance/{summary['id']}").json()
        r = bob.post("/organization/decision/ingest_ear_files", params={"cluster": "beta", "instance_id": inst["id"]},
                     json={"files": [{"name": f"{inst['id']}.csv", "content": memory_bound_ear_csv(inst, "beta-n1")}]})
        assert r.status_code == 201, r.text
    deadline = time.monotonic() + 90
    while True:  # the estimates refit in the background when the history changes
        rows = by_cluster(decide(bob, policy="energy", parameters={"seconds": 1}))
        if all(r["cpu_freq"] for r in rows.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    for name, row in rows.items():
        advice = row["cpu_freq"]
        assert advice, (name, row)
        assert 0 < advice["slowdown_pct"] <= 5.0 and advice["saving_pct"] > 0, advice
    assert rows["alpha"]["cpu_freq"]["recommended_khz"] in PRICES["alpha"]["energy_profile"]["cpu_freqs_khz"]
    assert rows["alpha"]["cpu_freq"]["recommended_khz"] < 2_400_000
    # accepting the advice is submitting with it (checked against the cluster's frequencies, then applied)
    r = bob.post("/organization/workflow/submit", json={"template": PROBE["name"], "cluster": "alpha",
                                                         "cpu_freq_khz": rows["alpha"]["cpu_freq"]["recommended_khz"]})
    assert r.status_code == 201, r.text
    assert wait_final(bob, [r.json()["id"]], timeout=240)[r.json()["id"]]["state"] == "COMPLETED"


def test_cpu_frequency_is_validated_and_applied(placed):
    bob = placed["apis"]["bob"]
    before = len(bob.get("/organization/workflow/instance").json())
    r = bob.post("/organization/workflow/submit", json={"template": PROBE["name"], "cluster": "alpha",
                                                         "cpu_freq_khz": 1_800_000})
    assert r.status_code == 422 and "1200000" in r.text, r.text   # alpha offers 1.2/1.6/2.0/2.4 GHz only
    r = bob.post("/organization/workflow/submit", json={"template": PROBE["name"], "cluster": "beta",
                                                         "cpu_freq_khz": 90})
    assert r.status_code == 422, r.text                            # not a sane frequency anywhere
    assert len(bob.get("/organization/workflow/instance").json()) == before  # nothing half-written
    r = bob.post("/organization/workflow/submit", json={"template": FREQ["name"], "cluster": "alpha",
                                                         "cpu_freq_khz": 2_000_000})
    assert r.status_code == 201, r.text
    body = wait_final(bob, [r.json()["id"]], timeout=240)[r.json()["id"]]
    assert body["state"] == "COMPLETED", body
    assert any("--cpu-freq=2000000" in e["detail"] for e in body["events"])
    # Slurm hands the request to the job (this Slurm keeps no cpufreq accounting without a cpufreq plugin)
    log = bob.get(f"/organization/workflow/instance/{body['id']}/log/show").text
    assert "cpu_freq_req=2000000" in log, log


def test_auto_submit_records_the_decision(placed):
    bob = placed["apis"]["bob"]
    r = bob.post("/organization/workflow/submit", json={"template": PROBE["name"], "cluster": "auto"})
    assert r.status_code == 201, r.text
    body = r.json()
    placement = [e["detail"] for e in body["events"] if e["detail"].startswith("placement (balanced): ")]
    assert placement and body["cluster"] in placement[0], body["events"]
    assert wait_final(bob, [body["id"]], timeout=240)[body["id"]]["state"] == "COMPLETED"


def test_runs_that_time_out_keep_their_limit_and_warn(placed):
    """Two real runs killed by Slurm at their 1 min limit (TIMEOUT): the right-sizing keeps the request and
    tells bob that it is too tight, in the decision API that the Submit app shows."""
    alice, bob = placed["apis"]["alice"], placed["apis"]["bob"]
    publish(alice, OVERRUN)
    ids = [submit(bob, OVERRUN["name"], "beta") for _ in range(2)]
    finals = wait_final(bob, ids, timeout=300)
    assert all(b["state"] == "FAILED" and b["steps"][0]["state"] == "TIMEOUT" for b in finals.values()), finals
    deadline = time.monotonic() + 120   # the estimates refit in the background when the history grows
    while True:
        sizing = decide(bob, template=OVERRUN["name"], clusters=["beta"])["rightsizing"]
        if sizing["warnings"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sizing["warnings"] == ["step run: 2 of its last 2 runs hit the time limit (TIMEOUT): the limit stays "
                                  "at the request; ask for more time if the work has not changed"], sizing
    assert sizing["time_limit_s"] == 60 and sizing["requested"]["time_limit_s"] == 60


def test_tenant_isolation(placed):
    carol, anon = placed["apis"]["carol"], placed["anon"]
    template_id = placed["templates"][PROBE["name"]]["id"]
    for ref in (PROBE["name"], template_id):
        r = carol.post("/organization/decision/decide", json={"template": ref})
        assert r.status_code == 404 and "alpha" not in r.text, r.text
    assert anon.post("/organization/decision/decide", json={"template": PROBE["name"]}).status_code == 401
    assert anon.get("/organization/decision/policies").status_code == 401
    r = placed["apis"]["bob"].post("/organization/decision/decide", json={"template": PROBE["name"],
                                                                          "clusters": ["gamma"]})
    assert r.status_code == 404
    r = placed["apis"]["bob"].post("/organization/decision/decide", json={"template": PROBE["name"],
                                                                          "policy": "fastest"})
    assert r.status_code == 422
    r = placed["apis"]["bob"].post("/organization/decision/decide", json={"template": PROBE["name"],
                                                                          "parameters": {"seconds": 999}})
    assert r.status_code == 422 and "seconds" in r.text


def test_performance_policy_avoids_a_full_cluster(placed):
    """Last: it fills alpha for the rest of the module (cancelled at the end)."""
    bob = placed["apis"]["bob"]
    wait_cache().clear()
    idle = decide(bob, policy="performance")
    rows = by_cluster(idle)
    assert idle["choice"] == min(rows.values(), key=lambda r: (r["finish_s"], r["cluster"]))["cluster"], idle
    holds = []
    try:
        for _ in range(2):  # 2 nodes x 2 CPUs: two 2-CPU jobs of 60 minutes fill alpha
            r = bob.post("/organization/workflow/submit", json={"template": HOLD["name"], "cluster": "alpha"})
            assert r.status_code == 201, r.text
            holds.append(r.json()["id"])
        for iid in holds:
            wait_state(bob, iid, {"RUNNING"}, timeout=300)  # other work on alpha may hold the nodes a while
        wait_cache().clear()   # the 30 s cache would still hold alpha's idle plan
        full = decide(bob, policy="performance")
        rows = by_cluster(full)
        assert rows["alpha"]["wait_s"] > 1800, rows["alpha"]   # Slurm plans the start after the holds' limit
        assert full["choice"] == "beta", full
        assert full["reason"].startswith("earliest finish") and "beta" in full["reason"]
        # in steady state the plan comes from the cache: no new sbatch --test-only
        calls = wait_cache().slurm_calls
        assert decide(bob, policy="performance")["choice"] == "beta"
        assert wait_cache().slurm_calls == calls
    finally:
        for iid in holds:
            r = bob.delete(f"/organization/workflow/instance/{iid}")
            assert r.status_code in (202, 409), r.text
        if holds:
            wait_final(bob, holds, timeout=120)
