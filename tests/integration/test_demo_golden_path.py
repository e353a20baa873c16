"""The API-only golden path on the demo data, with no other step (issue 17): after ``make demo`` bob logs in,
lists clusters and templates, asks where heat-diffusion should run (each policy's best cluster), submits it, sees it
COMPLETED with its outputs in his own space and its energy recorded; carol, of globex, sees none of it.

Against the running gateway (the hub's proxy, the hub-managed service, real Keycloak, Slurm over SSH, S3): the
test enrolls nothing and publishes nothing, the ``demo-data`` component did (``heroes dev up`` / ``heroes dev
test`` bring it up).
"""
from __future__ import annotations

import secrets
import time

import httpx
import pytest

from heroes_dev.components.demo_data import ORG_ADMINS, SAMPLE_KEY
from heroes_dev.components.jupyterhub import hub_url
from heroes_dev.components.login import host_key_fingerprint

pytestmark = pytest.mark.integration
API = "/services/heroes/api/v1"
EXAMPLES = {"heat-diffusion", "monte-carlo-pi", "sklearn-train"}


@pytest.fixture(scope="module")
def gateway(require, stack_settings):
    require("demo-data")
    return stack_settings


def log_in(settings, user: str) -> httpx.Client:
    """The documented way in: the service's login route, a Keycloak password grant for the user."""
    base = hub_url(settings) + API
    r = httpx.post(f"{base}/organization/auth/login", json={"username": user, "password": f"{user}-pass"}, timeout=60)
    assert r.status_code == 200, r.text
    token = r.json()
    assert token["token_type"].lower() == "bearer" and token["access_token"]
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=120)


