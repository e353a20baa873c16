"""Energy benchmarks (not a test): bulk ingest of 1,000,000 EAR rows, collector overhead at 1 Hz.

Run: ``.venv/bin/python tests/bench/bench_energy.py [--rows 1000000] [--row-path-rows 200000]
[--overhead-seconds 20] [--full-row-path]``

Prints wall and CPU seconds (the machine may be shared, CPU time is the steadier number):
1. generate an ``eacct -c -l`` file (2 nodes per step, no GPU columns; 76 columns);
2. parse + validate + aggregate it with the pandas fast path (``heroes_energy.table``), goal <= 20 s;
3. the standard-library row reader on ``--row-path-rows`` rows (per-row cost and its 1M extrapolation,
   or the real 1M run with ``--full-row-path``);
4. the collector around ``sleep`` at 1 Hz: its own CPU time between 2 s and 2+N s after start, as % of
   one core (goal <= 1 %), read from /proc/<pid>/stat, so interpreter start-up is not counted.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from heroes_energy.reader import aggregate, read_files
from heroes_energy.synthetic import write_eacct_file
from heroes_energy.table import aggregate_table, read_table


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_ingest(tmp: Path, rows: int, row_rows: int, full_row_path: bool) -> None:
    path = tmp / "eacct_1m.csv"
    _, wall, _ = timed(lambda: write_eacct_file(str(path), rows, nodes_per_step=2))
    print(f"generated {rows:,} rows ({path.stat().st_size / 1e6:.0f} MB) in {wall:.1f} s")

    (table, errors), w_read, c_read = timed(lambda: read_table([str(path)]))
    assert not errors, errors[:3]
    steps, w_agg, c_agg = timed(lambda: aggregate_table(table))
    total = w_read + w_agg
    print(f"fast path (pandas): parse+validate {w_read:.2f} s wall / {c_read:.2f} s CPU, "
          f"aggregate {w_agg:.2f} s wall / {c_agg:.2f} s CPU -> {len(table):,} rows, {len(steps):,} steps; "
          f"total {total:.2f} s wall (goal <= 20 s: {'met' if total <= 20 else 'NOT met'})")
    del table, steps

    n = rows if full_row_path else min(row_rows, rows)
    small = path if n == rows else tmp / "eacct_rows.csv"
    if n != rows:
        write_eacct_file(str(small), n, nodes_per_step=2)
    (row_list, errors), w_rows, c_rows = timed(lambda: read_files([str(small)]))
    assert not errors
    summaries, w_ragg, c_ragg = timed(lambda: aggregate(row_list))
    per_row = (w_rows + w_ragg) / n
    cpu_per_row = (c_rows + c_ragg) / n
    label = "measured" if n == rows else f"extrapolated from {n:,} rows"
    print(f"row path (stdlib, exact): parse+validate {w_rows:.2f} s wall / {c_rows:.2f} s CPU, aggregate "
          f"{w_ragg:.2f} s wall / {c_ragg:.2f} s CPU for {n:,} rows ({per_row * 1e6:.1f} us/row wall, "
          f"{cpu_per_row * 1e6:.1f} us/row CPU); 1M rows {per_row * 1e6:.0f} s wall / {cpu_per_row * 1e6:.0f} s "
          f"CPU ({label})")
    print(f"fast path speed-up over the row path: {per_row * rows / total:.1f}x wall, "
          f"{cpu_per_row * rows / (c_read + c_agg):.1f}x CPU")
    print(f"peak RSS of the benchmark process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def bench_overhead(tmp: Path, seconds: float) -> None:
    out = tmp / "overhead"
    env = dict(os.environ)
    energy_dir = Path(__file__).resolve().parents[2] / "energy"
    env["PYTHONPATH"] = str(energy_dir) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "heroes_energy.collect", "--out", str(out), "--interval", "1",
                             "--", "sleep", str(seconds + 4)], env=env)
    time.sleep(2.0)
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    _, status, usage = os.wait4(proc.pid, 0)
    steady = (c1 - c0) / (t1 - t0) * 100
    lifetime = usage.ru_utime + usage.ru_stime
    samples = sum(1 for p in out.glob("*.samples.csv") for _ in p.open()) - 1
    print(f"collector at 1 Hz: {c1 - c0:.3f} s CPU over {t1 - t0:.1f} s = {steady:.3f} % of one core "
          f"(goal <= 1 %: {'met' if steady <= 1 else 'NOT met'}); whole run incl. interpreter start "
          f"{lifetime:.2f} s CPU for {samples} samples; exit {os.waitstatus_to_exitcode(status)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--row-path-rows", type=int, default=200_000)
    parser.add_argument("--full-row-path", action="store_true")
    parser.add_argument("--overhead-seconds", type=float, default=20.0)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="heroes-bench-energy-") as tmp:
        if not args.skip_overhead:
            bench_overhead(Path(tmp), args.overhead_seconds)
        if not args.skip_ingest:
            bench_ingest(Path(tmp), args.rows, args.row_path_rows, args.full_row_path)


if __name__ == "__main__":
    main()
