"""EAR CSV layouts, the reader's validation and EAR's multi-node aggregation rules."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from heroes_energy import columns as C
from heroes_energy.reader import aggregate, read_file, read_files
from heroes_energy.synthetic import ear_row_values, write_eacct_file
from heroes_energy.writer import write_app_csv

# Typed from the reference (EAR v6.2 application_create_header_str, non-workflow build), not from our code.
EAR_HEADER = (
    "JOBID;STEPID;USERID;GROUPID;ACCOUNTID;JOBNAME;ENERGY_TAG;JOB_START_TIME;JOB_END_TIME;JOB_START_DATE;"
    "JOB_END_DATE;JOB_EARL_START_TIME;JOB_EARL_END_TIME;POLICY;POLICY_TH;JOB_NPROCS;JOB_TYPE;JOB_DEF_FREQ;"
    "EARL_ENABLED;EAR_LEARNING_PHASE;NODENAME;"
    "AVG_CPUFREQ_KHZ;AVG_IMCFREQ_KHZ;DEF_FREQ_KHZ;TIME_SEC;CPI;TPI;MEM_GBS;IO_MBS;PERC_MPI;"
    "DC_NODE_POWER_W;DRAM_POWER_W;PCK_POWER_W;CYCLES;INSTRUCTIONS;STALLS_FETCH_DECODE;STALLS_RESOURCES;"
    "STALLS_MEMORY;CPU_GFLOPS;CPU_UTIL;"
    "L1_MISSES;L2_MISSES;L3_MISSES;LL_MISSES;L1_HITS;L2_HITS;L3_HITS;LL_HITS;L1_ACCESSES;"
    "L2_ACCESSES;L3_ACCESSES;LL_ACCESSES;L1_MISSRATE;L2_MISSRATE;L3_MISSRATE;LL_MISSRATE;L1_HITRATE;"
    "L2_HITRATE;L3_HITRATE;LL_HITRATE;SPOPS_SINGLE;SPOPS_128;SPOPS_256;SPOPS_512;DPOPS_SINGLE;DPOPS_128;"
    "DPOPS_256;DPOPS_512;"
    "NODEMGR_DC_NODE_POWER_W;NODEMGR_DRAM_POWER_W;NODEMGR_PCK_POWER_W;NODEMGR_MAX_DC_POWER_W;"
    "NODEMGR_MIN_DC_POWER_W;NODEMGR_TIME_SEC;NODEMGR_AVG_CPUFREQ_KHZ;NODEMGR_DEF_FREQ_KHZ"
).split(";")
GPU0 = "GPU0_POWER_W;GPU0_FREQ_KHZ;GPU0_MEM_FREQ_KHZ;GPU0_UTIL_PERC;GPU0_MEM_UTIL_PERC".split(";")
HEROES_PREFIX = (
    "HEROES_INSTANCE_WORKFLOW_ID;HEROES_TEMPLATE_WORKFLOW_ID;HEROES_USER_ID;HEROES_ORGANIZATION_NAME;"
    "HEROES_ORGANIZATION_ID;MAX_POWER_W;COMP_BOUND;MPI_BOUND;IO_BOUND;CPU_BUSY_WAITING;CPU_GPU_COMP;"
    "CPU_BOUND;MEM_BOUND;MIX_COMP"
).split(";")


def test_header_columns_are_ears():
    assert list(C.ear_app_columns(num_gpus=0)) == EAR_HEADER
    nodemgr_at = EAR_HEADER.index("NODEMGR_DC_NODE_POWER_W")
    assert list(C.ear_app_columns(num_gpus=1)) == EAR_HEADER[:nodemgr_at] + GPU0 + EAR_HEADER[nodemgr_at:]
    assert list(C.heroes_app_columns()) == HEROES_PREFIX + list(C.ear_app_columns(num_gpus=1))
    assert list(C.earlite_app_columns()) == list(C.heroes_app_columns()) + ["EARLITE_ESTIMATED"]


def test_collector_file_header_is_the_heroes_layout(tmp_path):
    path = tmp_path / "x.csv"
    write_app_csv(str(path), [])
    assert path.read_text().rstrip("\n").split(";") == HEROES_PREFIX + list(
        C.ear_app_columns(num_gpus=1)) + ["EARLITE_ESTIMATED"]


# ------------------------------------------------------------------ helpers building EAR-layout files

def values(job=1, step=0, node="n1", **over):
    rng = random.Random(hash((job, step, node)) & 0xFFFF)
    v = ear_row_values(job, step, node, rng, num_gpus=2)
    v.update({k: str(x) for k, x in over.items()})
    return v


def write_layout(path: Path, names, rows, trailing_sep=False):
    lines = [";".join(names) + (";" if trailing_sep else "")]
    lines += [";".join(r.get(n, "") for n in names) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_eacct_file_without_gpus(tmp_path):
    path = tmp_path / "eacct.csv"
    write_eacct_file(str(path), 6, nodes_per_step=3)
    rows, errors = read_files([str(path)])
    assert errors == [] and len(rows) == 6
    assert {r.variant for r in rows} == {"ear"}
    assert [len(s.nodes) for s in aggregate(rows)] == [3, 3]


def test_eacct_file_with_per_gpu_columns(tmp_path):
    names = C.ear_app_columns(num_gpus=2)
    path = write_layout(tmp_path / "gpu.csv", names, [values(GPU0_POWER_W=200, GPU1_POWER_W=100)])
    (row,), errors = read_files([path])
    assert errors == []
    assert row.gpu_power_w == (200.0, 100.0)


def test_heroes_plugin_rows_with_and_without_phase_values(tmp_path):
    names = list(C.heroes_app_columns())
    ids = dict(zip(C.HEROES_ID_COLUMNS, ["wf", "tpl", "bob", "acme", "org"]))
    with_phases = {**values(job=1), **ids, "MAX_POWER_W": "512.00", **{p: "3" for p in C.PHASE_COLUMNS},
                   "GPU0_POWER_W": "201.5,99.5", "GPU0_UTIL_PERC": "90,10"}
    # sig_ext missing: the plugin writes no phase values at all (the row is 8 fields short)
    no_phase_names = [n for n in names if n not in C.PHASE_COLUMNS]
    no_phases = {**values(job=2), **ids, "MAX_POWER_W": "400.00"}
    path = tmp_path / "heroes.0.csv"
    path.write_text(";".join(names) + ";\n"
                    + ";".join(with_phases.get(n, "0") for n in names) + "\n"
                    + ";".join(no_phases.get(n, "0") for n in no_phase_names) + "\n")
    rows, errors = read_files([str(path)])
    assert errors == []
    first, second = rows
    assert first.variant == "heroes" and first.heroes_ids == ("wf", "tpl", "bob", "acme", "org")
    assert first.phases == (3.0,) * 8 and first.max_power_w == 512.0
    assert first.gpu_power_w == (201.5, 99.5) and first.gpu_util_perc == (90.0, 10.0)
    assert second.phases is None and second.max_power_w == 400.0


def test_rows_without_extended_block_under_extended_header(tmp_path):
    names = C.ear_app_columns(num_gpus=0)
    short = [n for n in names if n not in C.EXTENDED_COLUMNS]
    path = tmp_path / "short.csv"
    v = values()
    path.write_text(";".join(names) + "\n" + ";".join(v[n] for n in short) + "\n")
    (row,), errors = read_files([str(path)])
    assert errors == [] and row.dc_power_w == float(v["DC_NODE_POWER_W"])


def test_non_earl_rows_use_the_node_manager_signature(tmp_path):
    names = C.ear_app_columns(num_gpus=0)
    rng = random.Random(3)
    v = ear_row_values(8, 0, "n1", rng, earl=False)
    v.update(NODEMGR_DC_NODE_POWER_W="300", NODEMGR_TIME_SEC="10")
    (row,), errors = read_files([write_layout(tmp_path / "noearl.csv", names, [v])])
    assert errors == []
    assert row.dc_power_w == 0.0 and row.energy_j == pytest.approx(3000.0)


def test_repeated_header_blank_lines_and_duplicates(tmp_path):
    names = C.ear_app_columns(num_gpus=0)
    header = ";".join(names)
    a, b = values(job=1, node="n1"), values(job=1, node="n2")
    path = tmp_path / "appended.csv"
    path.write_text("\n".join([header, ";".join(a[n] for n in names), "", header,
                               ";".join(b[n] for n in names), ";".join(a[n] for n in names)]) + "\n")
    rows, errors = read_files([str(path), str(path)])
    assert errors == []
    assert sorted(r.node for r in rows) == ["n1", "n2"]  # (job, step, node) kept once


# ------------------------------------------------------------------ malformed files are refused precisely

@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.csv"
    write_eacct_file(str(path), 4)
    return path


def lines_of(path):
    return path.read_text().splitlines()


def test_missing_column_is_named(tmp_path, good_file):
    lines = lines_of(good_file)
    names = lines[0].split(";")
    drop = names.index("TIME_SEC")
    bad = tmp_path / "missing.csv"
    bad.write_text("\n".join(";".join(f for i, f in enumerate(l.split(";")) if i != drop) for l in lines) + "\n")
    rows, errors = read_files([str(good_file), str(bad)])
    assert rows == []  # all or nothing: the good file is not half-ingested
    assert [(e.file, e.line, e.column) for e in errors] == [(str(bad), 1, "TIME_SEC")]
    assert "missing column" in str(errors[0])


def test_text_in_a_number_names_line_and_column(tmp_path, good_file):
    lines = lines_of(good_file)
    names = lines[0].split(";")
    fields = lines[3].split(";")
    fields[names.index("DC_NODE_POWER_W")] = "twelve"
    lines[3] = ";".join(fields)
    bad = tmp_path / "text.csv"
    bad.write_text("\n".join(lines) + "\n")
    rows, errors = read_files([str(bad)])
    assert rows == []
    (err,) = errors
    assert (err.file, err.line, err.column) == (str(bad), 4, "DC_NODE_POWER_W")
    assert "twelve" in err.message
    assert str(err).startswith(f"{bad}:4: column DC_NODE_POWER_W:")


def test_wrong_separator_is_refused(tmp_path, good_file):
    bad = tmp_path / "comma.csv"
    bad.write_text(good_file.read_text().replace(";", ","))
    rows, errors = read_files([str(bad)])
    assert rows == []
    assert errors[0].line == 1 and "not ';'-separated" in errors[0].message and "','" in errors[0].message


def test_truncated_line_names_the_first_missing_column(tmp_path, good_file):
    lines = lines_of(good_file)
    names = lines[0].split(";")
    lines[2] = ";".join(lines[2].split(";")[:30])
    bad = tmp_path / "truncated.csv"
    bad.write_text("\n".join(lines))  # and no final newline
    rows, errors = read_files([str(bad)])
    assert rows == []
    (err,) = errors
    assert (err.line, err.column) == (3, names[30])
    assert "truncated" in err.message


def test_other_refusals(tmp_path, good_file):
    lines = lines_of(good_file)
    names = lines[0].split(";")
    fields = lines[1].split(";")
    fields[names.index("JOBID")] = "12.5"
    nan_fields = lines[2].split(";")
    nan_fields[names.index("CPI")] = "nan"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], ";".join(fields), ";".join(nan_fields)]) + "\n")
    _, errors = read_file(str(bad))
    assert [(e.line, e.column) for e in errors] == [(2, "JOBID"), (3, "CPI")]
    unknown = tmp_path / "unknown.csv"
    unknown.write_text(lines[0] + ";COLOUR\n")
    _, errors = read_file(str(unknown))
    assert errors[0].column == "COLOUR"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty" in read_file(str(empty))[1][0].message
    assert "cannot open" in read_file(str(tmp_path / "nope.csv"))[1][0].message


# ------------------------------------------------------------------ aggregation rules

def test_two_node_aggregation_follows_eacct(tmp_path):
    names = C.ear_app_columns(num_gpus=0)
    n1 = values(job=5, node="n1", TIME_SEC=100, DC_NODE_POWER_W=300, DRAM_POWER_W=30, PCK_POWER_W=200,
                MEM_GBS=40, IO_MBS=5, CPU_GFLOPS=100, CPI=0.5, AVG_CPUFREQ_KHZ=2000000, PERC_MPI=10,
                CYCLES=1000, INSTRUCTIONS=2000)
    n2 = values(job=5, node="n2", TIME_SEC=110, DC_NODE_POWER_W=320, DRAM_POWER_W=34, PCK_POWER_W=220,
                MEM_GBS=60, IO_MBS=7, CPU_GFLOPS=140, CPI=0.7, AVG_CPUFREQ_KHZ=2400000, PERC_MPI=20,
                CYCLES=3000, INSTRUCTIONS=4000)
    other = values(job=6, node="n1", TIME_SEC=10, DC_NODE_POWER_W=100)
    rows, errors = read_files([write_layout(tmp_path / "two.csv", names, [n1, n2, other])])
    assert errors == []
    step, single = aggregate(rows)
    assert step.nodes == ["n1", "n2"]
    # summed over nodes
    assert step.dc_power_w == pytest.approx(620)
    assert step.dram_power_w == pytest.approx(64)
    assert step.pck_power_w == pytest.approx(420)
    assert step.mem_gbs == pytest.approx(100)
    assert step.io_mbs == pytest.approx(12)
    assert step.cpu_gflops == pytest.approx(240)
    assert (step.cycles, step.instructions) == (4000, 6000)
    # averaged over nodes
    assert step.time_s == pytest.approx(105)
    assert step.cpi == pytest.approx(0.6)
    assert step.avg_cpufreq_khz == pytest.approx(2_200_000)
    assert step.perc_mpi == pytest.approx(15)
    # energy = DC power x time per node, summed
    assert step.energy_j == pytest.approx(300 * 100 + 320 * 110)
    assert step.energy_kwh == pytest.approx((300 * 100 + 320 * 110) / 3.6e6)
    assert step.gflops_per_w == pytest.approx(240 / 620)
    assert step.carbon_g == pytest.approx(step.energy_kwh * 1.2 * 174)
    assert single.energy_j == pytest.approx(1000) and single.nodes == ["n1"]
