"""Staging time per candidate: measured S3 -> cluster throughput, inputs already on a cluster, outputs expected
from the template's history, and decide's choice flipping with them (SQLite store; fakes for the rest)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from heroes_service.decision import placement
from heroes_service.decision.staging_time import (MIB, InputObject, StagingTimeSettings, expected_output_bytes,
                                                  staging_estimate)
from heroes_service.store import Base
from heroes_service.workflows import models as wf
from heroes_service.workflows.staging import StagedInput, record_transfer

SETTINGS = StagingTimeSettings(staging_default_mib_s=100.0, staging_min_measured_bytes=MIB, staging_history=20)
BIG = InputObject("acme-data", "genome.fa", 2000 * int(MIB), "etag-1")


@pytest.fixture()
def session():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        yield s


def stage(session, cluster, size, seconds, key="genome.fa", etag="etag-1", org="acme", copied_from=""):
    record_transfer(session, organization=org, cluster_id=cluster, instance_id="i" * 32,
                    ref={"bucket": "acme-data", "key": key}, staged=StagedInput(size, seconds, etag, copied_from),
                    remote_path=f"heroes/{cluster}/inputs/{key}")
    session.commit()


def test_default_throughput_until_measured(session):
    est = staging_estimate(session, "acme", "c1", [BIG], 0.0, SETTINGS)
    assert not est.measured and est.throughput_mib_s == 100.0
    assert est.seconds == pytest.approx(20.0)


def test_measured_throughput_from_large_stage_ins_only(session):
    stage(session, "c1", 100 * int(MIB), 10.0, key="a", etag="x")      # 10 MiB/s
    stage(session, "c1", 1000, 5.0, key="tiny", etag="y")               # too small to measure the link
    stage(session, "c1", 100 * int(MIB), 0.5, key="b", etag="z", copied_from="heroes/old/b")   # a copy on the cluster
    est = staging_estimate(session, "acme", "c1", [BIG], 0.0, SETTINGS)
    assert est.measured and est.throughput_mib_s == pytest.approx(10.0)
    assert est.seconds == pytest.approx(200.0)


def test_another_organizations_stagings_are_not_used(session):
    stage(session, "c1", 100 * int(MIB), 100.0, org="globex")   # 1 MiB/s, but globex's
    stage(session, "c1", BIG.size, 1.0, org="globex")           # and globex's copy of the same content
    est = staging_estimate(session, "acme", "c1", [BIG], 0.0, SETTINGS)
    assert not est.measured and est.in_bytes == BIG.size and est.already_there == []


def test_same_content_already_on_the_cluster_is_not_moved(session):
    stage(session, "c1", BIG.size, 200.0)   # 10 MiB/s, this very content
    est = staging_estimate(session, "acme", "c1", [BIG], 0.0, SETTINGS)
    assert est.in_bytes == 0 and est.already_there == ["genome.fa"] and est.seconds == 0.0
    changed = InputObject(BIG.bucket, BIG.key, BIG.size, "etag-2")   # same key, new content
    assert staging_estimate(session, "acme", "c1", [changed], 0.0, SETTINGS).in_bytes == BIG.size
    assert staging_estimate(session, "acme", "c2", [BIG], 0.0, SETTINGS).in_bytes == BIG.size   # other cluster


def test_expected_outputs_from_completed_instances(session):
    for outputs, state in (([{"key": "a", "size": 100}, {"key": "b", "size": 300}], wf.COMPLETED),
                           ([{"key": "c", "size": 200}], wf.COMPLETED),
                           ([{"key": "d", "size": 10 ** 9}], wf.FAILED)):
        session.add(wf.WorkflowInstance(organization="acme", username="bob", template_id="t" * 32,
                                        template_name="align", template_version=1, cluster_id="c1",
                                        cluster_name="alpha", cluster_login="bob", outputs=outputs, state=state,
                                        finished_at=datetime.now(timezone.utc)))
    session.commit()
    assert expected_output_bytes(session, "acme", "align") == pytest.approx(300.0)
    assert expected_output_bytes(session, "globex", "align") == 0.0


def test_staging_time_joins_the_finish_and_flips_the_performance_choice():
    """fast: wait 0 + run 100 s; slow: wait 0 + run 300 s. With 2000 MiB to move, fast at 5 MiB/s costs
    400 s and slow at 100 MiB/s 20 s: slow finishes first (320 s vs 500 s)."""
    from heroes_service.decision.staging_time import StagingEstimate

    fast = {"cluster": "fast", "wait_s": 0.0, "run_s": 100.0, "finish_s": 100.0}
    slow = {"cluster": "slow", "wait_s": 0.0, "run_s": 300.0, "finish_s": 300.0}
    placement._add_staging(fast, StagingEstimate(400.0, BIG.size, 0.0, 5.0, True))
    placement._add_staging(slow, StagingEstimate(20.0, BIG.size, 0.0, 100.0, False))
    assert fast["finish_s"] == 500.0 and slow["finish_s"] == 320.0
    assert fast["staging_s"] == 400.0 and fast["staging_throughput_measured"] is True
    assert "staging 400 s" in placement._parts(fast)
    there = {"cluster": "fast", "wait_s": 0.0, "run_s": 100.0, "finish_s": 100.0}
    placement._add_staging(there, StagingEstimate(0.0, 0, 0.0, 5.0, True, ["genome.fa"]))
    assert there["finish_s"] == 100.0 and placement._parts(there) == "wait 0 s + run 100 s"
