"""Placement without a cluster: Slurm's --test-only text, the wait cache (with a fake connector), price
models and catalogs (the shipped one and the real 2022 AWS catalog from the shared data), policy scores,
--cpu-freq advice, right-sizing floors, the sbatch options a submission overrides, and ``decide`` over
fake clusters (a fake wait source: unit tests only; the real Slurm is in tests/integration)."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from heroes_dev.settings import shared_data_dir
from heroes_service.clusters.connector import CommandResult
from heroes_service.decision import catalog as catalogs
from heroes_service.decision import frequency, placement, wait
from heroes_service.decision.costs import Shape, job_cost
from heroes_service.decision.estimates import Estimate
from heroes_service.decision.placement import Constraints, rightsized_steps, rightsizing
from heroes_service.decision.policies import POLICIES, scores
from heroes_service.workflows.render import Context, accepted_options, render
from heroes_service.workflows.templates import parse_template, resolve_parameters

AWS = "aws-ec2-ondemand-2022-11-22.json"
TEST_ONLY = "sbatch: Job 2175 to start at 2026-11-25T23:04:48 using 1 processors on nodes alpha-n1 in partition compute"


# --- Slurm's answer -----------------------------------------------------------------------------------
def test_test_only_output_is_parsed():
    assert wait.parse_start(TEST_ONLY) == datetime(2026, 11, 25, 23, 4, 48)
    assert wait.parse_start("allocation failure: Requested node configuration is not available") is None
    assert wait.parse_offset("+0100\n") == timedelta(hours=1)
    assert wait.parse_offset("-0330") == -timedelta(hours=3, minutes=30)
    with pytest.raises(ValueError):
        wait.parse_offset("CET")
    assert wait.slurm_error("sbatch: error: Batch job submission failed: Invalid partition name specified\n") \
        == "sbatch: error: Batch job submission failed: Invalid partition name specified"


def test_test_only_argv_carries_the_shape():
    argv = wait.test_only_argv(Shape(nodes=2, tasks=4, cpus_per_task=2, memory_mb=1000, gpus=1, time_s=590,
                                     partition="gpu"))
    assert argv[:2] == ["sbatch", "--test-only"]
    assert {"--nodes=2", "--ntasks=4", "--cpus-per-task=2", "--mem=1000M", "--time=10", "--partition=gpu",
            "--gpus=1"} <= set(argv)


class FakeConnector:
    """Answers ``date +%z`` and ``sbatch --test-only`` like a login node in UTC+1 (counts the calls)."""

    cluster = "fake"

    def __init__(self, start_in_s: float = 120.0, refuse: bool = False, delay: float = 0.0):
        self.start_in_s, self.refuse, self.delay = start_in_s, refuse, delay
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def run(self, argv, *, stdin=None, timeout=60):
        with self.lock:
            self.calls.append(list(argv))
        time.sleep(self.delay)
        if argv[0] == "date":
            return CommandResult(0, "+0100\n", "")
        assert argv[:2] == ["sbatch", "--test-only"] and stdin.startswith("#!")
        if self.refuse:
            return CommandResult(1, "", "allocation failure: Requested node configuration is not available\n")
        local = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=1, seconds=self.start_in_s)
        return CommandResult(0, "", f"sbatch: Job 1 to start at {local:%Y-%m-%dT%H:%M:%S} using 1 processors "
                                    "on nodes n1 in partition p\n")


def sbatch_calls(conn: FakeConnector) -> int:
    return sum(1 for c in conn.calls if c[0] == "sbatch")


def test_wait_cache_fresh_stale_and_refused():
    cache = wait.WaitCache(wait.WaitSettings(wait_cache_s=0.3, wait_stale_s=30, wait_timeout_s=5))
    conn, shape = FakeConnector(start_in_s=120), Shape()
    first = cache.waits([("c1", conn, shape)])[0]
    assert not first.error and 110 <= first.wait_s() <= 121    # the zone offset is applied
    assert cache.waits([("c1", conn, shape)])[0] is first and sbatch_calls(conn) == 1   # fresh: cached
    time.sleep(0.4)
    stale = cache.waits([("c1", conn, shape)])[0]
    assert stale is first                                      # stale: served at once, refreshed behind
    deadline = time.monotonic() + 5
    while sbatch_calls(conn) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sbatch_calls(conn) == 2 and [c[0] for c in conn.calls].count("date") == 1   # offset kept an hour
    refused = cache.waits([("c2", FakeConnector(refuse=True), shape)])[0]
    assert refused.start_at is None and "Requested node configuration is not available" in refused.error
    assert cache.waits([("c3", None, shape)])[0].error


def test_wait_cache_asks_each_cluster_once_and_in_parallel():
    cache = wait.WaitCache(wait.WaitSettings(wait_cache_s=30, wait_stale_s=60, wait_timeout_s=5))
    slow = [FakeConnector(delay=0.3) for _ in range(3)]
    began = time.monotonic()
    answers = cache.waits([(f"c{i}", conn, Shape()) for i, conn in enumerate(slow)])
    assert all(not a.error for a in answers)
    assert time.monotonic() - began < 1.2   # 3 clusters x (date + sbatch) x 0.3 s in parallel, not 1.8 s
    threads = [threading.Thread(target=cache.waits, args=([("c9", slow[0], Shape(nodes=2))],)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for c in slow[0].calls if c[0] == "sbatch" and "--nodes=2" in c) == 1


# --- prices -------------------------------------------------------------------------------------------
def test_on_premises_cost_sums_resources_and_energy():
    model = {"currency": "EUR", "per_core_hour": 0.05, "per_node_hour": 1.0, "per_kwh": 0.25}
    cost = job_cost(model, {"pue": 1.5}, Shape(nodes=2, tasks=4, cpus_per_task=2, memory_mb=1024), 1800, 2.0)
    assert cost.currency == "EUR" and cost.kind == "on-premises"
    assert cost.parts == {"cores": pytest.approx(0.2), "nodes": pytest.approx(1.0), "energy": pytest.approx(0.5)}
    assert cost.amount == pytest.approx(1.7)
    assert job_cost({}, {}, Shape(), 3600, 1.0).amount == 0 and job_cost({}, {}, Shape(), 3600, 1.0).currency


def test_cloud_cost_from_the_shipped_catalog():
    shipped = catalogs.load("default")
    assert shipped.currency == "USD" and len(shipped.instances) >= 5
    cost = job_cost({"kind": "cloud", "instance_type": "c5.xlarge", "region": "eu-west-1"}, {},
                    Shape(nodes=3, tasks=3, cpus_per_task=4), 1800, 9.9)
    assert cost.currency == "USD" and cost.amount == pytest.approx(3 * 0.192 * 0.5)
    assert "3 x c5.xlarge" in cost.note
    # billed per second with a one-minute minimum; more cores per node than vCPUs take more instances
    assert job_cost({"kind": "cloud", "instance_type": "c5.xlarge"}, {}, Shape(), 5, 0).amount == \
        pytest.approx(0.17 / 60, abs=1e-6)
    wide = job_cost({"kind": "cloud", "instance_type": "c5.xlarge"}, {}, Shape(tasks=1, cpus_per_task=10), 3600, 0)
    assert wide.amount == pytest.approx(3 * 0.17)
    unknown = job_cost({"kind": "cloud", "instance_type": "c5.xlarge", "region": "mars-1"}, {}, Shape(), 60, 0)
    assert unknown.amount is None and "mars-1" in unknown.note


def test_cloud_cost_from_the_real_aws_catalog(monkeypatch):
    monkeypatch.setenv("HEROES_SERVICE_DECISION_CATALOG_DIRS", f'["{shared_data_dir()}"]')
    catalogs.get_catalog_settings.cache_clear()
    try:
        aws = catalogs.load(AWS)
        assert len(aws.instances) == 573 and aws.currency == "USD"
        assert aws.instance("p4d.24xlarge").gpus == 8 and aws.instance("hpc6a.48xlarge").memory_gib == 384
        cost = job_cost({"kind": "cloud", "catalog": AWS, "instance_type": "hpc6a.48xlarge", "region": "us-east-2"},
                        {}, Shape(nodes=4, tasks=384), 7200, 0)
        assert cost.amount == pytest.approx(4 * 2.88 * 2) and cost.currency == "USD"
    finally:
        monkeypatch.delenv("HEROES_SERVICE_DECISION_CATALOG_DIRS")
        catalogs.get_catalog_settings.cache_clear()


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd.json", "x.txt", "nope.json"])
def test_catalogs_are_named_never_paths(name):
    with pytest.raises(catalogs.CatalogError):
        catalogs.catalog_path(name)


def test_price_model_validation():
    from heroes_service.api.clusters import PriceModel

    assert PriceModel().kind == "on-premises" and PriceModel().per_kwh == 0     # old stored models still load
    assert PriceModel(kind="cloud", instance_type="m5.large").currency == "USD"
    for bad in ({"kind": "cloud"}, {"kind": "cloud", "instance_type": "z9.huge"},
                {"kind": "cloud", "instance_type": "m5.large", "currency": "EUR"},
                {"kind": "cloud", "instance_type": "m5.large", "catalog": "../x"}):
        with pytest.raises(ValueError):
            PriceModel(**bad)


# --- policies and frequency ---------------------------------------------------------------------------
def test_scores_are_ratios_to_the_best():
    values = [{"time": 100, "energy": 2.0, "cost": 1.0}, {"time": 200, "energy": 1.0, "cost": None}]
    assert scores(values, POLICIES["performance"].weights) == [1.0, 0.5]
    assert scores(values, POLICIES["energy"].weights) == [0.5, 1.0]
    assert scores(values, POLICIES["cost"].weights) == [1.0, 0.0]      # not comparable: nothing on cost
    assert sum(POLICIES["balanced"].weights.values()) == pytest.approx(1.0)


def test_cpu_frequency_advice_follows_min_energy():
    assert frequency.advise(False, 2.0, {}) is None and frequency.advise(None, None, {}) is None
    advice = frequency.advise(True, 2.0, {"nominal_cpu_freq_khz": 2_400_000})
    assert advice is not None and advice.recommended_khz < 2_400_000
    assert 0 < advice.slowdown_pct <= 100 * frequency.MAX_SLOWDOWN and advice.saving_pct >= 2
    # the more memory-bound (higher CPI), the lower the frequency and the larger the saving
    deeper = frequency.advise(True, 6.0, {"nominal_cpu_freq_khz": 2_400_000})
    assert deeper.recommended_khz <= advice.recommended_khz and deeper.saving_pct >= advice.saving_pct
    listed = frequency.advise(True, 6.0, {"cpu_freqs_khz": [1_200_000, 1_800_000, 2_400_000]})
    assert frequency.advise(True, 3.0, {"cpu_freqs_khz": [1_200_000, 1_800_000, 2_400_000]}) is None  # > 5 % slower
    assert listed.recommended_khz in (1_200_000, 1_800_000)
    time_ratio, energy_ratio = frequency.project(1_200_000, 2_400_000, beta=1.0, share=0.6)
    assert time_ratio == pytest.approx(2.0) and energy_ratio > 1    # compute-bound: slower and no saving


def test_cpu_frequency_is_checked_against_the_cluster():
    frequency.check_frequency(2_000_000, {})
    frequency.check_frequency(1_600_000, {"cpu_freqs_khz": [1_600_000, 2_400_000]})
    for khz, profile in ((90, {}), (9_000_000, {}), (1_700_000, {"cpu_freqs_khz": [1_600_000, 2_400_000]}),
                         (2_600_000, {"nominal_cpu_freq_khz": 2_400_000})):
        with pytest.raises(ValueError):
            frequency.check_frequency(khz, profile)


# --- right-sizing ----------------------------------------------------------------------------------------
FLOORED = parse_template({"name": "t", "steps": [
    {"name": "a", "command": ["true"], "resources": {"time_minutes": 30, "memory_mb": 1000,
                                                     "min_time_minutes": 5, "min_memory_mb": 300}},
    {"name": "b", "command": ["true"], "depends_on": ["a"], "resources": {"time_minutes": 10, "memory_mb": 500}}]})


def tiny_estimate(**extra) -> Estimate:
    return Estimate(**{"run_s": 20, "run_limit_s": 60, "memory_mb": 10, "cores": 1, "nodes": 1, "energy_j": 1.0,
                       "energy_estimated": True, "confidence": 0.9, "basis": "history", "history_jobs": 50,
                       "requested": {"time_limit_s": 2400, "memory_mb": 1000, "cores": 1, "nodes": 1},
                       "memory_bound": None, "cpi": None, "mem_gbs": None, **extra})


def test_rightsizing_never_goes_below_the_template_minimum():
    sized = rightsizing(FLOORED, tiny_estimate())
    assert sized["time_limit_s"] == 300 and sized["memory_mb"] == 300 and sized["basis"] == "history"
    big = rightsizing(FLOORED, Estimate(**{**tiny_estimate().__dict__, "run_limit_s": 9e9,
                                                   "memory_mb": 9e9}))
    assert big["time_limit_s"] == 2400 and big["memory_mb"] == 1000    # never above the request either
    steps = rightsized_steps(FLOORED, {}, sized)
    assert steps["a"] == {"time_minutes": 5, "memory_mb": 300}
    assert steps["b"]["time_minutes"] >= 1 and 64 <= steps["b"]["memory_mb"] <= 500
    per_step = dict(sized, steps=[{"step": "a", "time_limit_s": 60, "memory_mb": 50},
                                  {"step": "b", "time_limit_s": 240, "memory_mb": 400}])
    assert rightsized_steps(FLOORED, {}, per_step) == {"a": {"time_minutes": 5, "memory_mb": 300},
                                                       "b": {"time_minutes": 4, "memory_mb": 400}}


def test_accepted_options_replace_the_templates_in_the_script():
    ctx = Context(instance_id="i" * 32, template_id="t", template=FLOORED, values={}, workdir="w", user_id="u",
                  username="bob", organization="acme", organization_id="o", runtime="none", image_path="",
                  step_options={"a": ["--time=7", "--mem=320M", "--cpu-freq=2000000", "--nodes=9", "--time=x"]})
    _script, options = render(ctx, FLOORED.steps[0], [])
    assert "--time=7" in options and "--mem=320M" in options and "--cpu-freq=2000000" in options
    assert "--time=30" not in options and "--mem=1000M" not in options and "--nodes=1" in options
    _script, plain = render(ctx, FLOORED.steps[1], [])
    assert "--time=10" in plain and not any(o.startswith("--cpu-freq") for o in plain)
    assert accepted_options(["--mem=12G", "--cpu-freq=high; rm -rf /"]) == {}


# --- decide over fake clusters --------------------------------------------------------------------------
PROBE = parse_template({"name": "p", "steps": [{"name": "run", "command": ["true"],
                                                "resources": {"time_minutes": 10, "memory_mb": 256}}]})


def fake_cluster(name: str, speed: float, per_core_hour: float, currency: str = "EUR") -> SimpleNamespace:
    return SimpleNamespace(id=name, name=name, relative_speed=speed, organization="acme",
                           price_model={"currency": currency, "per_core_hour": per_core_hour},
                           energy_profile={"idle_watts_per_node": 50, "watts_per_core": 10})


class FakeWaits:
    def __init__(self, waits: dict[str, float | None]):
        self.waits_s = waits

    def waits(self, requests):
        now = datetime.now(timezone.utc)
        return [wait.WaitAnswer(None if self.waits_s[cid] is None else now + timedelta(seconds=self.waits_s[cid]),
                                "" if self.waits_s[cid] is not None else "Slurm refuses this job shape: x", 0.0)
                for cid, _conn, _shape in requests]


@pytest.fixture
def fake_world(monkeypatch):
    def install(waits):
        monkeypatch.setattr(placement, "wait_cache", lambda: FakeWaits(waits))
        monkeypatch.setattr(placement, "_connector", lambda cluster, principal: (object(), ""))
        monkeypatch.setattr(placement, "estimate_for",
                            lambda s, p, t, v, c: placement.fallback_estimate(t, v, c))
    return install


def run_decide(clusters, **constraints):
    values = resolve_parameters(PROBE, {})
    return placement.decide(None, SimpleNamespace(organization="acme", username="bob"), PROBE, values, clusters,
                            Constraints(**constraints))


def test_decide_policies_and_constraints(fake_world):
    fast, cheap = fake_cluster("fast", 2.0, 0.5), fake_cluster("cheap", 1.0, 0.01)
    fake_world({"fast": 0.0, "cheap": 0.0})
    assert run_decide([fast, cheap], policy="performance")["choice"] == "fast"
    decision = run_decide([fast, cheap], policy="cost")
    assert decision["choice"] == "cheap" and [c["cluster"] for c in decision["candidates"]] == ["cheap", "fast"]
    fake_world({"fast": 3600.0, "cheap": 0.0})      # fast is full for an hour
    full = run_decide([fast, cheap], policy="performance")
    assert full["choice"] == "cheap" and full["reason"].startswith("earliest finish")
    late = run_decide([fast, cheap], policy="performance", deadline_s=10)
    assert late["choice"] is None and late["reason"].startswith("no cluster can meet the deadline of 10 s")
    poor = run_decide([fast, cheap], policy="balanced", budget=1e-9, currency="EUR")
    assert poor["choice"] is None and "budget" in poor["reason"]
    assert poor["rightsizing"]["basis"] == "template-defaults" and poor["history"]["note"].startswith("no history")


def test_decide_never_compares_currencies(fake_world):
    eur, usd = fake_cluster("eur", 1.0, 0.5), fake_cluster("usd", 1.0, 0.01, currency="USD")
    fake_world({"eur": 0.0, "usd": 0.0})
    decision = run_decide([eur, usd], policy="cost", currency="EUR")
    assert decision["choice"] == "eur"                  # the USD one is cheaper in number only
    rows = {c["cluster"]: c for c in decision["candidates"]}
    assert rows["usd"]["currency"] == "USD" and rows["usd"]["score"] == 0.0


def test_decide_reports_ineligible_clusters(fake_world):
    fake_world({"a": None, "b": None})
    decision = run_decide([fake_cluster("a", 1, 0), fake_cluster("b", 1, 0)])
    assert decision["choice"] is None and decision["reason"].startswith("no eligible cluster")
    assert all(not c["eligible"] and "Slurm refuses" in c["reason"] for c in decision["candidates"])
