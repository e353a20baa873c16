"""Undo a multi-step change (Keycloak, database, hub) when a later step fails, and say what happened.

Each route collects ``(description, undo_fn)`` pairs as its steps succeed; on failure ``failure`` runs them
last-first and turns the original exception into the error the client sees: the original message with
"was undone", a 409 for a database uniqueness race, or a 502-class "could not be fully undone" naming the
leftovers an administrator must look at. Never a stack trace to the client.
"""
from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError

from ..errors import ApiError, Conflict, Incomplete

log = logging.getLogger("heroes_service.compensation")


def undo(label: str, steps: list) -> list[str]:
    """Run compensation steps (last first); return what could not be undone."""
    failed = []
    for description, fn in reversed(steps):
        try:
            fn()
        except Exception as exc:  # keep undoing the rest
            log.error("%s: could not undo %s: %s", label, description, exc)
            failed.append(description)
    return failed


def failure(label: str, exc: Exception, steps: list) -> ApiError:
    """The error to raise after a failed multi-step change: undo, then report."""
    failed = undo(label, steps)
    if failed:
        return Incomplete(f"{label} failed and could not be fully undone ({'; '.join(failed)}); an administrator "
                          "must check Keycloak and the hub")
    if isinstance(exc, ApiError):
        exc.detail = f"{label} failed and was undone: {exc.detail}"
        return exc
    if isinstance(exc, IntegrityError):
        return Conflict(f"{label} failed and was undone: the name is already taken")
    log.error("%s failed: %r", label, exc)
    return ApiError(f"{label} failed and was undone", status=500)
