"""The HEROES service: a FastAPI app the hub runs as the managed service ``heroes``.

The hub's proxy forwards ``/services/heroes/...`` without stripping the prefix, so every route is mounted
below ``settings.prefix``. Run it as the hub does::

    uvicorn heroes_service.app:app --host 127.0.0.1 --port 10101

Building the app applies the database migrations, builds the long-lived workers (the one reconciler, cluster
jobs, the workflow engine: ``wiring.py``) and checks that every route has a row in the access table
(api/access.py). A capability whose router fails to import, a route without a row, or a failed migration
stops the service from starting; the workers start and stop with the app's lifespan.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import __version__, errors, health, wiring
from .api import access
from .auth import Authenticator
from .identity.hub import Hub
from .identity.keycloak import Identity
from .settings import ServiceSettings, get_settings
from .store import make_engine, migrate, session_factory

log = logging.getLogger("heroes_service")

#: the service's own resources (module under heroes_service.api exporting ``router``)
OWN_ROUTERS = ("auth_routes", "org_admin", "platform_admin")


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the app: database (migrated), identity clients, routers, access table check."""
    settings = settings or get_settings()
    app = FastAPI(
        title="HEROES gateway service",
        version=__version__,
        description="REST API of the HEROES gateway. Authenticate with `Authorization: token <JupyterHub token>` "
                    "or `Authorization: Bearer <Keycloak access token>`.",
        openapi_url=f"{settings.api_prefix}/openapi.json",
        docs_url=f"{settings.api_prefix}/docs",
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=f"{settings.api_prefix}/docs/oauth2-redirect",
        lifespan=lifespan,
    )
    app.state.settings = settings
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    app.state.engine = engine
    app.state.sessions = session_factory(engine, settings=settings)
    app.state.identity = Identity(settings)
    app.state.hub = Hub(settings)
    app.state.authenticator = Authenticator(settings, app.state.identity, app.state.sessions)
    # no app.dependency_overrides here: while any override exists, FastAPI 0.165 rebuilds every dependency of
    # every request from its signature (inspect.signature per Depends; seen with py-spy in the submit benchmark,
    # 0.14 ms for the cluster-jobs submit's two on an idle host); the app's settings are on app.state.settings
    errors.install(app)
    wiring.build_workers(app)

    app.include_router(health.router, prefix=settings.api_prefix)
    for name in OWN_ROUTERS:
        module = importlib.import_module(f"{__package__}.api.{name}")
        app.include_router(module.router, prefix=settings.api_prefix)
    app.state.reserved_routes = {}
    for name in access.RESERVED:
        # a capability that fails to import stops the start (no silent skip: a missing room is a broken service)
        module = importlib.import_module(f"{__package__}.api.{name}")
        app.include_router(module.router, prefix=settings.api_prefix)
        # from the module's own router: FastAPI >= 0.16x adds one opaque _IncludedRouter to app.routes
        app.state.reserved_routes[name] = [settings.api_prefix + r.path for r in module.router.routes]
    _allow_org_clients(app)
    access.verify_table(app, settings.api_prefix)
    app.add_middleware(access.AccessMiddleware, fastapi_app=app, prefix=settings.api_prefix)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI):
    """The workers run while the app serves: the reconciler's threads, the engine's driver pool, tunnels."""
    wiring.start_workers(app)
    try:
        yield
    finally:
        await asyncio.to_thread(wiring.stop_workers, app)


def _allow_org_clients(app: FastAPI) -> None:
    """Access tokens of organizations' OAuth clients (service accounts) are accepted too."""
    from sqlalchemy import select

    from .store.models import OrgClient

    def audiences() -> set[str]:
        cached = app.state.authenticator.principals.get(("audiences",))
        if cached is None:
            with app.state.sessions() as session:
                cached = set(session.scalars(select(OrgClient.client_id)))
            app.state.authenticator.principals.put(("audiences",), cached)
        return cached

    app.state.authenticator.extra_audiences = audiences


def __getattr__(name: str):
    """``heroes_service.app:app`` for uvicorn, built on first access (importing the module stays cheap)."""
    if name == "app":
        value = create_app()
        globals()["app"] = value
        return value
    raise AttributeError(name)
