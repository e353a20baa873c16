"""The SDK's client with a fake transport: the "never twice" submit, typed objects, wait's progress, uploads
streamed in chunks, and HTML that escapes what users typed."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
import requests

import heroes_sdk
from heroes_sdk import Client, Decision, errors
from sdk_fakes import BASE, FakeResponse, FakeTransport, instance

CLUSTER = {"id": "c1", "name": "alpha", "description": "on-prem", "container_runtime": "charliecloud",
           "identity_mode": "per-user", "slurm_version": "24.11", "default_partition": "debug",
           "partitions": [{"name": "debug", "default": True, "available": True, "time_limit": "1:00:00", "nodes": 2,
                           "cpus_per_node": 4, "memory_mb": 8000, "gres": ""}],
           "price_model": {"kind": "on-premises", "currency": "EUR", "per_core_hour": 0.02, "per_kwh": 0.25},
           "energy_profile": {"pue": 1.3}, "relative_speed": 1.0, "future_field": 1}
DECISION = {"policy": "energy", "weights": {"energy": 1}, "choice": "beta", "reason": "least energy",
            "candidates": [{"cluster": "alpha", "eligible": True, "reason": "", "wait_s": 0, "run_s": 10, "finish_s": 10,
                            "run_limit_s": 600, "energy_kwh": 0.002, "energy_estimated": True, "cost": 0.1,
                            "currency": "EUR", "confidence": 0.5, "meets_deadline": True, "within_budget": True,
                            "score": 0.4, "cpu_freq": None},
                           {"cluster": "beta", "eligible": True, "reason": "", "wait_s": 0, "run_s": 6, "finish_s": 6,
                            "run_limit_s": 600, "energy_kwh": 0.001, "energy_estimated": True, "cost": 0.2,
                            "currency": "EUR", "confidence": 0.5, "meets_deadline": True, "within_budget": True,
                            "score": 0.9, "cpu_freq": None}],
            "rightsizing": None, "history": {"jobs": 0, "basis": "template", "note": ""}}


def client(route) -> tuple[Client, FakeTransport]:
    transport = FakeTransport(route)
    heroes = Client(BASE, token="t", transport=transport)
    heroes.session.backoff_s = 0
    return heroes, transport


def test_public_surface_is_documented():
    for name in heroes_sdk.__all__:
        assert getattr(heroes_sdk, name).__doc__, name
    undocumented = []
    for cls in (getattr(heroes_sdk, n) for n in heroes_sdk.__all__):
        if isinstance(cls, type) and cls.__module__.startswith("heroes_sdk"):
            for name, member in vars(cls).items():
                if not name.startswith("_") and (callable(member) or isinstance(member, property)) \
                        and not getattr(member, "__doc__", None):
                    undocumented.append(f"{cls.__name__}.{name}")
    assert undocumented == []


def test_clusters_and_decisions_are_typed():
    heroes, _ = client(lambda m, p, c: FakeResponse(200, [CLUSTER] if p == "/organization/cluster/" else DECISION))
    [alpha] = heroes.clusters()
    assert alpha.partitions[0].cpus_per_node == 4 and alpha.price.per_kwh == 0.25 and alpha.raw["future_field"] == 1
    decision = heroes.decide("heat-diffusion", {"points": 20}, policy="energy")
    assert isinstance(decision, Decision) and decision.choice == "beta" and decision.candidates[1].run_s == 6
    frame = decision.to_dataframe()
    assert list(frame["cluster"]) == ["beta", "alpha"] and frame["chosen"].tolist() == [True, False]


def test_a_decision_submits_its_choice_without_waiting_server_side():
    def route(method, path, call):
        if path == "/organization/decision/decide":
            return FakeResponse(200, DECISION)
        assert path == "/organization/workflow/submit"
        return FakeResponse(201, instance(cluster=call["json"]["cluster"], name=call["json"]["name"]))

    heroes, transport = client(route)
    run = heroes.submit(heroes.decide("heat-diffusion", {"points": 20}))
    body = transport.calls[-1]["json"]
    assert body["template"] == "heat-diffusion" and body["cluster"] == "beta" and body["parameters"] == {"points": 20}
    assert body["wait"] is False and body["name"].startswith("heat-diffusion-")
    assert run.cluster == "beta" and run.client is heroes and run.steps[0].job_id == "17"


def test_a_lost_submit_answer_is_recovered_by_label_never_sent_twice():
    created = {}

    def route(method, path, call):
        if method == "POST":
            created["label"] = call["json"]["name"]
            raise requests.exceptions.ReadTimeout("read timed out")
        if path == "/organization/workflow/instance":
            now = datetime.now(timezone.utc).isoformat()
            return FakeResponse(200, [instance(name="older"), instance(id="c" * 32, name=created["label"], created_at=now)])
        return FakeResponse(200, instance(id="c" * 32, name=created["label"]))

    heroes, transport = client(route)
    run = heroes.submit("heat-diffusion", {"points": 20}, cluster="alpha")
    assert run.id == "c" * 32 and transport.count("POST", "/organization/workflow/submit") == 1

    def lost(method, path, call):
        if method == "POST":
            return FakeResponse(502, {"detail": "bad gateway"})
        return FakeResponse(200, [])

    heroes, transport = client(lost)
    heroes.recover_s = 0
    with pytest.raises(errors.SubmitUncertain) as caught:
        heroes.submit("heat-diffusion", {}, name="my run")
    assert caught.value.label == "my run" and "NOT sent again" in str(caught.value)
    assert transport.count("POST", "/organization/workflow/submit") == 1

    heroes, transport = client(lambda m, p, c: FakeResponse(503, {"detail": "cluster 'alpha' unreachable"}))
    with pytest.raises(errors.ServiceUnavailable, match="unreachable"):  # an answer: nothing was recorded
        heroes.submit("heat-diffusion", {})
    assert transport.count("GET", "/organization/workflow/instance") == 0


def test_wait_reports_each_steps_state_until_the_end():
    states = iter(["RUNNING", "RUNNING", "COMPLETED"])

    def route(method, path, call):
        state = next(states)
        step = dict(instance()["steps"][0], state=state)
        return FakeResponse(200, instance(state=state, steps=[step]))

    heroes, _ = client(route)
    seen = []
    run = heroes.instance("a" * 32)
    run.wait(poll_s=0, progress=lambda done, total, status: seen.append((done, total, status)))
    assert run.ok and run.done
    assert seen[0] == (0, 1, "RUNNING | simulate=RUNNING") and seen[-1] == (1, 1, "COMPLETED | simulate=COMPLETED")


def test_wait_failure_and_timeout():
    failed = instance(state="FAILED", reason="step simulate exited 1")
    heroes, _ = client(lambda m, p, c: FakeResponse(200, failed))
    with pytest.raises(errors.InstanceFailed, match="exited 1"):
        heroes.instance("a" * 32).wait(progress=False, raise_on_failure=True)
    heroes, _ = client(lambda m, p, c: FakeResponse(200, instance()))
    with pytest.raises(errors.WaitTimeout):
        heroes.instance("a" * 32).wait(timeout=0.05, poll_s=0.01, progress=False)


def test_outputs_by_relative_name_and_a_clear_error_for_a_missing_one():
    prefix = f"workflows/{'a' * 32}/"
    done = instance(state="COMPLETED", outputs=[{"key": prefix + "outputs/profile.csv", "size": 12}])

    def route(method, path, call):
        if path == "/organization/data/download":
            assert call["params"] == {"bucket": "u-bob", "key": prefix + "outputs/profile.csv"}
            return FakeResponse(200, raw=b"x,u\n0,1\n0.5,2\n")
        return FakeResponse(200, done)

    heroes, _ = client(route)
    run = heroes.instance("a" * 32)
    assert run.output_keys() == ["outputs/profile.csv"]
    assert run.read_csv("outputs/profile.csv")["u"].tolist() == [1, 2]
    with pytest.raises(errors.NotFound, match="outputs/profile.csv"):
        run.read_output("outputs/missing.txt")


def test_uploads_stream_in_chunks_with_content_length(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"z" * (3 * 1024 * 1024 + 5))
    seen = {}

    def route(method, path_, call):
        if path_ == "/organization/data/list":
            return FakeResponse(200, {"buckets": [{"bucket": "u-bob", "kind": "user", "default": True}]})
        seen.update(call)
        return FakeResponse(201, {"bucket": "u-bob", "key": "big.bin", "size": len(call["data"])})

    transport = FakeTransport(route)
    original = transport.request

    def request(method, url, data=None, **kw):
        if data is not None and not isinstance(data, bytes):
            seen["length"] = len(data)  # requests sends Content-Length for a sized body
        return original(method, url, data=data, **kw)

    transport.request = request
    heroes = Client(BASE, token="t", transport=transport)
    progress = []
    stored = heroes.data.upload(path, "big.bin", progress=lambda done, total, status: progress.append((done, total)))
    assert stored.size == path.stat().st_size == seen["length"]
    assert seen["params"]["bucket"] == "u-bob" and seen["data"] == path.read_bytes()
    assert [d for d, _ in progress] == [1048576, 2097152, 3145728, 3145733] and progress[-1][1] == 3145733


def test_html_escapes_what_users_typed():
    heroes, _ = client(lambda m, p, c: FakeResponse(200, instance(name="<script>alert(1)</script>")))
    html = heroes.instance("a" * 32)._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "simulate" in html
    decision = Decision.from_api({**DECISION, "reason": "<b>x</b>"})
    assert "&lt;b&gt;x&lt;/b&gt;" in decision._repr_html_() and "beta" in decision._repr_html_()
