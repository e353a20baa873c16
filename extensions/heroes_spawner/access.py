"""How the hub reaches enrolled clusters: the service's clusters library, in-process.

Decision (documented in docs): the spawner does NOT call the service's REST API. It imports
``heroes_service.clusters`` and reads the service's database (cluster records) and secrets directory
(the gateway user CA that signs per-user certificates) directly. Why: the hub is trusted like the service
(it already holds every user's API token and the OAuth secret), the REST API has no "run squeue for
user X" operation on purpose (users must not get arbitrary commands), and a 30 s poll per server
through HTTP + Keycloak would add a second failure point to every ``squeue``. The trust boundary stays
where it is: single-user servers and notebooks never see these secrets, only the hub process does.

A hub user's organization is the hub group (mirrored from Keycloak) that owns the cluster; their cluster
login is the library's rule (``cluster_login`` attribute when known, else the username).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

_lock = threading.Lock()
_sessions = None


def _session_factory():
    """One engine per hub process on the service's database (the service owns its schema)."""
    global _sessions
    with _lock:
        if _sessions is None:
            from heroes_service.settings import ServiceSettings
            from heroes_service.store import make_engine, session_factory

            _sessions = session_factory(make_engine(ServiceSettings().resolved_database_url()))
        return _sessions


@dataclass(frozen=True)
class ClusterView:
    """What the spawner needs of a cluster record (detached from the DB session)."""

    record: Any
    name: str
    organization: str
    partitions: list
    default_partition: str


def clusters_for(groups: list[str]) -> list[ClusterView]:
    """Every cluster enrolled by one of ``groups`` (the user's organizations), by name."""
    from heroes_service.clusters.models import clusters_of

    views = []
    with _session_factory()() as session:
        for org in sorted(set(groups)):
            for cluster in clusters_of(session, org):
                session.expunge(cluster)
                views.append(ClusterView(cluster, cluster.name, cluster.organization, list(cluster.partitions or []),
                                         cluster.default_partition or ""))
    return views


def cluster_for(groups: list[str], name: str) -> ClusterView | None:
    """The cluster ``name`` of one of the user's organizations (None: not enrolled or not theirs)."""
    return next((c for c in clusters_for(groups) if c.name == name), None)


def connector(view: ClusterView, username: str, cluster_login: str | None = None):
    """A connector acting as the user on that cluster (per-user certificate or the service account)."""
    from heroes_service.clusters.identity import connector_for

    principal = SimpleNamespace(username=username, organization=view.organization, cluster_login=cluster_login)
    return connector_for(view.record, principal)
