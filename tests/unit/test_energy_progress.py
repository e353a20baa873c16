"""The collector's running totals (``--progress FILE``): what a service reads while a long job (a desktop) runs.

RAPL comes from a synthetic powercap tree (the energy is known exactly); the CLI test wraps a real command and
reads the file while it still runs, then once more after the exit, where it must agree with the EAR CSV.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from heroes_energy.collect import Collector, StepInfo, heroes_ids_from
from heroes_energy.reader import read_files

ENERGY_DIR = Path(__file__).resolve().parents[2] / "energy"


class FakeClock:
    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now


def powercap(root: Path, energy_uj: int) -> Path:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    return zone


def step() -> StepInfo:
    return StepInfo(job_id="42", step_id="0", node="n1", user="bob", group="bob", account="", job_name="desk",
                    nprocs=1, heroes_ids=heroes_ids_from([], {}))


def test_progress_holds_the_measured_totals_after_every_sample_and_the_exit(tmp_path):
    root = tmp_path / "powercap"
    zone = powercap(root, 1_000_000)
    clock = FakeClock()
    progress = tmp_path / "out" / "progress.json"
    collector = Collector(str(tmp_path / "out"), step(), powercap_root=str(root), use_nvml=False, clock=clock,
                          progress_path=str(progress))
    collector.start()
    assert not progress.exists(), "no total before the first sample: nothing was measured yet"
    for joules in (50, 30):  # 50 W for 1 s, then 30 W for 1 s
        clock.now += 1
        (zone / "energy_uj").write_text(f"{int((zone / 'energy_uj').read_text()) + joules * 1_000_000}\n")
        collector.sample()
        got = json.loads(progress.read_text())
        assert got["final"] is False and (got["job_id"], got["node"]) == ("42", "n1")
    assert got["time_s"] == 2.0 and got["energy_j"] == 80.0 and got["power_w"] == 30.0
    assert "PCK_POWER_W" not in got["estimated"] and "DC_NODE_POWER_W" not in got["estimated"]
    collector.finish()
    final = json.loads(progress.read_text())
    assert final["final"] is True and final["energy_j"] == 80.0 and final["power_w"] is None
    # the EAR CSV written at the exit says the same energy
    (app,), errors = read_files([collector.app_path])
    assert errors == [] and app.dc_power_w * app.time_s == 80.0
    assert [p.name for p in progress.parent.iterdir() if p.name.startswith(".tmp-")] == []  # atomic replace


def test_progress_marks_the_estimate_when_there_is_no_rapl(tmp_path):
    clock = FakeClock()
    progress = tmp_path / "p" / "progress.json"
    collector = Collector(str(tmp_path / "out"), step(), powercap_root=str(tmp_path / "none"), use_nvml=False,
                          clock=clock, progress_path=str(progress))
    collector.start()
    clock.now += 1
    collector.sample()
    got = json.loads(progress.read_text())
    assert {"PCK_POWER_W", "DC_NODE_POWER_W"} <= set(got["estimated"]) and got["energy_j"] > 0


def test_progress_is_optional_and_a_failed_write_does_not_stop_sampling(tmp_path):
    clock = FakeClock()
    plain = Collector(str(tmp_path / "a"), step(), powercap_root=str(tmp_path / "none"), use_nvml=False, clock=clock)
    plain.start()
    clock.now += 1
    plain.sample()
    plain.finish()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["heroes.42.0.n1.csv", "heroes.42.0.n1.samples.csv"]

    logged: list[str] = []
    broken = Collector(str(tmp_path / "b"), step(), powercap_root=str(tmp_path / "none"), use_nvml=False,
                       clock=clock, progress_path=str(tmp_path / "b" / "gone" / "progress.json"), log=logged.append)
    broken.start()
    (tmp_path / "b" / "gone").rmdir()  # its folder vanished under it
    clock.now += 1
    broken.sample()
    clock.now += 1
    broken.sample()
    assert broken.totals.time_s == 2.0 and any("progress file not written" in m for m in logged)


def test_cli_progress_is_readable_while_the_command_runs(tmp_path):
    out, progress = tmp_path / "energy", tmp_path / "energy" / "progress.json"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ENERGY_DIR), "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "heroes_energy.collect", "--out", str(out), "--interval", "0.2", "--job-id", "9",
         "--progress", str(progress), "--powercap-root", str(tmp_path / "none"), "--no-gpu", "--",
         sys.executable, "-c", "import time; time.sleep(2.5)"], env=env)
    try:
        deadline = time.monotonic() + 10
        while not progress.exists():
            assert time.monotonic() < deadline, "no progress file while the command ran"
            time.sleep(0.05)
        running = json.loads(progress.read_text())
        assert proc.poll() is None and running["final"] is False and running["job_id"] == "9"
    finally:
        assert proc.wait(timeout=30) == 0
    final = json.loads(progress.read_text())
    assert final["final"] is True and final["time_s"] >= 2.0 and final["energy_j"] >= running["energy_j"]
    (app_file,) = [p for p in out.glob("heroes.9.*.csv") if not p.name.endswith(".samples.csv")]
    (app,), _ = read_files([str(app_file)])
    assert abs(app.dc_power_w * app.time_s - final["energy_j"]) <= 0.01 * final["energy_j"] + 0.01
