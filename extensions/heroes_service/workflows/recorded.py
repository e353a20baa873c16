"""A submission's last job id recorded from what the driver holds in memory, without reading the rows back.

The submit route waits for the job ids (issue 15's benchmark: API -> job id against sbatch over an open
connection, on a 2-core machine where every statement the service runs competes with Slurm). For the common
case - the step whose sbatch just answered is the instance's last one without a job id - the driver knows
the whole instance already: it recorded it at submission, in one commit, and owns it since. So instead of
loading the instance and its steps, re-reading its state and its events, and flushing the ORM's changes, this
writes the job id and QUEUED with two guarded UPDATEs and one INSERT, and the answer is built from the
objects of the submission's commit.

The guards keep it honest: the step must still be SUBMITTING without a job id, and the instance SUBMITTING with
no cancel requested. When either is not so (a cancel came in while sbatch worked, anything unexpected) nothing
is written here and the driver's ordinary transaction records the job id and does the rest.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from ..store.plain_insert import row_of
from . import models as m

#: a step's state once sbatch gave its job id (the reconciler moves it on from Slurm's own states)
SUBMITTED = "PENDING"
#: the event of an instance whose every step has a job id
EVERY_STEP_SUBMITTED = "every step submitted"


@dataclass
class Recorded:
    """An instance as the submission committed it: its ORM objects, detached (the session that wrote them is
    closed, and ``expire_on_commit=False`` keeps their values), with its events in the order written."""

    instance: m.WorkflowInstance
    events: list[m.WorkflowEvent]

    @classmethod
    def pending_in(cls, session: Session, instance: m.WorkflowInstance) -> Recorded:
        """Call just before the submission's commit: its events are the session's pending ones."""
        events = [obj for obj in session.new if isinstance(obj, m.WorkflowEvent) and obj.instance_id == instance.id]
        return cls(instance, events)

    def last_unsubmitted(self, step_name: str) -> bool:
        """``step_name`` is SUBMITTING, every other step has its job id, and the instance is SUBMITTING."""
        steps = {step.name: step for step in self.instance.steps}
        mine = steps.pop(step_name, None)
        return self.instance.state == m.SUBMITTING and mine is not None and mine.state == m.STEP_SUBMITTING \
            and not mine.job_id and all(step.job_id for step in steps.values())


def queue_recorded(sessions: sessionmaker[Session], recorded: Recorded, step_name: str, job_id: str,
                   detail: str) -> bool:
    """Record ``job_id`` of the instance's last unsubmitted step and move the instance to QUEUED, in one
    commit; True when done (``recorded`` then shows it), False when nothing was written (the driver's ordinary
    transaction must record it)."""
    if not recorded.last_unsubmitted(step_name):
        return False
    inst = recorded.instance
    now = m.utcnow()
    events = [m.WorkflowEvent(instance_id=inst.id, step=step_name, at=now, from_state=m.STEP_SUBMITTING,
                              to_state=SUBMITTED, detail=detail[:4000]),
              m.WorkflowEvent(instance_id=inst.id, step="", at=now, from_state=m.SUBMITTING, to_state=m.QUEUED,
                              detail=EVERY_STEP_SUBMITTED)]
    steps, instances = m.WorkflowStep.__table__, m.WorkflowInstance.__table__
    with sessions() as session:
        took = session.execute(
            steps.update().where(steps.c.instance_id == inst.id, steps.c.name == step_name,
                                 steps.c.state == m.STEP_SUBMITTING, steps.c.job_id.is_(None))
            .values(job_id=job_id, state=SUBMITTED)).rowcount
        queued = session.execute(
            instances.update().where(instances.c.id == inst.id, instances.c.state == m.SUBMITTING,
                                     instances.c.cancel_requested.is_(False))
            .values(state=m.QUEUED, updated_at=now)).rowcount
        if (took, queued) != (1, 1):
            session.rollback()
            return False
        session.execute(insert(m.WorkflowEvent.__table__),
                        [row_of(event) for event in events])
        session.commit()
    step = next(s for s in inst.steps if s.name == step_name)
    step.job_id, step.state = job_id, SUBMITTED
    inst.state, inst.updated_at = m.QUEUED, now
    recorded.events.extend(events)
    return True
