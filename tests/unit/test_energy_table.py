"""The pandas fast path reads what the row reader reads, refuses what it refuses, and aggregates alike."""
from __future__ import annotations

import math
import random

import pytest

from heroes_energy import columns as C
from heroes_energy.reader import aggregate, read_files
from heroes_energy.synthetic import ear_row_values, write_eacct_file
from heroes_energy.table import _fast_frame, aggregate_table, read_contents, read_table

FIELDS = ["energy_j", "dc_power_w", "time_s", "cpi", "mem_gbs", "avg_cpufreq_khz", "pck_power_w",
          "gpu_power_w", "gpu_freq_khz", "gpu_util_perc", "max_node_power_w", "io_mbs", "cpu_gflops"]


def same(a, b):
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return b is not None and b == pytest.approx(a, rel=1e-9)


def compare(paths):
    rows, errors = read_files(paths)
    assert errors == []
    table, errors = read_table(paths)
    assert errors == []
    assert len(table) == len(rows)
    by_rows = {(s.job_id, s.step_id): s for s in aggregate(rows)}
    by_table = aggregate_table(table)
    assert len(by_table) == len(by_rows)
    for rec in by_table.to_dict("records"):
        s = by_rows[(rec["job_id"], rec["step_id"])]
        for name in FIELDS:
            assert same(getattr(s, name), rec[name]), name
        assert rec["nodes"] == len(s.nodes) and bool(rec["estimated"]) == s.estimated


def test_generated_gpu_file_takes_the_fast_path_and_matches(tmp_path):
    path = tmp_path / "eacct.csv"
    write_eacct_file(str(path), 300, nodes_per_step=3, num_gpus=2)
    assert _fast_frame(str(path)) is not None
    compare([str(path)])


def test_collector_output_matches_through_both_paths(tmp_path):
    import subprocess, sys
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "heroes_energy.collect", "--out", str(out), "--interval", "0.2",
                             "--no-gpu", "--job-id", "3", "--", sys.executable, "-c", "sum(range(10**6))"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    app = [str(p) for p in out.iterdir() if not p.name.endswith(".samples.csv")]
    compare(app)
    table, _ = read_table(app)
    assert bool(table["estimated"].iloc[0]) == read_files(app)[0][0].is_estimated


def test_quirky_file_falls_back_to_the_row_reader(tmp_path):
    names = C.ear_app_columns(num_gpus=0)
    short = [n for n in names if n not in C.EXTENDED_COLUMNS]
    rng = random.Random(1)
    lines = [";".join(names)]
    for node in ("a", "b"):
        v = ear_row_values(9, 0, node, rng)
        lines.append(";".join(v[n] for n in (short if node == "b" else names)))
    path = tmp_path / "quirky.csv"
    path.write_text("\n".join(lines) + "\n")
    assert _fast_frame(str(path)) is None
    compare([str(path)])


def test_malformed_file_gives_the_row_readers_errors(tmp_path):
    good = tmp_path / "good.csv"
    write_eacct_file(str(good), 4)
    lines = good.read_text().splitlines()
    names = lines[0].split(";")
    fields = lines[2].split(";")
    fields[names.index("MEM_GBS")] = "1,5"
    lines[2] = ";".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    table, errors = read_table([str(good), str(bad)])
    assert table is None
    assert [(e.file, e.line, e.column) for e in errors] == [(str(bad), 3, "MEM_GBS")]
    assert errors == read_files([str(good), str(bad)])[1]


def test_contents_in_memory_read_like_files_and_errors_carry_the_given_name(tmp_path):
    good = tmp_path / "good.csv"
    write_eacct_file(str(good), 6)
    from_file, _ = read_table([str(good)])
    from_memory, errors = read_contents([("upload.csv", good.read_bytes())])
    assert errors == [] and set(from_memory["file"]) == {"upload.csv"}
    assert from_memory.drop(columns="file").equals(from_file.drop(columns="file"))
    lines = good.read_text().splitlines()
    names = lines[0].split(";")
    for literal, line in (("inf", 4), ("1e999", 5), ("nan", 6)):  # parsed as numbers by pandas, or left as text
        fields = lines[line - 1].split(";")
        fields[names.index("CPI")] = literal
        broken = lines[:line - 1] + [";".join(fields)] + lines[line:]
        table, errors = read_contents([("upload.csv", ("\n".join(broken) + "\n").encode())])
        assert table is None and [(e.file, e.line, e.column) for e in errors] == [("upload.csv", line, "CPI")], literal
