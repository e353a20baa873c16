"""The online protocol never lets a job see anything that finished at or after its submission."""
from __future__ import annotations

import math

import numpy as np
import pytest

from heroes_service.decision.evaluate import EvalConfig, evaluate, run_online
from heroes_service.decision.features import FEATURE_NAMES, sweep
from heroes_service.decision.history import parse_swf_lines

F = {name: i for i, name in enumerate(FEATURE_NAMES)}
SMALL = EvalConfig(retrain_every=60, calibration_window=300,
                   predictor={"min_train": 30, "max_iter": 8, "dist_iter": 8})


def swf_line(job, submit, wait, run, procs, req, user, status=1, group=1):
    return f"{job} {submit} {wait} {run} {procs} -1 -1 {procs} {req} -1 {status} {user} {group} -1 -1 -1 -1 -1"


def crafted():
    """User 1: job A (0 s, runs 1000 s, finishes at 1000); B at 500 and C at 1000 must not know A; D at 1001 must."""
    return parse_swf_lines([
        swf_line(1, 0, 0, 1000, 4, 3600, 1),
        swf_line(2, 500, 0, 10, 4, 3600, 1),
        swf_line(3, 1000, 0, 10, 4, 3600, 1),
        swf_line(4, 1001, 0, 10, 4, 3600, 1),
    ])


def test_features_use_only_jobs_finished_before_submit():
    trace = crafted()
    sw = sweep(trace)
    # B (at 500, while A runs): nothing has finished
    assert sw.X[1, F["u_n_log"]] == 0.0
    assert math.isnan(sw.X[1, F["u_last1"]]) and math.isnan(sw.X[1, F["s_last1"]])
    assert sw.last_two[1] == 3600  # no finished job: the baseline falls back to the request
    # C (at 1000, the second A ends): only B (ended at 510) is known, not A
    assert sw.X[2, F["u_n_log"]] == pytest.approx(math.log1p(1))
    assert sw.X[2, F["u_last1"]] == pytest.approx(math.log(10))
    assert sw.last_two[2] == pytest.approx(10)
    # D (at 1001) sees B and A; C ends at 1010, after D's submit
    assert sw.X[3, F["u_n_log"]] == pytest.approx(math.log1p(2))  # A (1000) and B (510)
    assert sw.X[3, F["u_last1"]] == pytest.approx(math.log(1000))  # the last to finish was A
    assert sw.last_two[3] == pytest.approx((10 + 1000) / 2)
    assert (sw.seen_until < trace["submit"]).all()
    assert sw.X[1, F["u_outstanding"]] == 1  # A is known to be running, without its run time


def synthetic(n=700, seed=1, scale_after=None, factor=3.0):
    """A random multi-user trace; optionally multiply the run time of every job finishing at/after a time."""
    rng = np.random.default_rng(seed)
    lines, t = [], 0
    for job in range(1, n + 1):
        t += int(rng.integers(1, 400))
        user = int(rng.integers(1, 9))
        base = 60 * user ** 1.5
        run = int(max(1, base * rng.lognormal(0, 0.5)))
        req = int(base * 4)
        wait = int(rng.integers(0, 600))
        if scale_after is not None and t + wait + run >= scale_after:
            run = int(run * factor)
        lines.append(swf_line(job, t, wait, run, int(rng.integers(1, 16)), req, user, int(rng.random() > 0.2)))
    return parse_swf_lines(lines)


def test_online_run_audit_trail():
    trace = synthetic()
    result = run_online(trace, SMALL)
    submit, finish = trace["submit"], trace.finish
    assert len(result.fits) >= 5
    for index, when, n_train, latest, _ in result.fits:
        assert when == submit[index]
        assert latest < when, "a model was trained on a job that had not finished yet"
    seen = result.observed_at >= 0
    assert seen.sum() > 500
    assert (finish[seen] < submit[result.observed_at[seen]]).all(), "calibrated on an unfinished job"
    # and each job was handed to the calibrator at the first submission strictly after it finished
    first_after = np.searchsorted(submit, finish[seen], side="right")
    np.testing.assert_array_equal(result.observed_at[seen], first_after)


