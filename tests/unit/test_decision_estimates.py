"""Unit tests of the decision estimates: history loading, the per-organization models and ``estimate()``.

A real (temporary, migrated) SQLite database holds the history; finished workflow steps and energy records are
written straight into its tables (no cluster runs them here: that is the integration test's job). Clusters
are plain ``Cluster`` objects that are never stored.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from heroes_dev.settings import shared_data_dir

from heroes_service.auth import Principal
from heroes_service.clusters.models import Cluster
from heroes_service.decision import estimates as E
from heroes_service.decision import fitting
from heroes_service.decision import service_history as sh
from heroes_service.decision import service_models as sm
from heroes_service.decision.trees import FlatForest
from heroes_service.decision.imports import (HistoryFileError, parse_duration, parse_memory_mb, read_sacct_strict,
                                             read_swf_strict)
from heroes_service.energy.models import EnergyRecord
from heroes_service.store import make_engine, migrate, session_factory
from heroes_service.workflows import models as wf
from heroes_service.workflows.templates import parse_template

PROFILE = {"idle_watts_per_node": 100.0, "watts_per_core": 10.0, "pue": 1.5}
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def cluster(name="alpha", speed=1.0, profile=PROFILE) -> Cluster:
    return Cluster(id=f"id-{name}", name=name, organization="acme", relative_speed=speed, energy_profile=profile)


def user(name="bob", org="acme") -> Principal:
    return Principal(username=name, organization=org, roles=frozenset({"user"}))


def template(**resources):
    res = {"time_minutes": 60, "memory_mb": 1024, "cpus_per_task": 2} | resources
    return parse_template({"name": "sim", "parameters": [{"name": "size", "type": "int", "default": 10}],
                           "steps": [{"name": "run", "command": ["sim", "{size}"], "resources": res}]})


def add_runs(session, runs: list[float], cluster_name="alpha", org="acme", username="bob", step="run",
             template_name="sim", sizes=None, energy_w: float | None = None, cpi: float | None = None,
             gbs: float | None = None, first_job=1000, start_minute=0, states=None, peaks=None):
    """Finished instances of ``template_name`` with one step each, ``runs`` seconds long (and energy records)."""
    for k, seconds in enumerate(runs):
        started = T0 + timedelta(minutes=start_minute + 10 * k)
        inst = wf.WorkflowInstance(organization=org, username=username, template_id="t" * 32,
                                   template_name=template_name, template_version=1, cluster_id="c",
                                   cluster_name=cluster_name, cluster_login=username, state=wf.COMPLETED,
                                   parameters={"size": (sizes[k] if sizes else 10)})
        session.add(inst)
        session.flush()
        job_id = first_job + k
        session.add(wf.WorkflowStep(instance_id=inst.id, name=step, position=0, job_name=f"heroes.{inst.id}.{step}",
                                    state=states[k] if states else "COMPLETED", job_id=str(job_id),
                                    max_rss_mb=peaks[k] if peaks else None, submitted_at=started, started_at=started,
                                    ended_at=started + timedelta(seconds=seconds),
                                    options=["--nodes=1", "--ntasks=1", "--cpus-per-task=2", "--mem=1024M",
                                             "--time=60"]))
        if energy_w is not None:
            session.add(EnergyRecord(organization=org, username=username, cluster=cluster_name, instance_id=inst.id,
                                     template=template_name, job_id=job_id, step_id=0, node="n1", time_s=seconds,
                                     energy_j=energy_w * seconds, cpi=cpi, mem_gbs=gbs))
    session.commit()


def fresh_estimate(session, principal, tpl, values, cl):
    E.clear_cache()
    assert sm.REGISTRY.wait_idle(300)
    return E.estimate(session, principal, tpl, values, cl)


# --- no history ----------------------------------------------------------------------------------------
def test_no_history_gives_template_defaults_and_profile_energy(sessions):
    with sessions() as session:
        est = fresh_estimate(session, user(), template(), {"size": 3}, cluster())
    assert est.basis == "template-defaults" and est.history_jobs == 0 and est.confidence == 0.2
    assert est.run_s == est.run_limit_s == 3600.0
    assert est.requested == {"time_limit_s": 3600.0, "memory_mb": 1024.0, "cores": 2, "nodes": 1}
    assert est.memory_mb == 1024.0 and est.cores == 2 and est.nodes == 1
    assert est.energy_estimated and est.energy_j == pytest.approx((100 + 10 * 2) * 3600 * 1.5)
    assert est.memory_bound is None and est.cpi is None and "no history" in est.note


def test_without_history_a_faster_cluster_is_expected_to_finish_sooner(sessions):
    with sessions() as session:
        fast = fresh_estimate(session, user(), template(), {"size": 3}, cluster("beta", speed=2.0))
        slow = fresh_estimate(session, user(), template(), {"size": 3}, cluster("gamma", speed=0.5))
    assert fast.basis == slow.basis == "template-defaults"
    assert fast.run_s == 1800.0 and fast.run_limit_s == 3600.0  # the limit stays the request
    assert slow.run_s == 3600.0  # never guessed longer than the request


def test_a_cluster_without_power_profile_gets_a_default_node(sessions):
    with sessions() as session:
        est = fresh_estimate(session, user(), template(), {}, cluster(profile={}))
    assert est.energy_estimated and est.energy_j == pytest.approx((E.DEFAULT_IDLE_W + E.DEFAULT_W_PER_CORE * 2) * 3600)


# --- the template's own runs -------------------------------------------------------------------------------
def test_the_templates_runs_drive_run_time_limit_and_confidence(sessions):
    runs = [100, 110, 120, 130, 140]
    with sessions() as session:
        add_runs(session, runs)
        est = fresh_estimate(session, user(), template(), {}, cluster())
    assert est.basis == "history" and est.history_jobs == 5
    assert est.run_s == pytest.approx(120, rel=0.01)
    assert max(runs) <= est.run_limit_s <= 3600 and est.run_limit_s % 60 == 0
    assert 0.6 < est.confidence < 1.0
    assert est.energy_estimated  # no energy records: the profile


def test_runs_on_another_cluster_are_scaled_by_relative_speed(sessions):
    with sessions() as session:
        add_runs(session, [200, 200, 200])
        sm.REGISTRY.wait_idle(300)
        here = fresh_estimate(session, user(), template(), {}, cluster("alpha"))
        faster = fresh_estimate(session, user(), template(), {}, cluster("beta", speed=2.0))
    assert here.run_s == pytest.approx(200, rel=0.01)
    assert faster.run_s == pytest.approx(100, rel=0.01)
    assert faster.confidence < here.confidence


def test_measured_energy_and_cpi_come_from_the_energy_records(sessions):
    with sessions() as session:
        add_runs(session, [300, 300, 300, 300], energy_w=250.0, cpi=1.1, gbs=140.0)
        est = fresh_estimate(session, user(), template(), {}, cluster())
    assert not est.energy_estimated
    assert est.energy_j == pytest.approx(250.0 * 300 * 1.5, rel=0.01)
    assert est.cpi == pytest.approx(1.1) and est.mem_gbs == pytest.approx(140.0) and est.memory_bound is True


def test_energy_is_per_job_largest_step_not_the_sum_of_overlapping_steps(sessions):
    with sessions() as session:
        add_runs(session, [100], energy_w=200.0)
        rec = session.query(EnergyRecord).one()
        session.add(EnergyRecord(organization="acme", username="bob", cluster="alpha", instance_id=rec.instance_id,
                                 template="sim", job_id=rec.job_id, step_id=4294967294, node="n1", time_s=100,
                                 energy_j=rec.energy_j * 1.05))
        session.commit()
        frame = sh.load(session, "acme")
    assert frame["energy_j"][0] == pytest.approx(200.0 * 100 * 1.05)


def test_an_imported_sacct_dump_tells_the_steps_peak_memory_without_counting_them_twice(sessions):
    with sessions() as session:
        add_runs(session, [100, 100, 100, 100])
        for k, used in enumerate((300.0, 350.0, 400.0, 380.0)):
            session.add(sh.HistoryJob(organization="acme", batch="b", source="sacct", cluster="alpha",
                                      job_id=str(1000 + k), submit=T0.timestamp() + 600 * k, wait_s=0.0, run_s=100.0,
                                      used_mem_mb=used, imported_by="alice"))
        session.add(sh.HistoryJob(organization="acme", batch="b", source="sacct", cluster="beta", job_id="1000",
                                  submit=T0.timestamp(), run_s=50.0, used_mem_mb=9.0, imported_by="alice"))
        session.commit()
        frame = sh.load(session, "acme")
        est = fresh_estimate(session, user(), template(), {}, cluster())
    assert len(frame) == 5 and frame.template.count("sim/run") == 4   # beta's job 1000 is another job
    assert est.memory_mb == math.ceil(400.0 * E.MEMORY_HEADROOM) and est.requested["memory_mb"] == 1024


def test_the_steps_own_recorded_peaks_size_its_memory(sessions):
    with sessions() as session:
        add_runs(session, [100, 100, 100, 100], peaks=[300.0, 350.0, 400.0, 380.0])
        frame = sh.load(session, "acme")
        est = fresh_estimate(session, user(), template(), {}, cluster())
    assert sorted(frame["used_mem"]) == [300.0, 350.0, 380.0, 400.0]
    assert est.memory_mb == math.ceil(400.0 * E.MEMORY_HEADROOM) and not est.warnings


def test_runs_that_hit_a_limit_keep_that_request_and_warn(sessions):
    """Two of five runs timed out at the 60 min request, one ran out of memory although its sampled peak was
    low: neither limit is cut, and the user is told the request is too tight."""
    with sessions() as session:
        add_runs(session, [600, 3600, 700, 3600, 650], peaks=[200.0, 210.0, 190.0, 205.0, 220.0],
                 states=["COMPLETED", "TIMEOUT", "COMPLETED", "TIMEOUT", "OUT_OF_MEMORY"])
        est = fresh_estimate(session, user(), template(), {}, cluster())
    assert est.basis == "history"
    assert est.run_limit_s == 3600 and est.memory_mb == 1024      # the requests, not a quantile below them
    assert est.warnings == [
        "step run: 2 of its last 5 runs hit the time limit (TIMEOUT): the limit stays at the request; ask for "
        "more time if the work has not changed",
        "step run: 1 of its last 5 runs ran out of memory (OUT_OF_MEMORY): memory stays at the request; ask for more"]
    assert est.steps[0]["warnings"] == [w.removeprefix("step run: ") for w in est.warnings]
    from heroes_service.decision.placement import rightsizing

    sizing = rightsizing(template(), est)
    assert sizing["warnings"] == est.warnings and sizing["time_limit_s"] == 3600 and sizing["memory_mb"] == 1024


def test_timeouts_under_a_shorter_limit_than_todays_request_do_not_warn(sessions):
    with sessions() as session:
        add_runs(session, [600, 3600, 700], states=["COMPLETED", "TIMEOUT", "COMPLETED"])   # all asked for 60 min
        asks_more = fresh_estimate(session, user(), template(time_minutes=120), {}, cluster())
        asks_same = fresh_estimate(session, user(), template(), {}, cluster())
    assert not asks_more.warnings
    assert asks_same.warnings and "1 of its last 3 runs hit the time limit" in asks_same.warnings[0]


def test_only_the_recent_runs_count_as_hitting_a_limit(sessions):
    with sessions() as session:
        add_runs(session, [3600], states=["TIMEOUT"], first_job=900, start_minute=-120)   # finished first
        add_runs(session, [100] * E.LIMIT_HIT_WINDOW)
        est = fresh_estimate(session, user(), template(), {}, cluster())
    assert not est.warnings   # the old timeout still counts as a long run, just not as a warning


def test_right_sizing_never_goes_below_the_templates_minimums(sessions):
    tpl = template(min_time_minutes=30, min_memory_mb=900, min_cores=2)
    with sessions() as session:
        add_runs(session, [20, 25, 30])
        est = fresh_estimate(session, user(), tpl, {}, cluster())
    assert est.basis == "history"
    assert est.run_limit_s == 1800 and est.memory_mb >= 900 and est.cores >= 2
    assert est.run_s <= est.run_limit_s


def test_default_floors_never_exceed_the_request():
    tpl = template(memory_mb=32, time_minutes=1)
    floors = E.floors(tpl.steps[0], {"time_limit_s": 60.0, "memory_mb": 32.0, "cores": 1})
    assert floors == {"time_limit_s": 60.0, "memory_mb": 32.0, "cores": 1}


def test_a_minimum_above_the_request_is_refused_at_publication():
    with pytest.raises(ValueError, match="min_time_minutes=90 is above time_minutes=60"):
        template(min_time_minutes=90)


def test_job_run_time_is_the_longest_chain_of_steps(sessions):
    tpl = parse_template({"name": "dag", "steps": [
        {"name": "a", "command": ["a"], "resources": {"time_minutes": 10}},
        {"name": "b", "command": ["b"], "resources": {"time_minutes": 30}},
        {"name": "c", "command": ["c"], "depends_on": ["a", "b"], "resources": {"time_minutes": 5}}]})
    with sessions() as session:
        est = fresh_estimate(session, user(), tpl, {}, cluster())
    assert est.run_s == 35 * 60 and est.requested["time_limit_s"] == 35 * 60
    assert [s["step"] for s in est.steps] == ["a", "b", "c"]


def test_a_template_model_learns_how_run_time_follows_a_parameter(sessions):
    rng = np.random.default_rng(3)
    sizes = [int(s) for s in rng.integers(1, 100, 60)]
    runs = [30.0 * s * float(rng.uniform(0.95, 1.05)) for s in sizes]
    with sessions() as session:
        add_runs(session, runs, sizes=sizes)
        sm.REGISTRY.get(session, "acme")
        assert sm.REGISTRY.wait_idle(300)
        models = sm.REGISTRY.peek(session, "acme")
        assert models.fitted and models.steps["sim/run"].model is not None
        small = fresh_estimate(session, user(), template(time_minutes=120), {"size": 5}, cluster())
        large = fresh_estimate(session, user(), template(time_minutes=120), {"size": 90}, cluster())
    assert small.run_s < 0.3 * large.run_s
    assert large.run_s == pytest.approx(30.0 * 90, rel=0.3)
    assert large.run_limit_s >= large.run_s


def test_a_template_model_learns_each_users_habit(sessions):
    with sessions() as session:
        for k in range(20):  # interleaved in time: amy's runs take ~100 s, bob's ~1000 s, same parameters
            add_runs(session, [100.0 * (1 + 0.02 * (k % 3))], username="amy", first_job=2 * k, start_minute=40 * k)
            add_runs(session, [1000.0 * (1 + 0.02 * (k % 3))], username="bob", first_job=2 * k + 1,
                     start_minute=40 * k + 20)
        sm.REGISTRY.get(session, "acme")
        assert sm.REGISTRY.wait_idle(300)
        assert sm.REGISTRY.peek(session, "acme").steps["sim/run"].model is not None
        amy = fresh_estimate(session, user("amy"), template(), {}, cluster())
        bob = fresh_estimate(session, user("bob"), template(), {}, cluster())
    assert amy.run_s == pytest.approx(100, rel=0.25) and bob.run_s == pytest.approx(1000, rel=0.25)


def test_a_never_run_template_learns_from_the_organizations_history(sessions):
    with sessions() as session:
        add_runs(session, [600.0] * 30, template_name="other")
        est = fresh_estimate(session, user(), template(), {}, cluster())
    assert est.basis == "history" and est.history_jobs == 30
    assert 0.2 < est.confidence < 0.6
    assert est.run_s < 3600


def test_another_organizations_history_is_never_used(sessions):
    with sessions() as session:
        add_runs(session, [100, 100, 100], org="globex", username="carol")
        est = fresh_estimate(session, user("bob", "acme"), template(), {}, cluster())
        theirs = fresh_estimate(session, user("carol", "globex"), template(), {}, cluster())
    assert est.basis == "template-defaults" and est.history_jobs == 0
    assert theirs.basis == "history" and theirs.history_jobs == 3


def test_summary_counts_imports_for_members_and_steps_for_their_owner(sessions):
    with sessions() as session:
        add_runs(session, [100, 100], username="bob")
        add_runs(session, [100], username="amy", first_job=2000)
        add_runs(session, [100], org="globex", username="carol", first_job=3000)
        session.add(sh.HistoryJob(organization="acme", batch="b", source="swf", cluster="kth", job_id="1",
                                  submit=1.0, run_s=5.0, imported_by="alice"))
        session.commit()
        bob = sh.summary(session, "acme", "bob")
        admin = sh.summary(session, "acme", None)
    assert bob["jobs"] == 3 and admin["jobs"] == 4
    assert {c["cluster"]: c["jobs"] for c in admin["clusters"]} == {"alpha": 3, "kth": 1}
    assert bob["templates"] == [{"template": "sim", "jobs": 2, "steps": {"run": 2}, "clusters": {"alpha": 2}}]
    assert admin["clusters"][1]["imported"]["swf"]["jobs"] == 1


def test_history_growth_rules():
    fitted = sh.HistoryCounts(imported=1000, steps=5, energy=10)
    assert not sm._stale(fitted, sh.HistoryCounts(1100, 5, 10))               # +10 %: state refresh only
    assert not sm._stale(fitted, sh.HistoryCounts(1000, 6, 11))               # one more step: idem
    assert sm._stale(fitted, sh.HistoryCounts(1000, 6, 11), fitted_age_s=sm.REFIT_EVERY_S)
    assert not sm._stale(fitted, fitted, fitted_age_s=10 * sm.REFIT_EVERY_S)  # nothing new: never
    assert sm._stale(fitted, sh.HistoryCounts(1201, 5, 10))                   # +20 %
    assert sm._stale(fitted, sh.HistoryCounts(1000, 5, 12))                   # energy +20 %
    assert sm._stale(fitted, sh.HistoryCounts(900, 5, 10))                    # deletions
    assert sm._stale(sh.HistoryCounts(0, 0, 0), sh.HistoryCounts(0, 1, 0))    # the first job


def test_a_finished_step_reaches_the_estimates_before_the_next_refit(sessions):
    with sessions() as session:
        add_runs(session, [100.0] * 40)
        sm.REGISTRY.get(session, "acme")
        assert sm.REGISTRY.wait_idle(300)
        before = sm.REGISTRY.peek(session, "acme")
        add_runs(session, [100.0], first_job=5000, start_minute=1000)
        sm.REGISTRY.refresh(session, "acme")
        assert sm.REGISTRY.wait_idle(300)
        after = sm.REGISTRY.peek(session, "acme")
    assert after is not before and after.steps["sim/run"].n == 41
    assert after.runtime is before.runtime and after.fit_counts == before.fit_counts  # carried over, not refit


def test_requested_resources_are_read_from_rendered_options():
    out = sh.requested_from_options(["--job-name=x", "--time=15", "--mem=2048M", "--nodes=2", "--ntasks=4",
                                     "--cpus-per-task=3", "--partition=p"])
    assert out == {"req_time": 900.0, "req_mem": 2048.0, "nodes": 2.0, "tasks": 4.0, "cpus_per_task": 3.0}


# --- fast tree walk --------------------------------------------------------------------------------------
def test_the_flat_forest_predicts_exactly_what_scikit_learn_does():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    X[rng.random(X.shape) < 0.2] = np.nan
    models = [fitting.fit_hgb(X, np.nan_to_num(X[:, 0]) * 2 + rng.normal(size=400) * 0.1),
              fitting.fit_hgb(X, np.nan_to_num(X[:, 1]) ** 2, loss="quantile", quantile=0.9, max_iter=20)]
    forest = FlatForest.from_models(models)
    for row in X[:50]:
        expected = [m.predict(row[None, :])[0] for m in models]
        assert np.allclose(forest.predict_row(row), expected, atol=1e-9)


def test_the_fast_runtime_walk_agrees_with_the_predictor_and_its_outcome_distribution():
    """The service predicts one job per request with flat tree walks; they must give the predictor's own
    answer, outcome-distribution blend included (else the service falls back to the slow path)."""
    from heroes_service.decision.features import sweep
    from heroes_service.decision.history import read_swf
    from heroes_service.decision.predictor import RuntimePredictor

    trace = read_swf(shared_data_dir() / "KTH-SP2-1996.swf").head(3000)
    X, req, run = sweep(trace).X, trace["req_time"], trace["run"]
    predictor = RuntimePredictor().fit(X[:2500], req[:2500], run[:2500])
    assert predictor.fitted and predictor.distribution is not None
    fast = fitting.checked_fast(predictor, X[2500:2600], req[2500:2600])
    assert fast is not None
    slow = predictor.predict(X[2600:2700], req[2600:2700])
    for i in range(100):
        point, scale = fast.predict(X[2600 + i], float(req[2600 + i]))
        assert point == pytest.approx(slow.point_log[i], abs=1e-6) and scale == pytest.approx(slow.scale[i], rel=1e-6)


def test_conformal_margin_has_the_finite_sample_correction():
    r = np.arange(1, 101, dtype=float)
    assert fitting.conformal_margin(r, 0.05) == 96.0
    assert fitting.conformal_margin(np.array([1.0, 2.0]), 0.05) == 2.0


# --- imports ---------------------------------------------------------------------------------------------
SWF = """; UnixStartTime: 1000
;
1 0 5 100 4 -1 2048 4 600 -1 1 7 1 -1 1 1 -1 -1
2 10 0 -1 4 -1 -1 4 600 -1 5 7 1 -1 1 1 -1 -1
"""


def test_swf_rows_become_absolute_finished_jobs():
    result = read_swf_strict(SWF)
    assert result.lines == 2 and result.not_finished == 1
    job = result.jobs[0]
    assert (job.submit, job.wait_s, job.run_s, job.req_time_s, job.cores) == (1000.0, 5.0, 100.0, 600.0, 4.0)
    assert job.username == "swf:7" and job.state == "COMPLETED" and job.used_mem_mb == pytest.approx(8.0)


@pytest.mark.parametrize("line, message", [
    ("1 0 5 100 4", "expected 18 fields, found 5"),
    ("1 0 5 1x0 4 -1 -1 4 600 -1 1 7 1 -1 1 1 -1 -1", "'1x0' is not a number"),
    ("1 -1 5 100 4 -1 -1 4 600 -1 1 7 1 -1 1 1 -1 -1", "submit time"),
])
def test_swf_errors_name_the_line(line, message):
    with pytest.raises(HistoryFileError) as info:
        read_swf_strict(SWF + line + "\n")
    assert info.value.errors[0]["line"] == 5 and message in info.value.errors[0]["message"]


SACCT = """JobID|User|Submit|Start|End|Elapsed|Timelimit|ReqMem|MaxRSS|NCPUS|NNodes|State|Partition
7|bob|2026-01-05T08:00:00|2026-01-05T08:00:10|2026-01-05T08:05:10|00:05:00|01:00:00|500Mc||4|2|COMPLETED|compute
7.batch||2026-01-05T08:00:10|2026-01-05T08:00:10|2026-01-05T08:05:10|00:05:00|||300M|4|2|COMPLETED|
7.0||2026-01-05T08:00:11|2026-01-05T08:00:11|2026-01-05T08:05:10|00:04:59|||1.5G|4|2|COMPLETED|
8|bob|2026-01-05T08:01:00|Unknown|Unknown|00:00:00|1-00:00:00|4G||1|1|PENDING|compute
9|amy|2026-01-05T08:02:00|2026-01-05T08:02:00|2026-01-05T08:03:00|00:01:00|UNLIMITED|4G||1|1|CANCELLED by 1003|compute
"""


def test_sacct_jobs_take_peak_memory_from_their_steps():
    result = read_sacct_strict(SACCT)
    assert result.lines == 3 and result.not_finished == 1
    job7, job9 = result.jobs
    assert job7.run_s == 300 and job7.wait_s == 10 and job7.req_time_s == 3600
    assert job7.req_mem_mb == 1000.0 and job7.used_mem_mb == 1536.0 and job7.cores == 4 and job7.nodes == 2
    assert job9.state == "CANCELLED" and math.isnan(job9.req_time_s) and job9.username == "amy"


def test_sacct_without_header_and_with_trailing_separators():
    body = "\n".join(line + "|" for line in SACCT.splitlines()[1:])
    assert len(read_sacct_strict(body).jobs) == 2


def test_sacct_errors_name_the_line():
    bad = SACCT.replace("00:05:00|01:00:00", "00:05:00|an hour", 1)
    with pytest.raises(HistoryFileError) as info:
        read_sacct_strict(bad)
    assert info.value.errors[0]["line"] == 2 and "timelimit" in info.value.errors[0]["message"]
    with pytest.raises(HistoryFileError, match="line 3: expected 13"):
        read_sacct_strict(SACCT.replace("|300M|", "|300M||", 1))


@pytest.mark.parametrize("text, seconds", [("00:05:00", 300), ("1-02:00:00", 93600), ("05:30", 330), ("15", 900),
                                           ("2-12", 216000)])
def test_slurm_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_slurm_memory_sizes():
    assert parse_memory_mb("2G") == 2048 and parse_memory_mb("512000K") == 500
    assert parse_memory_mb("100Mc", cores=8, nodes=2) == 400 and parse_memory_mb("1000Mn") == 1000
    assert math.isnan(parse_memory_mb(""))
