"""Cancel and fail: the two ways an instance ends before its steps do.

Cancel marks the instance, ``scancel``s every submitted step as its owner (the reconciler records the final
states), and the driver stops staging at the next file. A failed instance cancels its live jobs too.
"""
from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from ..clusterjobs.submit import owner_connector, owner_principal
from ..clusters.connector import ClusterConnector
from ..clusters.errors import ClusterError
from ..clusters.models import cluster_by_id
from ..clusters.slurm import SlurmClient
from . import models as m

log = logging.getLogger("heroes_service.workflows")


class CancelMixin:
    """Cancel and fail for ``WorkflowEngine``."""

    def cancel(self, instance_id: str, conn: ClusterConnector | None = None) -> dict:
        """Request cancellation: scancel every submitted step (as its owner); the reconciler records the
        final states. Steps never submitted are cancelled at once."""
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            if inst is None or inst.state in m.INSTANCE_FINAL:
                return {"cancelled": []}
            if not inst.cancel_requested:
                inst.cancel_requested = True
                session.add(m.WorkflowEvent(instance_id=inst.id, from_state=inst.state, to_state=inst.state,
                                            detail="cancel requested"))
            job_ids = [s.job_id for s in inst.steps if s.job_id and s.state not in m.STEP_FINAL]
            cluster = cluster_by_id(session, None, inst.cluster_id)
            login, owner = inst.cluster_login, owner_principal(inst)
            session.commit()
        if job_ids and cluster is not None:
            conn = conn or owner_connector(cluster, login, owner)
            SlurmClient(conn).cancel(job_ids)
        if not self.owned(instance_id):
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                if inst.state in m.DRIVER_STATES:
                    self._finish_cancel(session, inst)
                    session.commit()
        return {"cancelled": job_ids}

    def _finish_cancel(self, session: Session, inst: m.WorkflowInstance) -> None:
        """Steps without a job become CANCELLED; the instance too once nothing runs any more."""
        for step in inst.steps:
            if not step.job_id and step.state not in m.STEP_FINAL:
                m.set_step_state(session, step, "CANCELLED", "cancelled before submission")
        if all(s.state in m.STEP_FINAL for s in inst.steps):
            m.set_instance_state(session, inst, m.CANCELLED, "cancelled by the user")
        elif inst.state in m.DRIVER_STATES:
            m.set_instance_state(session, inst, m.QUEUED, "cancelling submitted steps")

    def _fail_instance(self, session: Session, inst: m.WorkflowInstance, reason: str, *,
                       cancel_jobs: bool = False) -> None:
        live = [s for s in inst.steps if s.job_id and s.state not in m.STEP_FINAL]
        if cancel_jobs and live:
            try:
                cluster = cluster_by_id(session, None, inst.cluster_id)
                if cluster is not None:
                    conn = owner_connector(cluster, inst.cluster_login, owner_principal(inst))
                    SlurmClient(conn).cancel([s.job_id for s in live])
            except ClusterError as exc:
                log.warning("workflow %s: could not cancel jobs of the failed instance: %s", inst.id, exc)
        for step in inst.steps:
            if step.state not in m.STEP_FINAL:
                m.set_step_state(session, step, m.SKIPPED if not step.started_at else "CANCELLED",
                                 "not run: the instance failed")
        inst.reason = reason[:4000]
        m.set_instance_state(session, inst, m.FAILED, reason)
