"""The short way of recording a submission's last job id (``workflows/recorded.py``): it writes what the
driver's ordinary transaction writes, and nothing at all when the instance is not as the submission left it."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from heroes_service.store import make_engine, migrate, session_factory
from heroes_service.store.plain_insert import commit_new
from heroes_service.workflows import models as m
from heroes_service.workflows.recorded import EVERY_STEP_SUBMITTED, SUBMITTED, Recorded, queue_recorded

ID = "f" * 32


@pytest.fixture()
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'heroes.db'}")
    migrate(engine)
    return session_factory(engine)


def _submitted(sessions, steps=("run",)) -> Recorded:
    """An instance as a submission commits it: SUBMITTING, its first step's intent recorded."""
    with sessions() as session:
        inst = m.WorkflowInstance(id=ID, organization="acme", username="bob", template_id="t1",
                                  template_name="heat", template_version=1, cluster_id="c1", cluster_name="alpha",
                                  cluster_login="bob", parameters={}, state=m.NEW)
        inst.steps = [m.WorkflowStep(instance_id=ID, name=name, position=i, state=m.STEP_NEW,
                                     job_name=f"heroes.{ID}.{name}") for i, name in enumerate(steps)]
        session.add(inst)
        session.add(m.WorkflowEvent(instance_id=ID, to_state=m.NEW, detail="submitted by bob to alpha"))
        m.set_instance_state(session, inst, m.SUBMITTING, "submitting steps")
        m.set_step_state(session, inst.steps[0], m.STEP_SUBMITTING, "intent recorded; sbatch next")
        recorded = Recorded.pending_in(session, inst)
        commit_new(session, m.WorkflowInstance, m.WorkflowStep, m.WorkflowEvent)
    return recorded


def _events(sessions) -> list[tuple[str, str, str, str]]:
    with sessions() as session:
        return [(e.step, e.from_state, e.to_state, e.detail) for e in session.scalars(
            select(m.WorkflowEvent).where(m.WorkflowEvent.instance_id == ID).order_by(m.WorkflowEvent.id))]


def test_the_job_id_and_queued_are_committed_and_the_picture_shows_exactly_the_rows(sessions):
    recorded = _submitted(sessions)
    assert [e.to_state for e in recorded.events] == [m.NEW, m.SUBMITTING, m.STEP_SUBMITTING]
    assert queue_recorded(sessions, recorded, "run", "4242", "sbatch -> job 4242")
    with sessions() as session:
        inst = session.get(m.WorkflowInstance, ID)
        assert (inst.state, inst.steps[0].job_id, inst.steps[0].state) == (m.QUEUED, "4242", SUBMITTED)
        assert inst.updated_at >= inst.created_at
    rows = _events(sessions)
    assert rows[-2:] == [("run", m.STEP_SUBMITTING, SUBMITTED, "sbatch -> job 4242"),
                         ("", m.SUBMITTING, m.QUEUED, EVERY_STEP_SUBMITTED)]
    # what the submit route answers from memory is what the database holds
    assert [(e.step, e.from_state, e.to_state, e.detail) for e in recorded.events] == rows
    inst = recorded.instance
    assert (inst.state, inst.steps[0].job_id, inst.steps[0].state) == (m.QUEUED, "4242", SUBMITTED)


def test_a_cancel_requested_while_sbatch_worked_leaves_it_to_the_ordinary_transaction(sessions):
    recorded = _submitted(sessions)
    before = _events(sessions)
    with sessions() as session:   # the cancel route, while the driver waited for the job id
        session.get(m.WorkflowInstance, ID).cancel_requested = True
        session.commit()
    assert not queue_recorded(sessions, recorded, "run", "4242", "sbatch -> job 4242")
    with sessions() as session:   # nothing written: the driver records the job id and the cancel itself
        inst = session.get(m.WorkflowInstance, ID)
        assert (inst.state, inst.steps[0].job_id, inst.steps[0].state) == (m.SUBMITTING, None, m.STEP_SUBMITTING)
    assert _events(sessions) == before
    assert recorded.instance.state == m.SUBMITTING and recorded.instance.steps[0].job_id is None


def test_a_step_that_is_not_the_last_one_is_not_taken(sessions):
    recorded = _submitted(sessions, steps=("prep", "run"))
    assert not queue_recorded(sessions, recorded, "prep", "7", "sbatch -> job 7")   # "run" still to submit
    assert not queue_recorded(sessions, recorded, "run", "7", "sbatch -> job 7")    # not the step sbatch'd
    assert not queue_recorded(sessions, recorded, "nope", "7", "sbatch -> job 7")
    with sessions() as session:
        assert [s.job_id for s in session.get(m.WorkflowInstance, ID).steps] == [None, None]


def test_a_step_whose_row_moved_on_is_not_overwritten(sessions):
    recorded = _submitted(sessions)
    with sessions() as session:   # e.g. found by name and adopted meanwhile: the row has its job id already
        session.get(m.WorkflowInstance, ID).steps[0].job_id = "5"
        session.commit()
    before = _events(sessions)
    assert not queue_recorded(sessions, recorded, "run", "7", "sbatch -> job 7")
    with sessions() as session:
        inst = session.get(m.WorkflowInstance, ID)
        assert (inst.steps[0].job_id, inst.state) == ("5", m.SUBMITTING)
    assert _events(sessions) == before
