"""What still runs on a cluster, asked before the cluster is removed.

Clusters sit below the capabilities that use them (workflows, spawner, decision), so they cannot look at
those capabilities' tables themselves; each registers ``fn(session, cluster) -> list[str]`` naming its live
work on the cluster. Removing a cluster with any is refused: its jobs would keep running with nobody left to
track them, stage their outputs back or cancel them.
"""
from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from .models import Cluster

Checker = Callable[[Session, Cluster], list[str]]
CHECKERS: list[Checker] = []


def register(fn: Checker) -> None:
    if fn not in CHECKERS:
        CHECKERS.append(fn)


def live_work(session: Session, cluster: Cluster) -> list[str]:
    found: list[str] = []
    for checker in CHECKERS:
        found.extend(checker(session, cluster))
    return found
