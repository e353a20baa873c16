"""Small dependencies the admin routers share: the identity clients and the caller's organization."""
from __future__ import annotations

from fastapi import Depends, Request

from ..auth import Principal, current_principal
from ..errors import Forbidden
from ..identity.hub import Hub
from ..identity.keycloak import Identity, OrgDirectory


def identity(request: Request) -> Identity:
    return request.app.state.identity


def hub(request: Request) -> Hub:
    return request.app.state.hub


def forget_principals(request: Request) -> None:
    """Drop cached principals so that the identity change shows on the very next call."""
    request.app.state.authenticator.forget()


def org_directory(principal: Principal = Depends(current_principal),
                  ident: Identity = Depends(identity)) -> OrgDirectory:
    """The caller's organization (org-admin routes act within it and nowhere else)."""
    if principal.organization is None:
        raise Forbidden("you belong to no organization")
    return OrgDirectory(ident, principal.organization)
