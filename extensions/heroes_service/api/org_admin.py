"""``/organization/admin``: users, groups and roles of the caller's own organization (org-admin only).

Everything lives in Keycloak (python-keycloak); group memberships are mirrored into JupyterHub groups at
once. Each route keeps Keycloak and the hub in step: when a later step fails, the earlier ones are undone
and the error says what happened. Ids of another organization answer 404, exactly like unknown ids.
"""
from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ..auth import Principal, current_principal
from ..errors import ApiError, Conflict, Incomplete, Invalid, NotFound
from ..identity import lifecycle
from ..identity.hub import Hub
from ..identity.keycloak import OrgDirectory, group_name
from .compensation import failure
from .deps import forget_principals, hub, org_directory
from .rules import EMAIL_PATTERN, NAME_PATTERN, NAME_RULE, ORG_ROLES, USERNAME_PATTERN, USERNAME_RULE

log = logging.getLogger("heroes_service.org_admin")
router = APIRouter(prefix="/organization/admin", tags=["organization admin"])


# --- models ---------------------------------------------------------------------------------------------
class _Write(BaseModel):
    """Write bodies refuse fields they do not know (a typo or a smuggled attribute is a 422, not ignored)."""

    model_config = ConfigDict(extra="forbid")


class UserOut(BaseModel):
    id: str
    username: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    enabled: bool = True
    groups: list[str] | None = Field(None, description="The user's groups in the organization (short names).")
    roles: list[str] | None = None


class UserCreate(_Write):
    username: str = Field(pattern=USERNAME_PATTERN, description=USERNAME_RULE)
    email: str | None = Field(None, pattern=EMAIL_PATTERN, max_length=254, description="name@domain")
    first_name: str | None = Field(None, max_length=100)
    last_name: str | None = Field(None, max_length=100)
    password: str | None = Field(None, min_length=8, max_length=256, description="Initial password (8+ characters).")
    temporary_password: bool = Field(False, description="Ask for a new password at first login.")
    groups: list[str] = Field(default_factory=list, max_length=100, description="Groups of the organization to join.")
    roles: list[str] = Field(default_factory=lambda: ["user"], max_length=2, description="Subset of org-admin, user.")


class UserPatch(_Write):
    email: str | None = Field(None, pattern=EMAIL_PATTERN, max_length=254, description="name@domain")
    first_name: str | None = Field(None, max_length=100)
    last_name: str | None = Field(None, max_length=100)
    enabled: bool | None = None
    password: str | None = Field(None, min_length=8, max_length=256)
    temporary_password: bool = False


class GroupOut(BaseModel):
    id: str
    name: str = Field(description="Short name within the organization.")
    hub_group: str = Field(description="Name of the mirrored JupyterHub group (<organization>.<name>).")
    members: list[str] | None = None


class GroupCreate(_Write):
    name: str = Field(pattern=NAME_PATTERN, description=NAME_RULE)
    members: list[str] = Field(default_factory=list, max_length=1000, description="Usernames of the organization.")


class GroupPatch(_Write):
    add_members: list[str] = Field(default_factory=list, max_length=1000)
    remove_members: list[str] = Field(default_factory=list, max_length=1000)


class RoleOut(BaseModel):
    name: str
    description: str = ""
    members: list[str] = Field(default_factory=list, description="Usernames in the organization with this role.")


class RoleGrant(_Write):
    role: str = Field(description="org-admin or user")
    username: str = Field(pattern=USERNAME_PATTERN, description=USERNAME_RULE)


# --- helpers --------------------------------------------------------------------------------------------
def _user_out(user: dict, **extra) -> UserOut:
    return UserOut(id=user["id"], username=user["username"], email=user.get("email"),
                   first_name=user.get("firstName"), last_name=user.get("lastName"),
                   enabled=user.get("enabled", True), **extra)


def _short(org: str, name: str) -> str:
    return name[len(org) + 1:] if name.startswith(f"{org}.") else name


def _check_roles(roles: list[str]) -> None:
    bad = [r for r in roles if r not in ORG_ROLES]
    if bad:
        raise Invalid(f"role(s) {', '.join(sorted(set(bad)))} cannot be granted by an organization admin",
                      rule=f"roles must be among {', '.join(ORG_ROLES)}")


