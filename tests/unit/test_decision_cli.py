"""``heroes decision evaluate --json`` prints the shape issue 7 fixes, on the first jobs of the real KTH trace."""
from __future__ import annotations

import json
import subprocess
import sys

from heroes_dev.settings import shared_data_dir

KTH = shared_data_dir() / "KTH-SP2-1996.swf"
METRICS = {"mean_accuracy", "mae_s", "under_share"}


def test_evaluate_json_shape_on_the_start_of_kth():
    assert KTH.exists(), f"the shared trace is expected at {KTH} (set HEROES_SHARED_DIR)"
    result = subprocess.run([sys.executable, "-m", "heroes_dev.cli", "decision", "evaluate", "--trace", str(KTH),
                             "--json", "--limit", "1500", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["jobs"] > 1000
    assert METRICS <= set(report["predictor"]["point"])
    assert {"kill_share", "mean_accuracy", "limit_over_request"} <= set(report["predictor"]["limit"])
    for baseline in ("user_request", "last_two"):
        assert METRICS <= set(report["baselines"][baseline])
    for value in (report["predictor"]["point"]["mean_accuracy"], report["predictor"]["limit"]["kill_share"]):
        assert 0.0 <= value <= 1.0
    # the recommended limit never exceeds the request by default (what a scheduler would accept)
    assert report["predictor"]["limit"]["limit_over_request"] <= 1.0
