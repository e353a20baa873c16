"""``/organization/admin``: users, groups and roles of the caller's own organization."""
from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/organization/admin", tags=["organization admin"])