def test_future_run_times_cannot_change_past_predictions():
    """Black-box check: rewriting the run times of jobs that end after T changes nothing predicted up to T."""
    plain = synthetic()
    cut = float(plain["submit"][450])
    altered = synthetic(scale_after=cut)
    assert not np.array_equal(plain["run"], altered["run"])  # the future really differs
    a = run_online(plain, SMALL)
    b = run_online(altered, SMALL)
    upto = plain["submit"] <= cut
    assert upto.sum() == 451
    np.testing.assert_array_equal(a.point[upto], b.point[upto])
    np.testing.assert_array_equal(a.limit[upto], b.limit[upto])
    np.testing.assert_array_equal(a.limit_free[upto], b.limit_free[upto])
    assert not np.array_equal(a.point[~upto], b.point[~upto])  # later jobs do learn from the change


def test_evaluate_shape_and_exclusions():
    trace = synthetic()
    out = evaluate(trace, SMALL)
    assert out["jobs"] == len(trace)
    assert set(out["predictor"]["point"]) >= {"mean_accuracy", "mae_s", "under_share"}
    assert set(out["predictor"]["limit"]) >= {"kill_share", "mean_accuracy", "limit_over_request"}
    for name in ("user_request", "last_two"):
        assert set(out["baselines"][name]) >= {"mean_accuracy", "mae_s", "under_share"}
    limit = out["predictor"]["limit"]
    assert limit["limit_over_request"] <= 1.0  # the default limit never exceeds the request
    bad = parse_swf_lines([swf_line(1, 0, 0, 50, 1, 100, 1), swf_line(2, 5, 0, -1, 1, 100, 1),
                           swf_line(3, 9, 0, 0, 1, 100, 1), swf_line(4, 20, 0, 30, 1, -1, 1)])
    out = evaluate(bad, SMALL)
    assert out["jobs"] == 1
    assert out["excluded"] == {"total_in_trace": 4, "unknown_or_zero_run_time": 2, "unknown_request_time": 1,
                               "malformed_lines_skipped": 0}


def test_limit_never_above_request_on_every_job():
    trace = synthetic(seed=5)
    result = run_online(trace, SMALL)
    assert (result.limit <= trace["req_time"] + 1e-6).all()
    # once enough jobs finished, limits come from the per-job choice (a kill price is in force)
    priced = ~np.isnan(result.kill_price)
    assert priced[-100:].all() and not priced[:50].any()
    assert (result.limit[priced] > 0).all()
    # the unclipped limit may pass the request but never the longest limit the queue has granted so far
    assert (result.limit_free <= np.maximum.accumulate(trace["req_time"]) * (1 + 1e-9)).all()


def _rewritten(trace_lines: list[str], field: int) -> list[str]:
    """The same SWF lines with one field (0-based) unknown (-1), as some public traces state it."""
    out = []
    for line in trace_lines:
        parts = line.split()
        parts[field] = "-1"
        out.append(" ".join(parts))
    return out


def _synthetic_lines(n=400, seed=3):
    rng = np.random.default_rng(seed)
    lines, t = [], 0
    for job in range(1, n + 1):
        t += int(rng.integers(1, 400))
        user = int(rng.integers(1, 6))
        run = int(max(1, 60 * user ** 1.5 * rng.lognormal(0, 0.3)))
        lines.append(swf_line(job, t, 0, run, user, int(240 * user ** 1.5), user))
    return lines


def test_a_trace_without_requests_is_scored_on_its_points_and_says_what_is_not_applicable():
    import json

    trace = parse_swf_lines(_rewritten(_synthetic_lines(), 8))   # field 9: requested time
    out = evaluate(trace, SMALL)
    assert out["jobs"] == len(trace)
    assert 0.0 < out["predictor"]["point"]["mean_accuracy"] <= 1.0
    assert 0.0 < out["baselines"]["last_two"]["mean_accuracy"] <= 1.0   # scored on every job, first ones too
    assert out["predictor"]["limit"] is None and out["baselines"]["user_request"] is None
    assert "no requested time" in out["not_applicable"]
    json.dumps(out, allow_nan=False)   # plain JSON: no NaN anywhere
    from heroes_dev.cli_decision import render

    text = render(out)
    assert "user request           n/a" in text and "recommended time limit: n/a" in text


def test_jobs_of_unknown_users_share_one_history():
    """A NaN user key never matches itself: without the shared pseudo-user, such jobs would have no history."""
    trace = parse_swf_lines(_rewritten([swf_line(1, 0, 0, 100, 4, 3600, 7), swf_line(2, 500, 0, 10, 4, 3600, 7)], 11))
    X = sweep(trace).X
    assert math.isnan(X[0, F["s_last1"]])
    assert X[1, F["s_last1"]] == pytest.approx(math.log(100))   # the first job's run, same shape
    assert X[1, F["u_n_log"]] == pytest.approx(math.log1p(1))
