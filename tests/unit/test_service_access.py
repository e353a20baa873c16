"""The access table's guard rails, without the stack: a route without a row stops the app from being
built, and the middleware matches paths the way Starlette's router does and fails closed."""
from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI

from heroes_service.api import access
from heroes_service.auth import Principal, allowed

PREFIX = "/services/heroes/api/v1"


def app_with(path: str, method: str = "get") -> FastAPI:
    app = FastAPI(openapi_url=f"{PREFIX}/openapi.json", docs_url=f"{PREFIX}/docs",
                  swagger_ui_oauth2_redirect_url=f"{PREFIX}/docs/oauth2-redirect", redoc_url=None)
    router = APIRouter()
    getattr(router, method)(path)(lambda: {})
    app.include_router(router, prefix=PREFIX)
    return app


def test_a_route_without_a_row_stops_the_app():
    with pytest.raises(RuntimeError, match=r"no row for GET /organization/forgotten"):
        access.verify_table(app_with("/organization/forgotten"), PREFIX)


def test_a_route_with_a_row_passes():
    access.verify_table(app_with("/organization/auth/me"), PREFIX)


def test_a_method_without_a_row_is_caught():
    with pytest.raises(RuntimeError, match=r"no row for PUT /organization/auth/me"):
        access.verify_table(app_with("/organization/auth/me", "put"), PREFIX)


def test_matcher_levels_and_templates():
    matcher = access._Matcher(PREFIX)
    assert matcher.level("GET", f"{PREFIX}/organization/auth/me") == ("user", True)
    assert matcher.level("GET", f"{PREFIX}/organization/admin/users/abc-123") == ("org-admin", True)
    assert matcher.level("PUT", f"{PREFIX}/organization/admin/users/abc-123") == (None, True)
    assert matcher.level("GET", f"{PREFIX}/organization/admin/users/a/b") == (None, False)
    assert matcher.level("GET", f"{PREFIX}/health") == ("public", True)


@pytest.mark.parametrize("roles,org,expected", [
    ({"user"}, "acme", {"public", "user"}),
    ({"user", "org-admin"}, "acme", {"public", "user", "org-admin"}),
    ({"user", "org-admin"}, None, {"public", "user"}),
    ({"user", "platform-admin"}, None, {"public", "user", "platform-admin"}),
    (set(), "acme", {"public"}),
])
def test_levels(roles, org, expected):
    principal = Principal(username="x", organization=org, roles=frozenset(roles))
    assert {level for level in ("public", "user", "org-admin", "platform-admin") if allowed(level, principal)} \
        == expected
    assert not allowed("user", None) and allowed("public", None)
