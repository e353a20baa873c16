"""Live workflow instances count as an organization's running work (its deletion then needs force)."""
from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from heroes_service.identity import lifecycle
from heroes_service.store import Base
from heroes_service.workflows import models as m


def _instance(org: str, state: str) -> m.WorkflowInstance:
    return m.WorkflowInstance(organization=org, username="bob", template_id="t1", template_name="heat",
                              template_version=1, cluster_id="c1", cluster_name="alpha", cluster_login="bob",
                              state=state)


def test_live_instances_of_the_organization_are_its_running_work():
    import heroes_service.api.workflows  # noqa: F401  (registers the checker, as the app does)

    assert m.running_work in lifecycle.WORK_CHECKERS
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([_instance("acme", m.RUNNING), _instance("acme", m.COMPLETED),
                         _instance("globex", m.QUEUED)])
        session.commit()
        work = m.running_work(session, SimpleNamespace(name="acme"))
        assert len(work) == 1 and "RUNNING on alpha" in work[0]
        assert m.running_work(session, SimpleNamespace(name="initech")) == []