def wait_for(what: str, probe, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(every)


#: what each policy minimises, read from a decision's candidate
MEASURES = {"performance": lambda c: c["finish_s"], "energy": lambda c: c["energy_kwh"], "cost": lambda c: c["cost"]}


def decide_all(api: httpx.Client, params: dict) -> dict[str, dict]:
    """heat-diffusion decided under each policy; every choice checked to be the best candidate by its measure."""
    out = {}
    for policy, measure in MEASURES.items():
        r = api.post("/organization/decision/decide", json={"template": "heat-diffusion", "parameters": params,
                                                            "policy": policy, "clusters": ["alpha", "beta"]})
        assert r.status_code == 200, r.text
        decision = r.json()
        eligible = [c for c in decision["candidates"] if c["eligible"]]
        assert {c["cluster"] for c in eligible} == {"alpha", "beta"}, decision["candidates"]
        chosen = next(c for c in eligible if c["cluster"] == decision["choice"])
        assert measure(chosen) == min(measure(c) for c in eligible), (policy, decision["candidates"])
        out[policy] = decision
    return out


def test_bob_runs_heat_diffusion_from_a_fresh_demo_and_carol_sees_nothing(gateway):
    bob, carol = log_in(gateway, "bob"), log_in(gateway, "carol")

    # clusters of his organization, each priced and with a power profile
    clusters = {c["name"]: c for c in bob.get("/organization/cluster/").json()}
    assert {"alpha", "beta"} <= set(clusters)
    for name in ("alpha", "beta"):
        assert clusters[name]["partitions"], clusters[name]
        assert clusters[name]["price_model"]["per_core_hour"] > 0
        assert clusters[name]["energy_profile"]["watts_per_core"] > 0

    # the example templates, with energy measured by default
    templates = {t["name"]: t for t in bob.get("/organization/workflow/template").json()}
    assert EXAMPLES <= set(templates)
    heat = bob.get(f"/organization/workflow/template/{templates['heat-diffusion']['id']}").json()
    assert all(step.get("energy", True) for step in heat["spec"]["steps"]), heat["spec"]["steps"]

    # where should it run? each policy's choice is the best candidate by its own measure (bob's organization
    # may have history by now: the estimates then follow the measured runs, not the clusters' profiles)
    label = f"golden-{secrets.token_hex(3)}"
    params = {"points": 80, "steps": 500, "label": label}
    choices = {policy: decision["choice"] for policy, decision in decide_all(bob, params).items()}

    # submit where the energy policy says, and wait for the end
    r = bob.post("/organization/workflow/submit", json={"template": "heat-diffusion", "parameters": params,
                                                        "cluster": choices["energy"]})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    body = wait_for("COMPLETED", lambda: (lambda b: b if b["state"] in ("COMPLETED", "FAILED", "CANCELLED") else None)(
        bob.get(f"/organization/workflow/instance/{iid}").json()), timeout=300)
    assert body["state"] == "COMPLETED", body
    assert body["cluster"] == choices["energy"] and body["username"] == "bob"

    # the outputs are in bob's own space
    buckets = bob.get("/organization/data/list").json()["buckets"]
    own = next(b["bucket"] for b in buckets if b["kind"] == "user" and b["default"])
    assert body["output_bucket"] == own
    listing = bob.get(f"/organization/data/bucket/{own}/list",
                      params={"prefix": body["output_prefix"], "recursive": "true"}).json()
    keys = {o["key"] for o in listing["objects"]}
    summary_key = next(k for k in keys if k.endswith("outputs/summary.txt"))
    assert any(k.endswith("outputs/profile.csv") for k in keys), keys
    summary = bob.get("/organization/data/download", params={"bucket": own, "key": summary_key})
    assert summary.status_code == 200 and f"label={label}" in summary.text

    # its energy is recorded for bob (the engine ingests each step's collector files when the run ends)
    steps = wait_for("the run's energy", lambda: bob.get("/organization/decision/energy/steps",
                                                         params={"instance_id": iid}).json()["steps"], timeout=60)
    (simulate,) = steps
    assert (simulate["username"], simulate["organization"], simulate["cluster"]) == ("bob", "acme", choices["energy"])
    assert simulate["template"] == "heat-diffusion" and simulate["energy_j"] > 0 and simulate["time_s"] > 0

    # carol, of globex, sees nothing of it
    assert carol.get(f"/organization/workflow/instance/{iid}").status_code == 404
    assert iid not in {i["id"] for i in carol.get("/organization/workflow/instance").json()}
    assert carol.get("/organization/decision/energy/steps", params={"instance_id": iid}).json()["steps"] == []
    assert carol.get("/organization/data/download", params={"bucket": own, "key": summary_key}).status_code == 404
    assert carol.get(f"/organization/data/bucket/{own}/list").status_code == 404


def test_the_demo_clusters_make_the_policies_disagree(gateway):
    """Where nothing has run yet (globex: no test submits as carol on the running gateway), the estimates come
    from the demo's cluster profiles alone: beta (faster, efficient) uses the least energy, alpha (cheaper per
    core-hour) costs the least."""
    decisions = decide_all(log_in(gateway, "carol"), {"points": 80, "steps": 500})
    assert {d["history"]["basis"] for d in decisions.values()} == {"template-defaults"}, decisions["cost"]["history"]
    choices = {policy: d["choice"] for policy, d in decisions.items()}
    assert (choices["energy"], choices["cost"]) == ("beta", "alpha"), decisions["cost"]["candidates"]
    # earliest finish adds each queue's wait (Slurm's own answer, which other tests' jobs change): beta runs
    # 1.6x faster, so it finishes first unless its queue holds it back
    run = {c["cluster"]: c["run_s"] for c in decisions["performance"]["candidates"]}
    assert run["beta"] == pytest.approx(run["alpha"] / 1.6)


def test_the_demo_is_ready_for_globex_too(gateway):
    """carol has the same clusters (globex's own enrollment, the same pinned host keys), the templates and her
    sample input, and none of acme's instances."""
    carol = log_in(gateway, "carol")
    clusters = {c["name"] for c in carol.get("/organization/cluster/").json()}
    assert {"alpha", "beta"} <= clusters
    assert EXAMPLES <= {t["name"] for t in carol.get("/organization/workflow/template").json()}
    buckets = carol.get("/organization/data/list").json()["buckets"]
    own = next(b["bucket"] for b in buckets if b["kind"] == "user" and b["default"])
    sample = carol.get("/organization/data/download", params={"bucket": own, "key": SAMPLE_KEY})
    assert sample.status_code == 200 and sample.text.startswith("cores,input_gb,iterations,runtime_s\n")
    for org, admin in ORG_ADMINS.items():
        enrolled = {c["name"]: c for c in log_in(gateway, admin).get("/organization/admin/cluster/").json()}
        for name in ("alpha", "beta"):
            assert enrolled[name]["host_key_fingerprint"] == host_key_fingerprint(gateway, name), (org, name)
