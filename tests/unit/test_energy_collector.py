"""EAR-lite collector: RAPL from a synthetic powercap tree, the estimate fallback, the CLI around real commands."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from heroes_energy import columns as C
from heroes_energy.collect import Collector, StepInfo, heroes_ids_from
from heroes_energy.estimate import cpu_power_w, tdp_for
from heroes_energy.rapl import RaplReader, counter_delta
from heroes_energy.reader import read_files, read_samples

ENERGY_DIR = Path(__file__).resolve().parents[2] / "energy"
MAX_UJ = 262143328850  # a real package counter range (about 262 kJ)


def make_zone(root: Path, name: str, zone_name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(zone_name + "\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    return zone


def set_energy(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def powercap(tmp_path):
    """Two packages with DRAM sub-zones, a core sub-zone and an mmio duplicate that must be ignored."""
    root = tmp_path / "powercap"
    zones = {
        "pkg0": make_zone(root, "intel-rapl:0", "package-0", MAX_UJ - 5_000_000),  # wraps soon
        "dram0": make_zone(root, "intel-rapl:0:1", "dram", 1_000_000),
        "core0": make_zone(root, "intel-rapl:0:0", "core", 7),
        "pkg1": make_zone(root, "intel-rapl:1", "package-1", 50_000_000),
        "mmio": make_zone(root, "intel-rapl-mmio:0", "package-0", 0),
    }
    return root, zones


def step(job="42", node="n1") -> StepInfo:
    return StepInfo(job_id=job, step_id="0", node=node, user="bob", group="bob", account="acct",
                    job_name="app", nprocs=1, heroes_ids=heroes_ids_from(["instance=wf-1", "user=bob"], {}))


class FakeClock:
    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now


def test_counter_delta_wraps_at_max_energy_range():
    assert counter_delta(100, 350, 1000) == 250
    # the counter runs 0..1000 inclusive: 990 -> 1000 is 10 steps, 1000 -> 0 one, 0 -> 9 nine
    assert counter_delta(990, 9, 1000) == 20
    assert counter_delta(MAX_UJ - 5, 4, MAX_UJ) == 10


def test_rapl_reader_wrap_gives_the_right_energy(powercap):
    root, zones = powercap
    reader = RaplReader(root=str(root)).open()
    assert reader.available, reader.reason
    assert sorted(z.name for z in reader.zones) == ["dram", "package-0", "package-1"]  # no core, no mmio
    set_energy(zones["pkg0"], 15_000_000 - 1)            # wrapped: 5 J before the wrap + 15 J after
    set_energy(zones["pkg1"], 50_000_000 + 30_000_000)   # +30 J
    set_energy(zones["dram0"], 1_000_000 + 4_000_000)    # +4 J
    reading = reader.read()
    assert reading.package_j == pytest.approx(5.0 + 15.0 + 30.0)
    assert reading.dram_j == pytest.approx(4.0)


def test_collector_integrates_measured_rapl_energy_across_a_wrap(powercap, tmp_path):
    root, zones = powercap
    clock = FakeClock()
    collector = Collector(str(tmp_path / "out"), step(), powercap_root=str(root), use_nvml=False, clock=clock)
    collector.start()
    pkg0, pkg1, dram = MAX_UJ - 5_000_000, 50_000_000, 1_000_000
    # three 1-second intervals: 100 W of packages each, 10 W of DRAM; pkg0 wraps in the second one
    for _ in range(3):
        pkg0 = (pkg0 + 60_000_000) % (MAX_UJ + 1)
        pkg1 += 40_000_000
        dram += 10_000_000
        set_energy(zones["pkg0"], pkg0)
        set_energy(zones["pkg1"], pkg1)
        set_energy(zones["dram0"], dram)
        clock.now += 1.0
        row = collector.sample()
        assert row["PCK_POWER_W"] == "100.00"
        assert "PCK_POWER_W" not in row[C.ESTIMATED_COLUMN]
    path = collector.finish()
    rows, errors = read_files([path])
    assert errors == []
    (app,) = rows
    assert app.pck_power_w == pytest.approx(100.0)
    assert app.dram_power_w == pytest.approx(10.0)
    assert app.time_s == pytest.approx(3.0)
    assert app.energy_j == pytest.approx(330.0)  # (100 + 10) W x 3 s
    assert not app.is_estimated
    assert "PCK_POWER_W" not in app.estimated and "DC_NODE_POWER_W" not in app.estimated


def _check_estimated_fallback(collector: Collector, clock: FakeClock):
    collector.start()
    assert not collector.rapl.available
    assert "permission denied" in collector.rapl.reason
    clock.now += 1.0
    row = collector.sample()
    assert {"PCK_POWER_W", "DC_NODE_POWER_W"} <= set(row[C.ESTIMATED_COLUMN].split(","))
    assert row["DRAM_POWER_W"] == ""  # not measured and not invented
    path = collector.finish()
    (app,), errors = read_files([path])
    assert errors == []
    assert app.is_estimated
    assert {"PCK_POWER_W", "DC_NODE_POWER_W", "NODEMGR_DC_NODE_POWER_W", "MAX_POWER_W"} <= app.estimated
    assert app.dram_power_w is None
    model = collector.tdp
    low = cpu_power_w(0.0, model, collector.cpu.logical_cpus, collector.cpu.sockets)
    high = cpu_power_w(1.0, model, collector.cpu.logical_cpus, collector.cpu.sockets)
    assert low - 0.01 <= app.pck_power_w <= high + 0.01  # written with 2 decimals


def test_permission_denied_via_injected_opener_falls_back_to_marked_estimate(powercap, tmp_path):
    root, _ = powercap

    def opener(path: str) -> str:
        if path.endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", path)
        with open(path) as handle:
            return handle.read()

    clock = FakeClock()
    collector = Collector(str(tmp_path / "out"), step(), powercap_root=str(root), rapl_opener=opener,
                          use_nvml=False, clock=clock)
    _check_estimated_fallback(collector, clock)


def test_chmod_000_rapl_as_unprivileged_user_falls_back_to_marked_estimate():
    """A real permission denial: energy_uj mode 000, collector run as nobody with Debian's bare python3."""
    base = Path(tempfile.mkdtemp(prefix="heroes-rapl-", dir="/tmp"))
    try:
        base.chmod(0o755)
        root = base / "powercap"
        zone = make_zone(root, "intel-rapl:0", "package-0", 123)
        for path in (root, zone):
            path.chmod(0o755)
        for leaf in ("name", "max_energy_range_uj"):
            (zone / leaf).chmod(0o644)
        (zone / "energy_uj").chmod(0o000)
        out = base / "out"
        out.mkdir()
        out.chmod(0o777)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ENERGY_DIR), "HOME": "/tmp"}
        result = subprocess.run(
            ["/usr/bin/python3", "-m", "heroes_energy.collect", "--out", str(out), "--job-id", "77",
             "--powercap-root", str(root), "--no-gpu", "--", "/usr/bin/python3", "-c", "print('step ran')"],
            user=65534, group=65534, env=env, cwd="/tmp", capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "step ran" in result.stdout
        assert "permission denied" in result.stderr and "estimated" in result.stderr
        (app_file,) = [p for p in out.iterdir() if not p.name.endswith(".samples.csv")]
        (app,), errors = read_files([str(app_file)])
        assert errors == []
        assert app.is_estimated and "PCK_POWER_W" in app.estimated
        assert app.user == "nobody"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_frequency_without_cpufreq_is_marked_estimated(tmp_path):
    sys_cpu = tmp_path / "cpu"
    (sys_cpu / "cpu0").mkdir(parents=True)  # no cpufreq directory: a VM
    clock = FakeClock()
    collector = Collector(str(tmp_path / "out"), step(), powercap_root=str(tmp_path / "none"),
                          use_nvml=False, sys_cpu=str(sys_cpu), clock=clock)
    collector.start()
    clock.now += 1
    row = collector.sample()
    assert "AVG_CPUFREQ_KHZ" in row[C.ESTIMATED_COLUMN]
    values = collector.app_values()
    assert "AVG_CPUFREQ_KHZ" in values[C.ESTIMATED_COLUMN].split(",")


def test_frequency_from_cpufreq_is_measured(tmp_path):
    sys_cpu = tmp_path / "cpu"
    for i, khz in enumerate((2_000_000, 3_000_000)):
        freq = sys_cpu / f"cpu{i}" / "cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_cur_freq").write_text(f"{khz}\n")
        (freq / "scaling_max_freq").write_text("3500000\n")
    clock = FakeClock()
    collector = Collector(str(tmp_path / "out"), step(), powercap_root=str(tmp_path / "none"),
                          use_nvml=False, sys_cpu=str(sys_cpu), clock=clock)
    collector.start()
    clock.now += 1
    row = collector.sample()
    assert row["AVG_CPUFREQ_KHZ"] == "2500000"
    assert "AVG_CPUFREQ_KHZ" not in row[C.ESTIMATED_COLUMN]
    assert collector.def_freq_khz == 3_500_000


