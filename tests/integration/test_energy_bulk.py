"""Bulk ingestion's pipelined path (large uploads: chunk k stored while chunk k+1 is parsed) on a real SQLite
file and a throw-away database of the stack's PostgreSQL: it stores exactly what the plain path stores, a bad
value deep in the file refuses the whole request with file/line/column and leaves nothing behind, and rows seen
again (in the same request or a later one) are skipped.

The chunk sizes are lowered so a few thousand rows span several chunks; the domain function is called
directly (the HTTP route in front of it is covered by test_energy_ingest.py).
"""
from __future__ import annotations

import pytest
from sqlalchemy import text

from heroes_energy import synthetic
from heroes_service.auth import Principal
from heroes_service.energy import bulk
from heroes_service.energy import ingest as energy
from heroes_service.store import make_engine, migrate, session_factory
from service_support import database_url  # noqa: F401

pytestmark = pytest.mark.integration
BOB = Principal(username="bob", organization="acme", roles=frozenset({"user"}))
TOTALS = ("select count(*), sum(energy_j), sum(job_id), count(distinct node), sum(cpi), sum(time_s), "
          "sum(length(job_name)), min(source_file), max(username) from energy_records")


@pytest.fixture(scope="module")
def sessions(database_url):  # noqa: F811
    engine = make_engine(database_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def pipelined(monkeypatch):
    """Every upload takes the pipeline, in chunks of about 64 KiB (~140 rows)."""
    monkeypatch.setattr(bulk, "PIPELINE_MIN_BYTES", 0)
    monkeypatch.setattr(bulk, "PIPELINE_CHUNK_BYTES", 64 * 1024)


def eacct(rows: int, seed: int) -> bytes:
    return ("\n".join(synthetic.eacct_lines(rows, nodes_per_step=2, seed=seed)) + "\n").encode()


def ingest(sessions, content: bytes, cluster: str, name: str = "big.csv") -> dict:
    with sessions() as session:
        result = energy.ingest(session, BOB, [energy.Upload(name, content)], cluster=cluster)
        session.commit()
        return result


def totals(sessions, cluster: str) -> tuple:
    with sessions() as session:
        return tuple(session.execute(text(TOTALS.replace("energy_records", "energy_records where cluster = :c")),
                                     {"c": cluster}).one())


def test_the_pipeline_stores_what_the_plain_path_stores(sessions, pipelined, monkeypatch):
    content = eacct(3000, seed=7)
    result = ingest(sessions, content, "piped")
    assert (result["rows"], result["stored"], result["steps"]) == (3000, 3000, 1500)
    monkeypatch.setattr(bulk, "PIPELINE_MIN_BYTES", 10**12)  # the plain path, into another cluster's rows
    assert ingest(sessions, content, "plain")["stored"] == 3000
    piped, plain = totals(sessions, "piped"), totals(sessions, "plain")
    assert piped[0] == 3000 and piped[:7] == pytest.approx(plain[:7]) and piped[7:] == plain[7:] == ("big.csv", "bob")


def test_a_bad_value_deep_in_the_file_refuses_everything(sessions, pipelined):
    lines = eacct(3000, seed=8).decode().split("\n")
    fields = lines[2900].split(";")
    names = lines[0].split(";")
    fields[names.index("CPI")] = "1.5x"
    lines[2900] = ";".join(fields)
    with pytest.raises(energy.IngestRefused) as refused:
        ingest(sessions, "\n".join(lines).encode(), "refused")
    assert refused.value.errors[0] == {"file": "big.csv", "line": 2901, "column": "CPI",
                                       "message": "not a number: '1.5x'"}
    assert totals(sessions, "refused")[0] == 0  # the chunks stored before the bad one were rolled back


def test_rows_seen_again_are_skipped(sessions, pipelined):
    content = eacct(2000, seed=9)
    body = content[content.index(b"\n") + 1:]
    first = ingest(sessions, content + body, "again")  # every row twice, in different chunks
    assert (first["stored"], first["duplicates"]) == (2000, 2000)
    second = ingest(sessions, content, "again")
    assert (second["stored"], second["duplicates"]) == (0, 2000)
    assert totals(sessions, "again")[0] == 2000