def _members_by_username(org: OrgDirectory, usernames: list[str]) -> list[dict]:
    users, unknown = [], []
    for name in dict.fromkeys(usernames):
        user = org.member_by_username(name)
        (users.append(user) if user else unknown.append(name))
    if unknown:
        raise Invalid(f"unknown user(s) in your organization: {', '.join(unknown)}",
                      rule="members must be users of your organization")
    return users


# --- users ----------------------------------------------------------------------------------------------
@router.get("/users/", response_model=list[UserOut], summary="Users of your organization")
def list_users(org: OrgDirectory = Depends(org_directory)) -> list[UserOut]:
    return [_user_out(u) for u in sorted(org.members(), key=lambda u: u["username"])]


@router.post("/users/", response_model=UserOut, status_code=201, summary="Create a user in your organization")
def create_user(body: UserCreate, request: Request, org: OrgDirectory = Depends(org_directory),
                hub_: Hub = Depends(hub)) -> UserOut:
    _check_roles(body.roles)
    groups = {g["name"]: g for g in org.groups()}
    unknown = [g for g in body.groups if group_name(org.org, g) not in groups]
    if unknown:
        raise Invalid(f"unknown group(s) in your organization: {', '.join(unknown)}",
                      rule="groups must exist in your organization")
    if org.identity.user_by_username(body.username) is not None:
        raise Conflict(f"username {body.username!r} is taken")
    payload = {"username": body.username, "enabled": True, "emailVerified": bool(body.email),
               "firstName": body.first_name or body.username, "lastName": body.last_name or org.org,
               "attributes": {"heroes.organization": [org.org]}}
    if body.email:
        payload["email"] = str(body.email)
    if body.password:
        payload["credentials"] = [{"type": "password", "value": body.password,
                                   "temporary": body.temporary_password}]
    user_id = org.call(org.admin.create_user, payload, exist_ok=False, what=f"user {body.username!r}")
    undo = [("delete the new Keycloak user", lambda: org.admin.delete_user(user_id))]
    try:
        org.call(org.admin.group_user_add, user_id, org.group_id, what="organization group")
        for name in body.groups:
            org.call(org.admin.group_user_add, user_id, groups[group_name(org.org, name)]["id"], what="group")
        roles = [org.call(org.admin.get_realm_role, r, what=f"role {r}") for r in sorted(set(body.roles))]
        if roles:
            org.call(org.admin.assign_realm_roles, user_id, roles, what="role")
        hub_.add_members(org.org, [body.username])
        for name in body.groups:
            hub_.add_members(group_name(org.org, name), [body.username])
    except Exception as exc:
        raise failure(f"creating user {body.username!r}", exc, undo) from None
    forget_principals(request)
    lifecycle.user_restored(body.username, org.org)  # a name used before starts with no revocation
    user = org.call(org.admin.get_user, user_id, what="user")
    return _user_out(user, groups=sorted(body.groups), roles=sorted(set(body.roles)))


@router.get("/users/{user_id}", response_model=UserOut, summary="A user of your organization")
def get_user(user_id: str, org: OrgDirectory = Depends(org_directory)) -> UserOut:
    user = org.member(user_id)
    paths = org.identity.user_group_paths(user_id)
    groups = sorted(_short(org.org, p.rsplit("/", 1)[-1]) for p in paths if p.startswith(f"/{org.org}/"))
    roles = sorted(org.identity.user_realm_roles(user_id) & {"org-admin", "user", "platform-admin"})
    return _user_out(user, groups=groups, roles=roles)


@router.patch("/users/{user_id}", response_model=UserOut, summary="Change a user of your organization")
def patch_user(user_id: str, body: UserPatch, request: Request, org: OrgDirectory = Depends(org_directory),
               principal: Principal = Depends(current_principal)) -> UserOut:
    user = org.member(user_id)
    if body.enabled is False and user["username"] == principal.username:
        raise Conflict("you cannot disable your own account")
    changes = {}
    if body.email is not None:
        changes["email"] = str(body.email)
    if body.first_name is not None:
        changes["firstName"] = body.first_name
    if body.last_name is not None:
        changes["lastName"] = body.last_name
    if body.enabled is not None:
        changes["enabled"] = body.enabled
    if changes:
        org.call(org.admin.update_user, user_id, changes, what="user")
    if body.password:
        org.call(org.admin.set_user_password, user_id, body.password, temporary=body.temporary_password, what="user")
    forget_principals(request)
    if body.enabled is False:
        lifecycle.user_removed(user["username"], org.org)  # their cluster sessions end now, not at expiry
    elif body.enabled is True:
        lifecycle.user_restored(user["username"], org.org)
    return get_user(user_id, org)