def test_tdp_table_and_environment_override():
    assert tdp_for("AMD EPYC 7763 64-Core Processor", {}).tdp_w == 280.0
    assert tdp_for("Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", {}).tdp_w == 150.0
    assert tdp_for("Mystery CPU", {}).source.startswith("default")
    assert tdp_for("Mystery CPU", {"HEROES_CPU_TDP": "95"}).tdp_w == 95.0
    model = tdp_for("AMD EPYC 7763", {"HEROES_CPU_TDP": "EPYC 7763=250:128"})
    assert (model.tdp_w, model.threads_per_socket) == (250.0, 128)
    # a 2-vCPU VM on a 128-thread socket gets 2/128 of the socket's TDP
    assert cpu_power_w(1.0, model, logical_cpus=2, sockets=1) == pytest.approx(250.0 * 2 / 128)
    assert cpu_power_w(0.0, model, logical_cpus=128, sockets=1) == pytest.approx(250.0 * 0.3)


def test_heroes_ids_from_options_environment_and_defaults():
    ids = heroes_ids_from(["instance=wf-9", "HEROES_ORGANIZATION_ID=org-3"], {"HEROES_USER_ID": "bob"})
    assert ids == {"HEROES_INSTANCE_WORKFLOW_ID": "wf-9", "HEROES_TEMPLATE_WORKFLOW_ID": "NO_HER_ID",
                   "HEROES_USER_ID": "bob", "HEROES_ORGANIZATION_NAME": "NO_PRJ_ID",
                   "HEROES_ORGANIZATION_ID": "org-3"}
    with pytest.raises(SystemExit):
        heroes_ids_from(["instance=a;b"], {})
    with pytest.raises(SystemExit):
        heroes_ids_from(["colour=blue"], {})


