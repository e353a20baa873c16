"""Energy benchmarks (not a test): bulk ingest of 1,000,000 EAR rows, collector overhead at 1 Hz.

Run: ``.venv/bin/python tests/bench/bench_energy.py [--rows 1000000] [--backends sqlite,postgresql]
[--row-path-rows 200000] [--overhead-seconds 20] [--full-row-path] [--skip-parse]``

Prints wall and CPU seconds (the machine may be shared, CPU time is the steadier number):
1. generate an ``eacct -c -l`` file (2 nodes per step, no GPU columns; 76 columns);
2. the service's ingestion (``heroes_service.energy.ingest.ingest``, what POST ingest_ear_files and the
   workflow engine call) of that file into a fresh, migrated database: SQLite (a file, WAL, the default) and
   the embedded stack's PostgreSQL (a throw-away database, dropped afterwards): parse, validate, owner
   columns, duplicate check, bulk insert, commit (a file this large takes the pipelined path: chunk k is
   stored by a second thread while chunk k+1 is parsed). Goal <= 20 s. Then the same file again: every row
   is a duplicate, nothing is stored. For PostgreSQL the server backend's CPU is printed too (same machine;
   the backend works while the client parses). The process's CPU counts both of its threads;
3. parse + validate + aggregate alone with the pandas fast path (``heroes_energy.table``);
4. the standard-library row reader on ``--row-path-rows`` rows (per-row cost and its 1M extrapolation,
   or the real 1M run with ``--full-row-path``);
5. the collector around ``sleep`` at 1 Hz: its own CPU time between 2 s and 2+N s after start, as % of
   one core (goal <= 1 %), read from /proc/<pid>/stat, so interpreter start-up is not counted.
"""
from __future__ import annotations

import argparse
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
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


@contextmanager
def database(backend: str, tmp: Path):
    """A fresh database URL: a SQLite file, or a throw-away database on the stack's PostgreSQL."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / f'bench-{secrets.token_hex(3)}.db'}"
        return
    import psycopg
    from heroes_dev import settings as settings_module
    from heroes_dev.components import postgres as pg

    stack = settings_module.load()
    name = f"heroes_bench_{secrets.token_hex(4)}"
    admin_url = pg.database_url(stack, "postgres").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg.database_url(stack, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_service_ingest(tmp: Path, path: Path, rows: int, backend: str) -> None:
    """The service's ingest of the whole file into a fresh database, then again (all duplicates)."""
    from sqlalchemy import func, select

    from heroes_service.auth import Principal
    from heroes_service.energy.models import EnergyRecord
    from heroes_service.energy.ingest import Upload, ingest
    from heroes_service.store import make_engine, migrate, session_factory

    content = path.read_bytes()
    principal = Principal(username="bench", organization="bench-org", roles=frozenset({"user"}))
    with database(backend, tmp) as url:
        engine = make_engine(url)
        migrate(engine)
        sessions = session_factory(engine)
        for run in ("first", "again"):
            with sessions() as session:
                backend_pid = session.execute(select(func.pg_backend_pid())).scalar() \
                    if backend == "postgresql" else None
                server0 = cpu_seconds(backend_pid) if backend_pid else 0.0

                def work():
                    result = ingest(session, principal, [Upload(path.name, content)], cluster="bench")
                    session.commit()
                    return result

                result, wall, cpu = timed(work)
                server = (cpu_seconds(backend_pid) - server0) if backend_pid else None
                stored = session.execute(select(func.count()).select_from(EnergyRecord)).scalar()
            assert stored == rows and result["rows"] == rows, (stored, result)
            assert result["stored"] == (rows if run == "first" else 0), result
            extra = f" + {server:.2f} s CPU in the PostgreSQL backend" if server is not None else ""
            goal = f" (goal <= 20 s: {'met' if wall <= 20 else 'NOT met'})" if run == "first" else ""
            what = f"stored {result['stored']:,}" if run == "first" else f"{result['duplicates']:,} duplicates skipped"
            print(f"service ingest, {backend}, {run}: {wall:.2f} s wall / {cpu:.2f} s CPU{extra}; {what}{goal}; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
        engine.dispose()


def bench_ingest(tmp: Path, rows: int, row_rows: int, full_row_path: bool, backends: list[str],
                 skip_parse: bool) -> None:
    path = tmp / "eacct_1m.csv"
    _, wall, _ = timed(lambda: write_eacct_file(str(path), rows, nodes_per_step=2))
    print(f"generated {rows:,} rows ({path.stat().st_size / 1e6:.0f} MB) in {wall:.1f} s", flush=True)
    for backend in backends:
        bench_service_ingest(tmp, path, rows, backend)
    if skip_parse:
        return

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
    parser.add_argument("--skip-parse", action="store_true", help="only the service ingest, not the parser alone")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="heroes-bench-energy-") as tmp:
        if not args.skip_overhead:
            bench_overhead(Path(tmp), args.overhead_seconds)
        if not args.skip_ingest:
            bench_ingest(Path(tmp), args.rows, args.row_path_rows, args.full_row_path,
                         [b for b in args.backends.split(",") if b], args.skip_parse)


if __name__ == "__main__":
    main()