@router.delete("/users/{user_id}", status_code=204, summary="Delete a user of your organization")
def delete_user(user_id: str, request: Request, org: OrgDirectory = Depends(org_directory),
                principal: Principal = Depends(current_principal), hub_: Hub = Depends(hub)) -> None:
    user = org.member(user_id)
    if user["username"] == principal.username:
        raise Conflict("you cannot delete your own account")
    group_names = [p.rsplit("/", 1)[-1] for p in org.identity.user_group_paths(user_id)
                   if p == f"/{org.org}" or p.startswith(f"/{org.org}/")]
    for name in group_names:  # hub first: if the hub refuses, Keycloak is still untouched
        hub_.remove_members(name, [user["username"]])
    try:
        org.call(org.admin.delete_user, user_id, what="user")
    except Exception as exc:
        for name in group_names:
            try:
                hub_.add_members(name, [user["username"]])
            except ApiError:
                log.error("could not restore hub group %s for %s", name, user["username"])
        raise failure(f"deleting user {user['username']!r}", exc, []) from None
    forget_principals(request)
    lifecycle.user_removed(user["username"], org.org)


# --- groups ---------------------------------------------------------------------------------------------
def _group_out(org: OrgDirectory, group: dict, members: bool = False) -> GroupOut:
    return GroupOut(id=group["id"], name=_short(org.org, group["name"]), hub_group=group["name"],
                    members=sorted(u["username"] for u in org.group_members(group["id"])) if members else None)


@router.get("/groups/", response_model=list[GroupOut], summary="Groups of your organization")
def list_groups(org: OrgDirectory = Depends(org_directory)) -> list[GroupOut]:
    return [_group_out(org, g) for g in sorted(org.groups(), key=lambda g: g["name"])]


@router.post("/groups/", response_model=GroupOut, status_code=201, summary="Create a group in your organization")
def create_group(body: GroupCreate, request: Request, org: OrgDirectory = Depends(org_directory),
                 hub_: Hub = Depends(hub)) -> GroupOut:
    full = group_name(org.org, body.name)
    if any(g["name"] == full for g in org.groups()):
        raise Conflict(f"group {body.name!r} already exists in your organization")
    members = _members_by_username(org, body.members)
    group_id = org.call(org.admin.create_group, {"name": full, "attributes": {"heroes.organization": [org.org]}},
                        parent=org.group_id, what=f"group {body.name!r}")
    undo = [("delete the new Keycloak group", lambda: org.admin.delete_group(group_id))]
    try:
        for user in members:
            org.call(org.admin.group_user_add, user["id"], group_id, what="group")
        hub_.ensure_group(full)
        undo.append(("delete the new hub group", lambda: hub_.delete_group(full)))
        hub_.add_members(full, [u["username"] for u in members])
    except Exception as exc:
        raise failure(f"creating group {body.name!r}", exc, undo) from None
    forget_principals(request)
    return _group_out(org, org.group(group_id), members=True)


@router.get("/groups/{group_id}", response_model=GroupOut, summary="A group of your organization, with members")
def get_group(group_id: str, org: OrgDirectory = Depends(org_directory)) -> GroupOut:
    return _group_out(org, org.group(group_id), members=True)