# ------------------------------------------------------------------ the CLI around real processes

def run_collector(out: Path, code: str, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "heroes_energy.collect", "--out", str(out), "--interval", "0.2", "--no-gpu",
         "--ids", "instance=wf-1", "template=tpl-2", "user=bob", "org_name=acme", "org_id=org-1", *extra,
         "--", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("code", [0, 3, 255])
def test_collector_preserves_exit_code_and_writes_both_files(tmp_path, code):
    burn = f"import time, sys\nt = time.time()\nwhile time.time() - t < 0.7: pass\nsys.exit({code})"
    result = run_collector(tmp_path, burn, "--job-id", "900", "--step-id", "2")
    assert result.returncode == code, result.stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    node = files[0].split(".")[3]
    assert files == [f"heroes.900.2.{node}.csv", f"heroes.900.2.{node}.samples.csv"]
    (app,), errors = read_files([str(tmp_path / files[0])])
    assert errors == []
    assert (app.job_id, app.step_id, app.variant) == (900, 2, "earlite")
    assert app.heroes_ids == ("wf-1", "tpl-2", "bob", "acme", "org-1")
    assert 0.6 < app.time_s < 5
    assert app.energy_j > 0
    samples, errors = read_samples(str(tmp_path / files[1]))
    assert errors == [] and len(samples) >= 3
    assert samples[-1]["ELAPSED_SEC"] == pytest.approx(app.time_s, abs=0.01)
    # the step burnt a CPU: utilization during the step is visible in the samples
    assert max(s["CPU_UTIL"] for s in samples) >= 40


def test_collector_reports_missing_command_with_127(tmp_path):
    result = subprocess.run([sys.executable, "-m", "heroes_energy.collect", "--out", str(tmp_path), "--",
                             "no-such-command-xyz"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 127
    assert "not found" in result.stderr


def test_collector_forwards_sigterm_and_keeps_the_step_exit_code(tmp_path):
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "heroes_energy.collect", "--out", str(tmp_path), "--interval", "0.2", "--no-gpu",
         "--job-id", "5", "--", sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
    app_files = [p for p in tmp_path.iterdir() if not p.name.endswith(".samples.csv")]
    (app,), errors = read_files([str(p) for p in app_files])
    assert errors == [] and app.job_id == 5 and app.time_s >= 0.5


def test_collector_dies_of_the_signal_that_killed_the_step(tmp_path):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    result = run_collector(tmp_path, code, "--job-id", "6")
    assert result.returncode == -signal.SIGKILL
    assert len(list(tmp_path.iterdir())) == 2  # both files were written before dying


def test_a_broken_collector_never_changes_the_steps_outcome(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_collector(blocker / "out", "print('still ran'); raise SystemExit(4)", "--job-id", "8")
    assert result.returncode == 4
    assert "still ran" in result.stdout
    assert "energy monitoring stopped" in result.stderr


def test_free_text_ids_cannot_break_the_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_NAME", "my;job\nname")
    monkeypatch.setenv("HEROES_ORGANIZATION_NAME", "acme;corp")
    result = subprocess.run([sys.executable, "-m", "heroes_energy.collect", "--out", str(tmp_path), "--no-gpu",
                             "--job-id", "12", "--", sys.executable, "-c", "pass"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    app = [str(p) for p in tmp_path.iterdir() if not p.name.endswith(".samples.csv")]
    (row,), errors = read_files(app)
    assert errors == []
    assert row.job_name == "my_job name" and row.heroes_ids[3] == "acme_corp"
    bad = subprocess.run([sys.executable, "-m", "heroes_energy.collect", "--out", str(tmp_path), "--job-id", "x1",
                          "--", "true"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--job-id must be a non-negative integer" in bad.stderr
