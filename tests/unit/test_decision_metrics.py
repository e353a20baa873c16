"""Metric formulas on hand-made numbers."""
from __future__ import annotations

import numpy as np
import pytest

from heroes_service.decision.evaluate import accuracy, limit_metrics, point_metrics


def test_accuracy_is_symmetric_ratio():
    run = np.array([100.0, 100.0, 100.0, 50.0])
    pred = np.array([100.0, 50.0, 400.0, 60.0])
    assert accuracy(pred, run).tolist() == pytest.approx([1.0, 0.5, 0.25, 50 / 60])


def test_point_metrics_hand_computed():
    run = np.array([100.0, 200.0, 10.0, 40.0])
    pred = np.array([50.0, 200.0, 20.0, 80.0])
    m = point_metrics(pred, run)
    assert m["mean_accuracy"] == pytest.approx((0.5 + 1.0 + 0.5 + 0.5) / 4)
    assert m["mae_s"] == pytest.approx((50 + 0 + 10 + 40) / 4)
    assert m["under_share"] == pytest.approx(1 / 4)  # only 50 < 100; equal is not under


def test_limit_metrics_hand_computed():
    run = np.array([100.0, 300.0, 50.0, 1000.0])
    limit = np.array([200.0, 150.0, 50.0, 2000.0])
    request = np.array([400.0, 300.0, 100.0, 4000.0])
    m = limit_metrics(limit, run, request)
    assert m["kill_share"] == pytest.approx(1 / 4)  # 150 < 300
    assert m["mean_accuracy"] == pytest.approx((0.5 + 0.5 + 1.0 + 0.5) / 4)
    assert m["limit_over_request"] == pytest.approx((0.5 + 0.5 + 0.5 + 0.5) / 4)
