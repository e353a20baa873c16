"""The time limit: the outcome distribution behind it and the online choice of the kill price."""
from __future__ import annotations

import math

import numpy as np
import pytest

from heroes_service.decision.predictor import LAMBDAS, OFFSET_GRID, LimitChooser, RatioDistribution


def two_kinds(n=1200, seed=0):
    """Feature 0 says which kind a job is: kind 1 always dies after ~5 % of its request, kind 0 uses ~90 %."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, n).astype(np.float64)
    noise = rng.normal(0, 0.02, n)
    ratio = np.where(kind == 1, math.log(0.05), math.log(0.9)) + noise
    D = np.column_stack([kind, rng.normal(size=n)])
    return D, ratio


def test_distribution_gives_each_kind_its_own_limit():
    D, ratio = two_kinds()
    dist = RatioDistribution(max_iter=20, min_samples_leaf=20).fit(D, ratio)
    P = dist.proba(np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert P.shape == (2, dist.n_bins)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    assert P[0, dist.bins(np.array([math.log(0.05)]))[0]] > 0.9
    offsets = dist.limit_offsets(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([0.0, 0.0]))
    assert offsets.shape == (2, len(LAMBDAS))
    mid = int(np.searchsorted(LAMBDAS, 3.0))   # a moderate price for a kill
    # the early-failing kind gets a limit far below its request but above what it runs
    assert math.log(0.05) < offsets[0, mid] < math.log(0.2)
    # the regular kind gets just above its 90 %, never above the request
    assert math.log(0.9) < offsets[1, mid] <= 0.0
    # the infinite price always answers the request; prices only ever raise a job's limit
    assert (offsets[:, -1] == 0.0).all()
    assert (np.diff(offsets, axis=1) >= -1e-12).all()


def test_limit_respects_a_ceiling_below_the_request():
    D, ratio = two_kinds()
    dist = RatioDistribution(max_iter=10).fit(D, ratio)
    ceiling = np.array([math.log(0.5), math.log(0.5), np.nan])
    offsets = dist.limit_offsets(np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), ceiling)
    assert (offsets[:2] <= math.log(0.5) + 1e-12).all()
    assert np.isnan(offsets[2]).all()   # unknown request: no options


def test_single_bin_history_is_a_constant_distribution():
    D = np.zeros((300, 2))
    dist = RatioDistribution().fit(D, np.full(300, -1.0))
    P = dist.proba(D[:3])
    assert P.max(axis=1).tolist() == [1.0, 1.0, 1.0]


def offsets_of(n, rng):
    """Per-price options that rise with the price (as the distribution's do), from 0.1 to 1 x request."""
    base = np.log(np.linspace(0.1, 1.0, len(LAMBDAS)))
    return np.broadcast_to(base, (n, len(LAMBDAS))).copy()


def test_chooser_takes_the_most_accurate_price_within_the_kill_target():
    rng = np.random.default_rng(3)
    chooser = LimitChooser(target_kill=0.05, window=1000, min_points=100, refresh=10)
    opts = offsets_of(1, rng)[0]
    assert math.isnan(chooser.choose(opts))   # no finished job yet: no choice (caller keeps the request)
    ratios = np.log(rng.uniform(0.05, 0.8, 1000))
    for r in ratios:
        chooser.observe(opts, float(r))
    chosen = chooser.choose(opts)
    kill = np.array([(ratios > o).mean() for o in opts])
    accuracy = np.array([np.exp(-np.abs(o - ratios)).mean() for o in opts])
    allowed = kill <= 0.05
    assert chosen == opts[np.argmax(np.where(allowed, accuracy, -1))]
    assert (ratios > chosen).mean() <= 0.05


def test_chooser_falls_back_to_the_request_when_nothing_keeps_the_target():
    chooser = LimitChooser(target_kill=0.01, window=500, min_points=50, refresh=5)
    opts = np.log(np.linspace(0.1, 1.0, len(LAMBDAS)))
    for _ in range(200):
        chooser.observe(opts, 0.5)   # every job outran its request: every price kills all of them
    assert chooser.choose(opts) == opts[-1]


def test_chooser_ignores_jobs_without_options():
    chooser = LimitChooser(min_points=1)
    chooser.observe(None, -1.0)
    chooser.observe(np.full(len(LAMBDAS), np.nan), -1.0)
    chooser.observe(np.zeros(len(LAMBDAS)), float("nan"))
    assert chooser.size == 0


def test_grid_is_below_the_request():
    assert OFFSET_GRID.max() < 0.0 and OFFSET_GRID.min() <= -10.0
    assert LAMBDAS[-1] == np.inf and (np.diff(LAMBDAS) > 0).all()


def test_expected_accuracy_of_a_guess_matches_the_mixture():
    D, ratio = two_kinds()
    dist = RatioDistribution(max_iter=10).fit(D, ratio)
    P = dist.proba(D[:4])
    guesses = np.array([[-3.0, -0.1], [-0.5, 0.0], [-2.99, -1.0], [0.0, -6.0]])
    exact = np.einsum("nb,nkb->nk", P, np.exp(-np.abs(guesses[:, :, None, None] - dist.samples[None, None]))
                      .mean(axis=3))
    np.testing.assert_allclose(dist.expected_accuracy(P, guesses), exact, atol=2e-3)
    # a job of the early-failing kind is best guessed near its 5 %, one of the regular kind near its 90 %
    kinds = dist.proba(np.array([[1.0, 0.0], [0.0, 0.0]]))
    both = dist.expected_accuracy(kinds, np.array([[math.log(0.05), math.log(0.9)]] * 2))
    assert both[0, 0] > both[0, 1] and both[1, 1] > both[1, 0]


def test_chooser_counts_only_the_kills_the_limit_adds():
    """A fifth of the jobs ran past their request (the scheduler killed them at it whatever we chose): they
    do not use up the kill budget, so the chooser still tightens the limit for the others."""
    rng = np.random.default_rng(5)
    chooser = LimitChooser(target_kill=0.05, window=1000, min_points=100, refresh=10)
    opts = offsets_of(1, rng)[0]
    ratios = np.where(rng.uniform(size=1000) < 0.2, 0.1, np.log(rng.uniform(0.05, 0.8, 1000)))
    for r in ratios:
        chooser.observe(opts, float(r))
    chosen = chooser.choose(opts)
    added = ((ratios <= 0) & (ratios > chosen)).mean()
    assert chosen < opts[-1] and added <= 0.05
    assert (ratios > chosen).mean() > 0.2   # all kills together exceed the target: the old rule fell back


def test_chooser_keeps_the_lost_core_hours_within_their_target():
    """Wide jobs that run near their request are the costly kills: with a lost-work target the chooser
    takes a more generous price than on job counts alone."""
    rng = np.random.default_rng(7)
    opts = offsets_of(1, rng)[0]
    counts_only = LimitChooser(target_kill=0.05, window=1000, min_points=100, refresh=10)
    with_work = LimitChooser(target_kill=0.05, window=1000, min_points=100, refresh=10, target_lost=0.005)
    for _ in range(1000):
        wide = rng.uniform() < 0.1
        ratio = float(np.log(rng.uniform(0.7, 1.0) if wide else rng.uniform(0.05, 0.6)))
        for chooser in (counts_only, with_work):
            chooser.observe(opts, ratio, request_s=3600.0, procs=64.0 if wide else 1.0)
    loose, careful = counts_only.choose(opts), with_work.choose(opts)
    assert careful > loose
    kill, _, lost = with_work.realised()
    assert lost[with_work.lambda_index()] <= 0.005 and kill[with_work.lambda_index()] <= 0.05


def test_limit_metrics_separate_added_kills_and_lost_work():
    from heroes_service.decision.evaluate import limit_metrics

    run = np.array([100.0, 100.0, 130.0, 50.0])
    request = np.array([200.0, 200.0, 120.0, 100.0])
    limit = np.array([80.0, 150.0, 120.0, 40.0])   # kills job 0 (added), job 2 (ran past its request), job 3
    procs = np.array([2.0, 1.0, 1.0, 4.0])
    m = limit_metrics(limit, run, request, procs)
    assert m["kill_share"] == 0.75 and m["added_kill_share"] == 0.5
    # stopped below their request: jobs 0 and 3 (job 2's limit is its request): (80*2 + 40*4) / useful
    assert m["lost_core_hours_share"] == pytest.approx((160 + 160) / (200 + 100 + 130 + 200))
