"""``GET <prefix>/api/v1/health``: liveness of the service, public (no token), cheap."""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from . import __version__
from .settings import ServiceSettings, get_settings

router = APIRouter(tags=["health"])
_STARTED = time.time()


@router.get("/health")
def health(settings: ServiceSettings = Depends(get_settings)) -> dict:
    """Answer ``{"status": "ok"}`` while the process serves requests; the stack's health check polls it."""
    return {
        "status": "ok",
        "service": settings.service_name,
        "version": __version__,
        "uptime_s": round(time.time() - _STARTED, 1),
    }
