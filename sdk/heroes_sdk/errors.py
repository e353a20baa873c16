"""The exceptions of the SDK: one class per kind of failure a script may want to handle differently.

Every error of the service carries the service's own message (its ``detail``) and the HTTP status, so a
notebook shows what the gateway said ("parameter 'points': must be >= 8") rather than a stack of transport
frames. The command line maps each class to an exit code (see :mod:`heroes_sdk.cli`).
"""
from __future__ import annotations

__all__ = [
    "HeroesError", "AuthenticationError", "PermissionDenied", "NotFound", "Conflict", "InvalidRequest",
    "QuotaExceeded", "ServiceUnavailable", "SubmitUncertain", "InstanceFailed", "WaitTimeout",
]


class HeroesError(Exception):
    """Any failure of a call to the HEROES service.

    ``status`` is the HTTP status (0 when no answer came), ``detail`` the service's message and ``rule``
    the rule the service says was broken (empty when it names none).
    """

    def __init__(self, detail: str, status: int = 0, rule: str = ""):
        super().__init__(f"{detail} (HTTP {status})" if status else detail)
        self.detail = detail
        self.status = status
        self.rule = rule


class AuthenticationError(HeroesError):
    """401: no credential, a wrong or expired token, or a refused login. Log in again."""


class PermissionDenied(HeroesError):
    """403: you are known but this is not yours to do (a role or a grant is missing)."""


class NotFound(HeroesError):
    """404: no such thing among what you may see (other organizations' things are never found)."""


class Conflict(HeroesError):
    """409: the request clashes with the current state (e.g. cancelling an instance that already ended)."""


class InvalidRequest(HeroesError):
    """400 or 422: a value was refused; ``detail`` names the field and the rule."""


class QuotaExceeded(HeroesError):
    """413: the upload does not fit your organization's storage quota."""


class ServiceUnavailable(HeroesError):
    """503 or no answer at all: the service, a cluster or S3 cannot be reached right now. Try again later."""


class SubmitUncertain(HeroesError):
    """The answer to a submit was lost after the request was sent, and no instance with its label appeared.

    The SDK never sends a submit twice (a second send could start the work twice): look for an instance
    named ``label`` with :meth:`heroes_sdk.Client.instances` before submitting again.
    """

    def __init__(self, detail: str, label: str):
        super().__init__(detail)
        self.label = label


class InstanceFailed(HeroesError):
    """``wait(raise_on_failure=True)``: the instance ended FAILED or CANCELLED (``instance`` holds it)."""

    def __init__(self, instance):
        super().__init__(f"instance {instance.id} ended {instance.state}"
                         + (f": {instance.reason}" if instance.reason else ""))
        self.instance = instance


class WaitTimeout(HeroesError):
    """``wait(timeout=...)`` ran out before the instance ended (``instance`` holds its last state)."""

    def __init__(self, instance, timeout: float):
        super().__init__(f"instance {instance.id} is still {instance.state} after {timeout:g} s")
        self.instance = instance


_BY_STATUS = {400: InvalidRequest, 401: AuthenticationError, 403: PermissionDenied, 404: NotFound,
              409: Conflict, 413: QuotaExceeded, 422: InvalidRequest, 502: ServiceUnavailable,
              503: ServiceUnavailable, 504: ServiceUnavailable}


def error_for(status: int, detail: str, rule: str = "") -> HeroesError:
    """The exception class that matches an HTTP status (HeroesError for the others)."""
    return _BY_STATUS.get(status, HeroesError)(detail, status=status, rule=rule)
