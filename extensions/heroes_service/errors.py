"""Errors the API answers with: one JSON shape ``{"detail": "...", "rule": ...}``, never a stack trace.

Domain code raises ``ApiError`` subclasses or its own domain errors; ``install`` maps both, ONCE for every
route (the way jupyterhub's base handler maps every ``HTTPError``), plus request-validation failures (422)
and anything unexpected (500 with a generic message, the trace goes to the service log only). Routes do not
translate domain errors themselves, so the same failure gives the same status everywhere:

==========================================  ======  ==========================================================
domain error                                status  why
==========================================  ======  ==========================================================
``clusters.errors.NoClusterAccess``         403     the caller may not use that cluster (rule cluster-access)
``clusters.errors.ProbeFailed``             422     an address given for enrollment presents no SSH host key
``clusters.errors.InvalidArgument``         422     a value that cannot cross SSH
``clusters.errors.ClusterError`` (others)   503     the cluster (SSH, Slurm) is unavailable; try again
``workflows.templates.TemplateError``       422     the template or its parameters are invalid (with the rule)
``clusterjobs.JobSpecError``                422     a cluster job's parameters do not fit
``sqlalchemy.exc.IntegrityError``           409     the change conflicts with what is stored (a duplicate)
==========================================  ======  ==========================================================
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("heroes_service")
#: regular expression -> the rule in words (filled by modules that define naming rules, e.g. api/rules.py)
RULES: dict[str, str] = {}


class ApiError(Exception):
    """An error with the status and message the client gets."""

    status = 400

    def __init__(self, detail: str, *, rule: str | None = None, status: int | None = None,
                 headers: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.rule = rule
        self.headers = headers
        if status is not None:
            self.status = status

    def body(self) -> dict:
        out = {"detail": self.detail}
        if self.rule:
            out["rule"] = self.rule
        return out


class Unauthorized(ApiError):
    status = 401

    def __init__(self, detail: str):
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="heroes", token'})


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Invalid(ApiError):
    status = 422


class Unavailable(ApiError):
    """A service the API depends on (Keycloak, the hub, the database) does not answer."""

    status = 503


class Incomplete(ApiError):
    """A multi-system change failed part way and could not be undone completely (logged with details)."""

    status = 500


def domain_error(exc: Exception) -> ApiError | None:
    """The ``ApiError`` a domain error stands for (None: not a known domain error). One table, every route."""
    from sqlalchemy.exc import IntegrityError

    from .clusterjobs.kinds import JobSpecError
    from .clusters.errors import ClusterError, InvalidArgument, NoClusterAccess, ProbeFailed
    from .workflows.templates import TemplateError

    if isinstance(exc, NoClusterAccess):
        return Forbidden(str(exc), rule="cluster-access")
    if isinstance(exc, ProbeFailed):
        return Invalid(str(exc), rule="the login node must answer SSH at an allowed address")
    if isinstance(exc, InvalidArgument):
        return Invalid(str(exc), rule="ssh-argument")
    if isinstance(exc, ClusterError):
        return Unavailable(f"cluster unavailable: {exc}", rule="cluster-available")
    if isinstance(exc, TemplateError):
        return Invalid(str(exc)[:2000], rule="; ".join(f"{loc}: {msg}" for loc, msg in exc.errors[:10])[:2000])
    if isinstance(exc, JobSpecError):
        return Invalid(str(exc), rule="cluster-job-spec")
    if isinstance(exc, IntegrityError):
        return Conflict("the change conflicts with data already stored (a duplicate name or a removed reference)",
                        rule="integrity")
    return None


def domain_error_types() -> tuple[type[Exception], ...]:
    from sqlalchemy.exc import IntegrityError

    from .clusterjobs.kinds import JobSpecError
    from .clusters.errors import ClusterError
    from .workflows.templates import TemplateError

    return (ClusterError, TemplateError, JobSpecError, IntegrityError)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the JSON shape above."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def _domain(request: Request, exc: Exception):
        mapped = domain_error(exc)
        if mapped is None:
            return await _unexpected(request, exc)
        if mapped.status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(mapped.body(), status_code=mapped.status, headers=mapped.headers)

    for error_type in domain_error_types():
        app.add_exception_handler(error_type, _domain)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        errors = []
        for err in exc.errors():
            errors.append({"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")),
                           "type": str(err.get("type", ""))})
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"][1:] or first["loc"])
        body = {"detail": f"invalid request: {where}: {first['msg']}", "errors": errors}
        raw = exc.errors()[0] if exc.errors() else {}
        pattern = (raw.get("ctx") or {}).get("pattern") if isinstance(raw, dict) else None
        if pattern in RULES:  # say the rule in words, not only as a regular expression
            body["rule"] = f"{where}: {RULES[pattern]}"
            body["detail"] = f"invalid {where}: {RULES[pattern]}"
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the service log has the details"}, status_code=500)
