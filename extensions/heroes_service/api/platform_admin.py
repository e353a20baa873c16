"""``/heroes/admin/organizations``: organizations, their OAuth clients and storage servers."""
from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/heroes/admin/organizations", tags=["platform admin"])
