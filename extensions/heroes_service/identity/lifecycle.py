"""Hooks other capabilities register to take part in an organization's life.

* ``register_work_checker(fn)``: ``fn(session, org) -> list[str]`` describes the organization's running work
  (workflows, jobs...); deleting an organization with any is refused (409) unless forced.
* ``register_created(fn)`` / ``register_deleted(fn)``: ``fn(session, org)`` runs inside the request's
  database transaction when an organization is created / deleted (e.g. the data capability creates its
  bucket). A hook that raises undoes the whole operation (Keycloak group, hub group, database rows), so a
  hook that changes an outside system must undo its own change when a later hook fails:
  ``register_created(fn, undo=undo_fn)``.

* ``register_user_removed(fn, restored=fn2)``: ``fn(username, organization)`` runs when a user is deleted or
  disabled (the clusters capability ends their pooled SSH sessions and drops their certificates at once);
  ``fn2(username, organization)`` when a user is enabled again or created under a name used before.

Hooks get no app: ``session.info["settings"]`` is the settings of the app that runs the request (use it
rather than the process-wide ``get_settings()``, which tests and a second app do not share).
"""
from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from ..store.models import Organization

Hook = Callable[[Session, Organization], None]
WORK_CHECKERS: list[Callable[[Session, Organization], list[str]]] = []
CREATED: list[tuple[Hook, Hook | None]] = []
DELETED: list[Hook] = []


def register_work_checker(fn: Callable[[Session, Organization], list[str]]) -> None:
    if fn not in WORK_CHECKERS:
        WORK_CHECKERS.append(fn)


def register_created(fn: Hook, undo: Hook | None = None) -> None:
    if all(fn is not f for f, _ in CREATED):
        CREATED.append((fn, undo))


def register_deleted(fn: Hook) -> None:
    if fn not in DELETED:
        DELETED.append(fn)


UserHook = Callable[[str, str], object]
USER_REMOVED: list[UserHook] = []
USER_RESTORED: list[UserHook] = []


def register_user_removed(fn: UserHook, restored: UserHook | None = None) -> None:
    if fn not in USER_REMOVED:
        USER_REMOVED.append(fn)
    if restored is not None and restored not in USER_RESTORED:
        USER_RESTORED.append(restored)


def user_removed(username: str, organization: str) -> None:
    """Tell every capability that ``username`` of ``organization`` was deleted or disabled."""
    for fn in USER_REMOVED:
        fn(username, organization)


def user_restored(username: str, organization: str) -> None:
    for fn in USER_RESTORED:
        fn(username, organization)


def running_work(session: Session, org: Organization) -> list[str]:
    found: list[str] = []
    for checker in WORK_CHECKERS:
        found.extend(checker(session, org))
    return found
