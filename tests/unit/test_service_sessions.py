"""Every route's database session is committed before its answer leaves.

FastAPI (since 0.118) ends a ``yield`` dependency *after* the response is sent unless it is declared with
``scope="function"``; a session committed that late lets a client read straight after a 201 and miss the
record it just created (found by the Admin app's browser test: a newly enrolled cluster missing from the
list read right after). This walks the served routes' dependency trees, so a new route cannot forget it.
"""
from __future__ import annotations

from fastapi.routing import APIRoute, APIWebSocketRoute

from heroes_service.app import create_app
from heroes_service.settings import ServiceSettings
from heroes_service.store import get_session


def _session_dependants(dependant):
    for sub in dependant.dependencies:
        if sub.call is get_session:
            yield sub
        yield from _session_dependants(sub)


def _api_routes(routes):
    """The app's routes, through included routers (this FastAPI nests them instead of copying them)."""
    for route in routes:
        if isinstance(route, (APIRoute, APIWebSocketRoute)):
            yield route
        elif getattr(route, "original_router", None) is not None:
            yield from _api_routes(route.original_router.routes)


def test_every_session_is_committed_before_the_answer(tmp_path):
    app = create_app(ServiceSettings(state_dir=str(tmp_path)))
    checked, late = 0, []
    for route in _api_routes(app.routes):
        for sub in _session_dependants(route.dependant):
            checked += 1
            if sub.scope != "function":
                late.append(f"{','.join(sorted(getattr(route, 'methods', None) or ['WS']))} {route.path}")
    assert checked > 20, "the walk found too few session dependencies to mean anything"
    assert not late, f"sessions committed after the answer on: {late}"
