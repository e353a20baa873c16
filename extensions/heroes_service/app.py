"""The HEROES service: a FastAPI app the hub runs as the managed service ``heroes``.

The hub's proxy forwards ``/services/heroes/...`` without stripping the prefix, so every route is mounted
below ``settings.prefix``. Run it as the hub does::

    uvicorn heroes_service.app:app --host 127.0.0.1 --port 10101
"""
from __future__ import annotations

from fastapi import FastAPI

from . import __version__, health
from .settings import ServiceSettings, get_settings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the app; resource routers are included below the versioned API prefix."""
    settings = settings or get_settings()
    app = FastAPI(
        title="HEROES gateway service",
        version=__version__,
        openapi_url=f"{settings.api_prefix}/openapi.json",
        docs_url=f"{settings.api_prefix}/docs",
        redoc_url=None,
    )
    app.include_router(health.router, prefix=settings.api_prefix)
    return app


app = create_app()
