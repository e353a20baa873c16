"""THE access table: every (method, path template) of the API and the access it needs.

Levels (``heroes_service.auth.LEVELS``):

* ``public``: anyone, no credential;
* ``user``: any authenticated HEROES user (realm role ``user``, ``org-admin`` or ``platform-admin``);
* ``org-admin``: realm role ``org-admin`` and membership of an organization; acts within that organization;
* ``platform-admin``: realm role ``platform-admin``;
* ``hub-service``: no person: only the hub's own token-only service (``server_keys_service``), which calls
  on behalf of a user (a single-user server's S3 keys).

Paths are relative to the API prefix (``/services/heroes/api/v1``) and written exactly as the routers
declare them. ``AccessMiddleware`` enforces the table before a request reaches any route (so an anonymous
caller always gets 401, whatever the body), and ``verify_table`` runs when the app is built: a route
without a row stops the service from starting, so a new route cannot be forgotten.

Engineers of the reserved resources add their rows below, in their section.
"""
from __future__ import annotations

import logging

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.routing import Route, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import LEVELS, check
from ..errors import ApiError

log = logging.getLogger("heroes_service.access")
PUBLIC, USER, ORG_ADMIN, PLATFORM_ADMIN, HUB_SERVICE = LEVELS

#: (method, path template relative to the API prefix) -> access level
ACCESS: dict[tuple[str, str], str] = {
    # service
    ("GET", "/health"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    # auth (seed: /organization/auth)
    ("POST", "/organization/auth/login"): PUBLIC,
    ("GET", "/organization/auth/refresh_token"): PUBLIC,
    ("POST", "/organization/auth/logout"): USER,
    ("GET", "/organization/auth/me"): USER,
    # organization admin: users
    ("GET", "/organization/admin/users/"): ORG_ADMIN,
    ("POST", "/organization/admin/users/"): ORG_ADMIN,
    ("GET", "/organization/admin/users/{user_id}"): ORG_ADMIN,
    ("PATCH", "/organization/admin/users/{user_id}"): ORG_ADMIN,
    ("DELETE", "/organization/admin/users/{user_id}"): ORG_ADMIN,
    # organization admin: groups
    ("GET", "/organization/admin/groups/"): ORG_ADMIN,
    ("POST", "/organization/admin/groups/"): ORG_ADMIN,
    ("GET", "/organization/admin/groups/{group_id}"): ORG_ADMIN,
    ("PATCH", "/organization/admin/groups/{group_id}"): ORG_ADMIN,
    ("DELETE", "/organization/admin/groups/{group_id}"): ORG_ADMIN,
    # organization admin: roles
    ("GET", "/organization/admin/roles/"): ORG_ADMIN,
    ("POST", "/organization/admin/roles/"): ORG_ADMIN,
    ("GET", "/organization/admin/roles/{role_name}"): ORG_ADMIN,
    ("DELETE", "/organization/admin/roles/{role_name}/users/{user_id}"): ORG_ADMIN,
    # platform admin: organizations and what belongs to them
    ("GET", "/heroes/admin/organizations/"): PLATFORM_ADMIN,
    ("POST", "/heroes/admin/organizations/"): PLATFORM_ADMIN,
    ("GET", "/heroes/admin/organizations/{organization_id}"): PLATFORM_ADMIN,
    ("DELETE", "/heroes/admin/organizations/{organization_id}"): PLATFORM_ADMIN,
    ("GET", "/heroes/admin/organizations/{organization_id}/clients/"): PLATFORM_ADMIN,
    ("POST", "/heroes/admin/organizations/{organization_id}/clients/"): PLATFORM_ADMIN,
    ("GET", "/heroes/admin/organizations/{organization_id}/clients/{client_id}"): PLATFORM_ADMIN,
    ("DELETE", "/heroes/admin/organizations/{organization_id}/clients/{client_id}"): PLATFORM_ADMIN,
    ("GET", "/heroes/admin/organizations/{organization_id}/servers/"): PLATFORM_ADMIN,
    ("POST", "/heroes/admin/organizations/{organization_id}/servers/"): PLATFORM_ADMIN,
    ("GET", "/heroes/admin/organizations/{organization_id}/servers/{server_id}"): PLATFORM_ADMIN,
    ("DELETE", "/heroes/admin/organizations/{organization_id}/servers/{server_id}"): PLATFORM_ADMIN,
    # --- data (issue: data) ---------------------------------------------------------------------------
    ("GET", "/organization/data/list"): USER,
    ("GET", "/organization/data/size"): USER,
    ("POST", "/organization/data/bucket"): USER,
    ("DELETE", "/organization/data/bucket"): USER,
    ("POST", "/organization/data/bucket/{bucket}/"): USER,
    ("GET", "/organization/data/bucket/{bucket}/list"): USER,
    ("DELETE", "/organization/data/bucket/{bucket}"): USER,
    ("GET", "/organization/data/download"): USER,
    ("POST", "/organization/data/upload"): USER,
    ("POST", "/organization/data/copy"): USER,
    ("POST", "/organization/data/move"): USER,
    ("GET", "/organization/data/credentials"): USER,
    # a single-user server's own S3 keys: asked by the hub at spawn, revoked at stop (api/server_keys.py)
    ("POST", "/organization/data/server-credentials"): HUB_SERVICE,
    ("DELETE", "/organization/data/server-credentials"): HUB_SERVICE,
    # --- workflow (issue: workflows) ------------------------------------------------------------------
    ("POST", "/organization/admin/workflow/template"): ORG_ADMIN,
    ("DELETE", "/organization/admin/workflow/template/{template_id}"): ORG_ADMIN,
    ("GET", "/organization/workflow/template"): USER,
    ("GET", "/organization/workflow/template/{template_id}"): USER,
    ("POST", "/organization/workflow/submit"): USER,
    ("GET", "/organization/workflow/instance"): USER,
    ("GET", "/organization/workflow/instance/{instance_id}"): USER,
    ("DELETE", "/organization/workflow/instance/{instance_id}"): USER,
    ("GET", "/organization/workflow/instance/{instance_id}/log/{step}"): USER,
    ("GET", "/organization/workflow/visualization"): USER,
    ("GET", "/organization/admin/workflow/instance/{template_id}"): ORG_ADMIN,
    # --- cluster (issue: clusters) --------------------------------------------------------------------
    ("GET", "/organization/cluster/"): USER,
    ("GET", "/organization/admin/cluster/"): ORG_ADMIN,
    ("POST", "/organization/admin/cluster/"): ORG_ADMIN,
    ("POST", "/organization/admin/cluster/host-key"): ORG_ADMIN,
    ("GET", "/organization/admin/cluster/ca"): ORG_ADMIN,
    ("GET", "/organization/admin/cluster/{cluster_id}"): ORG_ADMIN,
    ("DELETE", "/organization/admin/cluster/{cluster_id}"): ORG_ADMIN,
    ("POST", "/organization/admin/cluster/{cluster_id}/test"): ORG_ADMIN,
    # the Admin app's Clusters tab (api/cluster_checks.py)
    ("POST", "/organization/admin/cluster/{cluster_id}/readiness"): ORG_ADMIN,
    ("GET", "/organization/admin/cluster/{cluster_id}/partitions"): ORG_ADMIN,
    ("PATCH", "/organization/admin/cluster/{cluster_id}"): ORG_ADMIN,
    # the Admin app's template editor (api/template_checks.py)
    ("POST", "/organization/admin/workflow/template/check"): ORG_ADMIN,
    # --- template (issue: templates) ------------------------------------------------------------------
    # --- decision (issue: decision) -------------------------------------------------------------------
    # decision history (estimates; api/decision_history.py)
    ("POST", "/organization/admin/decision/history"): ORG_ADMIN,
    ("GET", "/organization/decision/history/summary"): USER,
    # placement (api/decision.py)
    ("GET", "/organization/decision/policies"): USER,
    ("POST", "/organization/decision/decide"): USER,
    # energy (issue: energy; api/energy.py)
    ("POST", "/organization/decision/ingest_ear_files"): USER,
    ("GET", "/organization/decision/energy/steps"): USER,
    ("GET", "/organization/decision/energy/summary"): USER,
    ("GET", "/organization/decision/energy/samples"): USER,
    # --- visualization (remote desktops; api/visualization.py; the websocket authenticates itself) ---------
    ("POST", "/organization/visualization/session"): USER,
    ("GET", "/organization/visualization/session"): USER,
    ("GET", "/organization/visualization/session/{session_id}"): USER,
    ("DELETE", "/organization/visualization/session/{session_id}"): USER,
    ("POST", "/organization/visualization/session/{session_id}/ticket"): USER,
    ("POST", "/organization/visualization/session/{session_id}/share"): USER,
    ("GET", "/organization/visualization/shared"): USER,
    ("POST", "/organization/visualization/share/{share_id}/ticket"): USER,
    ("GET", "/organization/visualization/view"): PUBLIC,
    ("GET", "/organization/visualization/static/{name}"): PUBLIC,
    # noVNC's ES modules import each other by relative path: the OpenAPI form names the route, the
    # {path:path} form lets the middleware match paths with slashes
    ("GET", "/organization/visualization/novnc/{path}"): PUBLIC,
    ("GET", "/organization/visualization/novnc/{path:path}"): PUBLIC,
    # --- cluster jobs: the hub runs servers and kernels for a user (api/cluster_jobs.py); never a person ------
    ("GET", "/heroes/hub/cluster-jobs/clusters"): HUB_SERVICE,
    ("POST", "/heroes/hub/cluster-jobs/"): HUB_SERVICE,
    ("GET", "/heroes/hub/cluster-jobs/{job_id}"): HUB_SERVICE,
    ("DELETE", "/heroes/hub/cluster-jobs/{job_id}"): HUB_SERVICE,
    ("POST", "/heroes/hub/cluster-jobs/{job_id}/signal"): HUB_SERVICE,
    ("POST", "/heroes/hub/cluster-jobs/{job_id}/tunnel"): HUB_SERVICE,
}

#: resources written by other issues: module api/<name>.py (exporting ``router``) -> path prefixes it owns
RESERVED: dict[str, tuple[str, ...]] = {
    "data": ("/organization/data",),
    "workflows": ("/organization/workflow", "/organization/admin/workflow"),
    "clusters": ("/organization/cluster", "/organization/admin/cluster", "/heroes/admin/clusters"),
    "decision": ("/organization/decision",),
    "energy": ("/organization/decision/ingest_ear_files", "/organization/decision/energy"),
    "decision_history": ("/organization/admin/decision/history", "/organization/decision/history"),
    "visualization": ("/organization/visualization",),
    "server_keys": ("/organization/data/server-credentials",),
    "cluster_checks": ("/organization/admin/cluster/",),
    "template_checks": ("/organization/admin/workflow/template/check",),
    "cluster_jobs": ("/heroes/hub/cluster-jobs",),
}


def app_routes(app: FastAPI, prefix: str) -> list[tuple[str, str]]:
    """Every (method, relative path template) the app serves below ``prefix``, from its OpenAPI document
    plus the plain Starlette routes (docs, openapi.json). Routes hidden from the schema are not listed;
    the middleware refuses them anyway (no row, no access)."""
    found = set()
    for path, operations in app.openapi().get("paths", {}).items():
        for method in operations:
            if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"}:
                found.add((method.upper(), path[len(prefix):] if path.startswith(prefix) else path))
    for route in app.routes:
        if isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    found.add((method, route.path[len(prefix):] if route.path.startswith(prefix) else route.path))
    return sorted(found)


def verify_table(app: FastAPI, prefix: str) -> None:
    """Refuse to build an app with a route that has no row in ACCESS (or a route outside the prefix)."""
    routes = app_routes(app, prefix)
    missing = [f"{m} {p}" for m, p in routes if (m, p) not in ACCESS]
    if missing:
        raise RuntimeError("access table incomplete (extensions/heroes_service/api/access.py): "
                           + "; ".join(f"no row for {x}" for x in missing))
    for name, prefixes in RESERVED.items():
        owned = getattr(app.state, "reserved_routes", {}).get(name, [])
        relative = [p[len(prefix):] if p.startswith(prefix) else p for p in owned]
        stray = [p for p in relative if not p.startswith(prefixes)]
        if stray:
            raise RuntimeError(f"api/{name}.py serves paths outside its reserved prefixes {prefixes}: {stray}")


class _Matcher:
    """The table's path templates compiled like Starlette's router does (``{id}``, ``{key:path}``)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.rows = []
        for (method, template), level in ACCESS.items():
            regex, _fmt, convertors = compile_path(prefix + template)
            self.rows.append((len(convertors), method, regex, template, level))
        self.rows.sort(key=lambda row: row[0])  # literal paths win over templated ones

    def level(self, method: str, path: str) -> tuple[str | None, bool]:
        """(level of the matching row, whether the path matched any row for another method)."""
        other_method = False
        for _n, row_method, regex, _template, level in self.rows:
            if regex.match(path):
                if row_method == method:
                    return level, True
                other_method = True
        return None, other_method


class AccessMiddleware:
    """Enforces ACCESS before any route runs (and before any body is read); fails closed.

    A request below the prefix whose (method, path) has no row never reaches a route: 401/403 need no
    route, unknown paths get 404 (a path that differs only by its trailing slash goes on to the router,
    which redirects), and a known path with another method gets 405.
    """

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, prefix: str):
        self.app = app
        self.fastapi_app = fastapi_app
        self.prefix = prefix
        self.matcher = _Matcher(prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        path = scope["path"]
        level, path_known = self.matcher.level(method, path)
        if level is None:
            alt = path[:-1] if path.endswith("/") else path + "/"
            if self.matcher.level(method, alt)[0] is not None:
                await self.app(scope, receive, send)  # the router redirects to the canonical path
                return
            if path_known:
                response = JSONResponse({"detail": f"method {scope['method']} not allowed here"}, status_code=405)
            else:
                response = JSONResponse({"detail": "not found"}, status_code=404)
            await response(scope, receive, send)
            return
        if level != PUBLIC:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            authenticator = self.fastapi_app.state.authenticator
            try:
                if level == HUB_SERVICE:  # the hub's own token, never a person's (api/server_keys.py)
                    cached = getattr(authenticator, "cached_hub_service_caller", None)  # a hit costs no thread
                    caller = cached(headers.get("authorization")) if cached else None
                    if caller is None:
                        caller = await anyio.to_thread.run_sync(authenticator.hub_service_caller,
                                                                headers.get("authorization"))
                    scope.setdefault("state", {})["hub_service"] = caller
                    await self.app(scope, receive, send)
                    return
                cached = getattr(authenticator, "cached_principal", None)  # a hit costs no thread
                principal = cached(headers.get("authorization")) if cached else None
                if principal is None:
                    principal = await anyio.to_thread.run_sync(authenticator.authenticate,
                                                               headers.get("authorization"))
                check(level, principal)
            except ApiError as exc:
                await JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)(scope, receive, send)
                return
            except Exception:  # never a stack trace to the client
                log.exception("authentication failed unexpectedly")
                await JSONResponse({"detail": "internal error while authenticating"}, status_code=500)(
                    scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)