@router.patch("/groups/{group_id}", response_model=GroupOut, summary="Add or remove members of a group")
def patch_group(group_id: str, body: GroupPatch, request: Request, org: OrgDirectory = Depends(org_directory),
                hub_: Hub = Depends(hub)) -> GroupOut:
    group = org.group(group_id)
    both = set(body.add_members) & set(body.remove_members)
    if both:
        raise Invalid(f"user(s) both added and removed: {', '.join(sorted(both))}",
                      rule="a user may appear in add_members or remove_members, not both")
    adding = _members_by_username(org, body.add_members)
    removing = _members_by_username(org, body.remove_members)
    undo: list = []
    try:
        for user in adding:
            org.call(org.admin.group_user_add, user["id"], group_id, what="group")
            undo.append((f"remove {user['username']} again", lambda u=user: org.admin.group_user_remove(u["id"], group_id)))
        for user in removing:
            org.call(org.admin.group_user_remove, user["id"], group_id, what="group")
            undo.append((f"add {user['username']} back", lambda u=user: org.admin.group_user_add(u["id"], group_id)))
        hub_.add_members(group["name"], [u["username"] for u in adding])
        hub_.remove_members(group["name"], [u["username"] for u in removing])
    except Exception as exc:
        raise failure(f"changing group {_short(org.org, group['name'])!r}", exc, undo) from None
    forget_principals(request)
    return _group_out(org, group, members=True)


@router.delete("/groups/{group_id}", status_code=204, summary="Delete a group of your organization")
def delete_group(group_id: str, request: Request, org: OrgDirectory = Depends(org_directory),
                 hub_: Hub = Depends(hub)) -> None:
    group = org.group(group_id)
    org.call(org.admin.delete_group, group_id, what="group")
    try:
        hub_.delete_group(group["name"])
    except ApiError as exc:
        # the Keycloak group is gone; a stale hub group only loses members at their next login
        raise Incomplete(f"group deleted in Keycloak but the hub kept its mirror: {exc.detail}") from None
    forget_principals(request)


# --- roles ----------------------------------------------------------------------------------------------
def _role_out(org: OrgDirectory, name: str) -> RoleOut:
    role = org.identity.cached(("role", name), lambda: org.call(org.admin.get_realm_role, name, what=f"role {name!r}"))
    return RoleOut(name=name, description=role.get("description") or "",
                   members=sorted(u["username"] for u in org.role_members(name)))


@router.get("/roles/", response_model=list[RoleOut], summary="Roles you can grant, with their holders")
def list_roles(org: OrgDirectory = Depends(org_directory)) -> list[RoleOut]:
    return [_role_out(org, name) for name in ORG_ROLES]


@router.post("/roles/", response_model=RoleOut, status_code=201, summary="Give a user of your organization a role")
def grant_role(body: RoleGrant, request: Request, org: OrgDirectory = Depends(org_directory)) -> RoleOut:
    _check_roles([body.role])
    (user,) = _members_by_username(org, [body.username])
    role = org.call(org.admin.get_realm_role, body.role, what=f"role {body.role!r}")
    if body.role in org.identity.user_realm_roles(user["id"]):
        raise Conflict(f"{body.username} already has the role {body.role}")
    org.call(org.admin.assign_realm_roles, user["id"], [role], what="role")
    forget_principals(request)
    return _role_out(org, body.role)


@router.get("/roles/{role_name}", response_model=RoleOut, summary="A role and its holders in your organization")
def get_role(role_name: str, org: OrgDirectory = Depends(org_directory)) -> RoleOut:
    if role_name not in ORG_ROLES:
        raise NotFound(f"role {role_name!r} not found (roles: {', '.join(ORG_ROLES)})")
    return _role_out(org, role_name)


@router.delete("/roles/{role_name}/users/{user_id}", status_code=204, summary="Take a role from a user")
def revoke_role(role_name: str, user_id: str, request: Request, org: OrgDirectory = Depends(org_directory),
                principal: Principal = Depends(current_principal)) -> None:
    if role_name not in ORG_ROLES:
        raise NotFound(f"role {role_name!r} not found (roles: {', '.join(ORG_ROLES)})")
    user = org.member(user_id)
    if user["username"] == principal.username and role_name == "org-admin":
        raise Conflict("you cannot take the org-admin role from yourself")
    if role_name not in org.identity.user_realm_roles(user_id):
        raise NotFound(f"{user['username']} does not have the role {role_name}")
    role = org.call(org.admin.get_realm_role, role_name, what=f"role {role_name!r}")
    org.call(org.admin.delete_realm_roles_of_user, user_id, [role], what="role")
    forget_principals(request)
