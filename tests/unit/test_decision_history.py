"""SWF parsing: header lines, -1 unknowns, malformed lines, ordering, gzip."""
from __future__ import annotations

import gzip
import math

import numpy as np

from heroes_dev.settings import shared_data_dir
from heroes_service.decision.history import JobRecord, parse_swf_lines, read_swf, trace_from_records

SAMPLE = """\
; Version: 2.2
; Computer: Test SP2
; UnixStartTime: 843480031
; TimeZone: 3600
; Note: a free-text comment line, not a key: value header
;
    2   600   10   50    4  -1 -1    4   100  -1 1  7  3 -1 -1 -1 -1 -1
    1     0  -1    -1    8  -1 -1   -1    -1  -1 0  5  2  9  1 -1 -1 -1

    3   300    0   20    2  -1 -1    2    60  -1 5  5  2 -1 -1 -1 -1 -1
    4   400    0   20    2
    5   notanumber 0 20 2 -1 -1 2 60 -1 1 5 2 -1 -1 -1 -1 -1
"""


def test_header_keys_and_comment_lines():
    trace = parse_swf_lines(SAMPLE.splitlines())
    assert trace.header["Version"] == "2.2"
    assert trace.header["Computer"] == "Test SP2"
    assert trace.unix_start() == 843480031
    assert trace.time_zone_offset() == 3600
    assert "Note" in trace.header  # kept as text, never parsed as a job


def test_jobs_sorted_by_submit_and_malformed_lines_counted():
    trace = parse_swf_lines(SAMPLE.splitlines())
    assert len(trace) == 3
    assert trace.skipped == 2  # a short line and a non-numeric one
    assert list(trace["job_id"]) == [1.0, 3.0, 2.0]
    assert list(trace["submit"]) == [0.0, 300.0, 600.0]


def test_minus_one_becomes_unknown():
    trace = parse_swf_lines(SAMPLE.splitlines())
    first = 0  # job 1: wait, run, requested procs and time unknown
    for name in ("wait", "run", "req_procs", "req_time", "req_mem", "avg_cpu"):
        assert math.isnan(trace[name][first]), name
    assert trace["status"][first] == 0  # status 0 (failed) is a code, not unknown
    assert trace["executable"][first] == 9
    assert math.isnan(trace.finish[first])  # no run time: never becomes history
    # job 2 finishes at submit + wait + run
    assert trace.finish[2] == 600 + 10 + 50


def test_unknown_wait_counts_as_zero_for_finish():
    trace = parse_swf_lines(["1 100 -1 30 1 -1 -1 1 60 -1 1 1 1 -1 -1 -1 -1 -1"])
    assert trace.finish[0] == 130


def test_gzip_file(tmp_path):
    path = tmp_path / "t.swf.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(SAMPLE)
    assert len(read_swf(path)) == 3


def test_records_round_trip():
    recs = [JobRecord(job_id=1, submit=5, wait=1, run=10, req_procs=2, req_time=60, user=3),
            JobRecord(job_id=2, submit=1, wait=None, run=None, req_procs=None, req_time=30, user=4)]
    trace = trace_from_records(recs)
    assert list(trace["submit"]) == [1.0, 5.0]
    back = list(trace.records())
    assert back[0].run is None and back[0].req_time == 30
    assert back[1].run == 10 and back[1].user == 3
    assert np.isnan(trace["queue"]).all()


def test_kth_trace_parses():
    trace = read_swf(str(shared_data_dir() / "KTH-SP2-1996.swf"))
    assert len(trace) == 28489 and trace.skipped == 0
    assert trace.header["MaxProcs"] == "100"
    assert np.isnan(trace["req_mem"]).all()  # -1 everywhere in KTH
    assert (np.diff(trace["submit"]) >= 0).all()
