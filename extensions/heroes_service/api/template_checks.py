"""``POST /organization/admin/workflow/template/check``: validate a template without publishing it.

The Admin app's template editor calls it as the author types: every error comes back with its line and
column in the text (``workflows/template_errors.py``), and a valid template comes back with the parameter
form schema the Submit app will draw, the step order and the version publishing would create. Nothing is
written. Publishing stays ``POST /organization/admin/workflow/template`` (api/workflows.py).
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..auth import Principal, require_role
from ..store import get_session
from ..workflows import models as m
from ..workflows.template_errors import check_source

router = APIRouter(tags=["workflows"])
org_admin = require_role("org-admin")


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(max_length=600_000, description="The template as YAML or JSON text.")


class LocatedError(BaseModel):
    loc: str = Field(description="Path of keys and indices in the template ('' for the whole template).")
    message: str
    line: int | None = Field(description="1-based line in the text, when the text gives one.")
    column: int | None = Field(description="1-based column in the text, when the text gives one.")


class CheckOut(BaseModel):
    ok: bool
    errors: list[LocatedError]
    name: str | None = None
    title: str = ""
    description: str = ""
    next_version: int | None = Field(None, description="The version publishing this text would create.")
    parameters: list[dict[str, Any]] = Field(default_factory=list, description="The Submit form's schema.")
    steps: list[str] = Field(default_factory=list, description="Step names in the order they run.")


@router.post("/organization/admin/workflow/template/check", response_model=CheckOut,
             summary="Validate a template (errors with line and column; the form it generates); nothing is stored")
def check_template(body: CheckIn, principal: Principal = Depends(org_admin), session: Session = Depends(get_session, scope="function")):
    template, errors = check_source(body.source)
    if template is None:
        return CheckOut(ok=False, errors=[LocatedError(**e.as_dict()) for e in errors])
    latest = session.scalar(select(func.max(m.WorkflowTemplate.version)).where(
        m.WorkflowTemplate.organization == principal.organization, m.WorkflowTemplate.name == template.name))
    return CheckOut(ok=True, errors=[], name=template.name, title=template.title, description=template.description,
                    next_version=(latest or 0) + 1, parameters=template.form_schema(),
                    steps=[s.name for s in template.ordered_steps()])
