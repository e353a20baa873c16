"""The EASY-backfilling simulator on small traces whose schedule is worked out by hand in each docstring."""
from __future__ import annotations

import math

import numpy as np
import pytest

from heroes_service.decision.simulate.easy import machine_size, simulate


def run(jobs, size, kill=None, retry=None):
    """jobs: (submit, procs, run, estimate) tuples."""
    submit, procs, runs, est = (np.array(col, dtype=float) for col in zip(*jobs))
    return simulate(submit, procs, runs, est, size, kill=kill, retry_estimate=retry)


# 4 processors. J1 (2 procs, 0-10) runs; J2 wants all 4 and waits for J1: shadow time 10, no extra processor.
BASE = [(0, 2, 10, 10), (0, 4, 5, 5), (1, 2, 5, 5), (2, 1, 20, 20)]


def test_backfills_a_job_that_ends_before_the_shadow_time():
    """t=0: J1 starts (2 free left); J2 (4) cannot, reservation at 10. t=1: J3 (2 procs, estimate 5) ends
    at 6 <= 10: backfilled 1-6. t=2: no processor free. t=6: J3 ends; J4 (1 proc, 20 s) would end at 26 > 10
    and the reservation leaves no extra processor: waits. t=10: J1 ends, J2 starts 10-15. t=15: J4 15-35."""
    s = run(BASE, 4)
    assert s.start.tolist() == [0, 10, 1, 15]
    assert s.finish.tolist() == [10, 15, 6, 35]
    assert not s.killed.any() and s.lost_core_s == 0


def test_an_overestimate_blocks_the_backfill():
    """Same jobs, but J3 asks for 20 s (runs 5): 1 + 20 > 10 and no extra processor, so J3 waits behind J2.
    t=10 J2 starts (10-15); t=15 J3 and J4 start together (2 + 1 <= 4): J3 15-20, J4 15-35."""
    jobs = list(BASE)
    jobs[2] = (1, 2, 5, 20)
    s = run(jobs, 4)
    assert s.start.tolist() == [0, 10, 15, 15]
    assert s.finish.tolist() == [10, 15, 20, 35]


def test_extra_processors_let_a_long_job_backfill():
    """6 processors. J1 (2, 0-10). J2 wants 5: at 10 the free 4 + 2 = 6 give it its 5 with 1 extra.
    J3 (1 proc, 100 s) arrives at 1: it would outlast the shadow time but fits the 1 extra processor, so it
    starts at 1. J4 (1 proc, 100 s) at 2: the extra processor is taken, and the 3 free ones are needed at 10:
    it waits. t=10: J2 starts (5 of 5 free). t=15: J2 ends, J4 starts 15-115."""
    jobs = [(0, 2, 10, 10), (0, 5, 5, 5), (1, 1, 100, 100), (2, 1, 100, 100)]
    s = run(jobs, 6)
    assert s.start.tolist() == [0, 10, 1, 15]
    assert s.finish.tolist() == [10, 15, 101, 115]


def test_schedule_follows_actual_ends_not_estimates():
    """J1 asks 100 s but ends at 10: J2 (all 4 procs) starts at 10, when the processors really come back."""
    s = run([(0, 4, 10, 100), (5, 4, 10, 10)], 4)
    assert s.start.tolist() == [0, 10]


def test_a_job_past_its_estimate_is_expected_to_end_now():
    """Without kills a job may outrun its estimate (the trace's jobs that ran past their request did).
    J1 (3 procs) says 5 s, runs 20. J2 (4 procs) waits. At t=8 J3 (1 proc, 5 s) arrives: J1's estimated end
    (5) has passed, so the scheduler expects it now: shadow 8, so J3 (ends 13 > 8) needs an extra processor:
    4 - 4 = 0, none. J3 waits. t=20: J2 20-30; t=30: J3 30-35."""
    s = run([(0, 3, 20, 5), (1, 4, 10, 10), (8, 1, 5, 5)], 4)
    assert s.start.tolist() == [0, 20, 30]


def test_a_killed_job_is_resubmitted_with_its_request_and_its_loss_counted():
    """J1 (2 procs) gets a limit of 4 s but needs 10: killed at 4, 8 processor-seconds lost, resubmitted at
    4 with its request (12 s). J2 (4 procs, from 1) was waiting with the reservation at J1's estimated end 4;
    at 4 the queue is J2 then J1's retry: J2 starts 4-9, then J1 9-19. Its wait counts from its first submit."""
    jobs = [(0, 2, 10, 4), (1, 4, 5, 5)]
    s = run(jobs, 4, kill=[True, False], retry=[12, 5])
    assert s.killed.tolist() == [True, False]
    assert s.lost_core_s == 8
    assert s.start.tolist() == [9, 4]
    assert s.finish.tolist() == [19, 9]
    m = s.metrics(np.array([0.0, 1.0]), np.array([10.0, 5.0]), np.array([2.0, 4.0]))
    assert m["mean_wait_s"] == pytest.approx((9 + 3) / 2)
    assert m["lost_core_hours_share"] == pytest.approx(8 / (20 + 20))
    # bounded slowdown: J1 19/10, J2 8/max(5, 10) -> 1 (bounded below by 1)
    assert m["mean_bounded_slowdown"] == pytest.approx((1.9 + 1.0) / 2)
    # 40 useful processor-seconds over 4 processors x 19 s
    assert m["utilization"] == pytest.approx(40 / 76)


def test_a_limit_that_is_not_enforced_or_not_exceeded_kills_nothing():
    s = run([(0, 2, 10, 12)], 4, kill=[True], retry=[12])
    assert not s.killed.any() and s.finish.tolist() == [10]


def test_first_come_first_served_when_nothing_can_backfill():
    """Every job needs the whole machine: they run one after another in submit order."""
    s = run([(0, 4, 3, 3), (1, 4, 3, 3), (1, 4, 3, 3)], 4)
    assert s.start.tolist() == [0, 3, 6]
    m = s.metrics(np.array([0.0, 1, 1]), np.array([3.0, 3, 3]), np.array([4.0, 4, 4]))
    assert m["utilization"] == pytest.approx(1.0)
    assert m["mean_wait_s"] == pytest.approx((0 + 2 + 5) / 3)


def test_machine_size_from_header_or_widest_job():
    assert machine_size({"MaxProcs": "100"}, np.array([1.0, 64.0])) == 100
    assert machine_size({"MaxNodes": "128"}, np.array([1.0, 64.0])) == 128
    assert machine_size({}, np.array([1.0, 64.0, math.nan])) == 64
    assert machine_size({"MaxProcs": "32"}, np.array([48.0])) == 48
