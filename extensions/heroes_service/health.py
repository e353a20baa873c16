"""``GET <prefix>/api/v1/health``: liveness of the service, public (no token), cheap."""
from __future__ import annotations

import time

from fastapi import APIRouter, Request

from . import __version__

router = APIRouter(tags=["health"])
_STARTED = time.time()


@router.get("/health")
def health(request: Request) -> dict:
    """Answer ``{"status": "ok"}`` while the process serves requests; the stack's health check polls it."""
    settings = request.app.state.settings
    return {
        "status": "ok",
        "service": settings.service_name,
        "version": __version__,
        "uptime_s": round(time.time() - _STARTED, 1),
    }
