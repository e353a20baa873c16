"""``commit_new`` writes a session's new rows as plain INSERTs, exactly as the ORM's commit would."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from heroes_service.store import make_engine, migrate, session_factory
from heroes_service.store.plain_insert import commit_new
from heroes_service.workflows import models as m

MODELS = (m.WorkflowInstance, m.WorkflowStep, m.WorkflowEvent)


@pytest.fixture()
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'heroes.db'}")
    migrate(engine)
    return session_factory(engine)


def _add_submission(session, instance_id: str, *, exit_code: int | None = None) -> m.WorkflowInstance:
    inst = m.WorkflowInstance(id=instance_id, organization="acme", username="bob", template_id="t1",
                              template_name="heat", template_version=1, cluster_id="c1", cluster_name="alpha",
                              cluster_login="bob", parameters={"n": 3}, state=m.SUBMITTING)
    if exit_code is not None:
        inst.exit_code = exit_code
    inst.steps = [m.WorkflowStep(instance_id=instance_id, name=name, position=i, depends_on=deps,
                                 state=m.STEP_NEW, job_name=f"heroes.{instance_id}.{name}", options=["--mem=1M"])
                  for i, (name, deps) in enumerate([("prep", []), ("run", ["prep"])])]
    session.add(inst)
    session.add_all([m.WorkflowEvent(instance_id=instance_id, to_state=m.NEW, detail="submitted"),
                     m.WorkflowEvent(instance_id=instance_id, from_state=m.NEW, to_state=m.SUBMITTING)])
    return inst


def _rows(session, model, instance_id: str, skip=("id", "at", "created_at", "updated_at")) -> list[dict]:
    table = model.__table__
    key = table.c.id if model is m.WorkflowInstance else table.c.instance_id
    order = table.c.id if model is not m.WorkflowStep else table.c.position
    return [{k: v for k, v in row._mapping.items() if k not in skip}
            for row in session.execute(select(table).where(key == instance_id).order_by(order))]


def test_the_rows_are_those_the_orm_writes_and_the_objects_keep_every_value(sessions):
    with sessions() as session:
        _add_submission(session, "a" * 32)
        session.commit()
    with sessions() as session:
        inst = _add_submission(session, "b" * 32)
        events = [obj for obj in session.new if isinstance(obj, m.WorkflowEvent)]
        commit_new(session, *MODELS)
        assert inst not in session and not session.new   # detached: nothing left for a later flush
    # the object holds what was written, Python-side defaults included (the caller answers from it)
    assert inst.created_at is not None and inst.reason == "" and inst.outputs == [] and inst.cancel_requested is False
    assert [s.log_tail for s in inst.steps] == ["", ""] and all(e.at is not None for e in events)
    with sessions() as session:
        for model in MODELS:
            orm, plain = _rows(session, model, "a" * 32), _rows(session, model, "b" * 32)
            assert len(plain) == len(orm) > 0
            for want, got in zip(orm, plain):
                assert {k: v for k, v in got.items() if k not in ("instance_id", "job_name")} == \
                    {k: v for k, v in want.items() if k not in ("instance_id", "job_name")}, model
        events = session.scalars(select(m.WorkflowEvent).where(m.WorkflowEvent.instance_id == "b" * 32)
                                 .order_by(m.WorkflowEvent.id)).all()
        assert [e.detail for e in events] == ["submitted", ""] and events[0].id < events[1].id
        assert session.get(m.WorkflowInstance, "b" * 32).created_at is not None


def test_anything_but_new_rows_of_the_given_models_is_an_ordinary_commit(sessions):
    with sessions() as session:
        _add_submission(session, "a" * 32)
        session.commit()
    with sessions() as session:   # a change to a loaded row rides along: the ORM's commit writes both
        session.get(m.WorkflowInstance, "a" * 32).reason = "changed"
        inst = _add_submission(session, "b" * 32)
        commit_new(session, *MODELS)
        assert inst in session   # persistent: the ORM wrote it
    with sessions() as session:   # rows of one model setting different columns: the ORM's commit too
        _add_submission(session, "c" * 32)
        _add_submission(session, "d" * 32, exit_code=0)
        commit_new(session, *MODELS)
    with sessions() as session:
        assert session.get(m.WorkflowInstance, "a" * 32).reason == "changed"
        assert {i.id[0] for i in session.scalars(select(m.WorkflowInstance))} == set("abcd")
        assert session.get(m.WorkflowInstance, "d" * 32).exit_code == 0
        assert len(session.scalars(select(m.WorkflowStep)).all()) == 8


def test_a_refused_row_writes_nothing(sessions):
    with sessions() as session:
        _add_submission(session, "a" * 32)
        session.commit()
    with sessions() as session:
        _add_submission(session, "a" * 32)   # the same id again: the instance's INSERT fails
        with pytest.raises(Exception, match="UNIQUE"):
            commit_new(session, *MODELS)
    with sessions() as session:
        assert len(session.scalars(select(m.WorkflowEvent)).all()) == 2
        assert len(session.scalars(select(m.WorkflowStep)).all()) == 2
