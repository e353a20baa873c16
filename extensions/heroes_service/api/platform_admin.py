"""``/heroes/admin/organizations``: organizations, their OAuth clients and storage servers (platform admin).

An organization is three things kept in step: a top-level Keycloak group marked ``heroes.organization``,
a row in the ``organizations`` table and a JupyterHub group of the same name (plus whatever registered
lifecycle hooks add, e.g. storage). Creating or deleting one does all or nothing: a failing step undoes
the earlier ones. Organizations that exist only in Keycloak (the demo realm's acme and globex) are
adopted into the table the first time they are listed.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import ApiError, Conflict, Incomplete, NotFound
from ..identity import lifecycle
from ..identity.hub import Hub
from ..identity.keycloak import ORG_ATTRIBUTE, Identity
from ..store import get_session
from ..store.models import Organization, OrgClient, StorageServer
from .compensation import failure
from .deps import forget_principals, hub, identity
from .rules import EMAIL_PATTERN, NAME_PATTERN, NAME_RULE, USERNAME_PATTERN, USERNAME_RULE

log = logging.getLogger("heroes_service.platform_admin")
router = APIRouter(prefix="/heroes/admin/organizations", tags=["platform admin"])
URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$"


# --- models ---------------------------------------------------------------------------------------------
class FirstAdmin(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are refused, never ignored
    username: str = Field(pattern=USERNAME_PATTERN, description=USERNAME_RULE)
    password: str = Field(min_length=8, max_length=256)
    email: str | None = Field(None, pattern=EMAIL_PATTERN, max_length=254)
    temporary_password: bool = False


class OrganizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are refused, never ignored
    name: str = Field(pattern=NAME_PATTERN, description=NAME_RULE)
    display_name: str = Field("", max_length=200)
    admins: list[FirstAdmin] = Field(default_factory=list, max_length=10,
                                     description="Users created with the organization, with roles org-admin and user.")


class OrganizationOut(BaseModel):
    id: str
    name: str
    display_name: str
    created_at: datetime
    members: int | None = None
    clients: int | None = None
    servers: int | None = None


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are refused, never ignored
    name: str = Field(pattern=NAME_PATTERN, description=NAME_RULE + "; the client id is <organization>-<name>")
    description: str = Field("", max_length=500)


class ClientOut(BaseModel):
    id: str
    client_id: str
    description: str
    created_at: datetime
    client_secret: str | None = Field(None, description="Shown once, when the client is created.")
    token_url: str | None = None


class ServerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are refused, never ignored
    name: str = Field(pattern=NAME_PATTERN, description=NAME_RULE)
    endpoint_url: str = Field(pattern=URL_PATTERN, max_length=500, description="http(s)://host[:port][/path]")
    region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{1,63}$")


class ServerOut(BaseModel):
    id: str
    name: str
    endpoint_url: str
    region: str
    created_at: datetime


# --- helpers --------------------------------------------------------------------------------------------
def adopt_keycloak_organizations(session: Session, ident: Identity) -> None:
    """Rows for organizations that so far exist only as Keycloak groups (e.g. imported with the realm)."""
    orgs = ident.organizations(fresh=True)
    known = set(session.scalars(select(Organization.name)))
    for name, group_id in orgs.items():
        if name not in known:
            session.add(Organization(name=name, display_name=name, keycloak_group_id=group_id))
    if orgs.keys() - known:
        try:
            session.commit()
        except IntegrityError:  # a concurrent request adopted them first
            session.rollback()


def _org(session: Session, organization_id: str) -> Organization:
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound("organization not found")
    return org


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; the API always answers in UTC with an offset."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _org_out(org: Organization, **counts) -> OrganizationOut:
    return OrganizationOut(id=org.id, name=org.name, display_name=org.display_name, created_at=_utc(org.created_at),
                           **counts)


# --- organizations --------------------------------------------------------------------------------------
@router.get("/", response_model=list[OrganizationOut], summary="All organizations")
def list_organizations(session: Session = Depends(get_session, scope="function"), ident: Identity = Depends(identity)):
    adopt_keycloak_organizations(session, ident)
    return [_org_out(o) for o in session.scalars(select(Organization).order_by(Organization.name))]


@router.post("/", response_model=OrganizationOut, status_code=201, summary="Create an organization")
def create_organization(body: OrganizationCreate, request: Request, session: Session = Depends(get_session, scope="function"),
                        ident: Identity = Depends(identity), hub_: Hub = Depends(hub)):
    adopt_keycloak_organizations(session, ident)
    if session.scalar(select(Organization).where(Organization.name == body.name)) is not None:
        raise Conflict(f"organization {body.name!r} already exists")
    for admin in body.admins:
        if ident.user_by_username(admin.username) is not None:
            raise Conflict(f"username {admin.username!r} is taken")
    if any(g["name"] == body.name for g in ident.call(ident.admin.get_groups, {"search": body.name, "exact": "true"},
                                                      what="groups")):
        raise Conflict(f"a Keycloak group named {body.name!r} already exists")
    label = f"creating organization {body.name!r}"
    group_id = ident.call(ident.admin.create_group, {"name": body.name, "attributes": {ORG_ATTRIBUTE: ["true"]}},
                          what=f"organization {body.name!r}")
    undo = [("delete the Keycloak group", lambda: ident.admin.delete_group(group_id))]
    org = Organization(name=body.name, display_name=body.display_name or body.name, keycloak_group_id=group_id)
    try:
        session.add(org)
        session.flush()
        hub_.ensure_group(body.name)
        undo.append(("delete the hub group", lambda: hub_.delete_group(body.name)))
        roles = [ident.call(ident.admin.get_realm_role, r, what=f"role {r}") for r in ("org-admin", "user")]
        for admin in body.admins:
            payload = {"username": admin.username, "enabled": True, "firstName": admin.username,
                       "lastName": body.name, "emailVerified": bool(admin.email),
                       "attributes": {"heroes.organization": [body.name]},
                       "credentials": [{"type": "password", "value": admin.password,
                                        "temporary": admin.temporary_password}]}
            if admin.email:
                payload["email"] = admin.email
            user_id = ident.call(ident.admin.create_user, payload, exist_ok=False, what=f"user {admin.username!r}")
            undo.append((f"delete user {admin.username}", lambda u=user_id: ident.admin.delete_user(u)))
            ident.call(ident.admin.group_user_add, user_id, group_id, what="organization group")
            ident.call(ident.admin.assign_realm_roles, user_id, roles, what="role")
        for hook, undo_hook in lifecycle.CREATED:
            hook(session, org)
            if undo_hook is not None:
                undo.append((f"undo {getattr(hook, '__name__', 'hook')}", lambda u=undo_hook: u(session, org)))
        session.commit()
    except Exception as exc:
        session.rollback()
        raise failure(label, exc, undo) from None
    finally:
        ident.forget_organizations()
    forget_principals(request)
    return _org_out(org)


@router.get("/{organization_id}", response_model=OrganizationOut, summary="An organization")
def get_organization(organization_id: str, session: Session = Depends(get_session, scope="function"),
                     ident: Identity = Depends(identity)):
    org = _org(session, organization_id)
    members = len(ident.call(ident.admin.get_group_members, org.keycloak_group_id, {"max": 10000},
                             what="organization")) if org.keycloak_group_id else 0
    return _org_out(org, members=members, clients=len(org.clients), servers=len(org.servers))


@router.delete("/{organization_id}", status_code=204, summary="Delete an organization")
def delete_organization(organization_id: str, request: Request,
                        force: bool = Query(False, description="Delete even if the organization has running work."),
                        session: Session = Depends(get_session, scope="function"), ident: Identity = Depends(identity),
                        hub_: Hub = Depends(hub)):
    """Everything the organization owns goes: its Keycloak group and subgroups, OAuth clients, the accounts
    of people who belong to no other organization (platform admins stay), its rows, its hub groups."""
    org = _org(session, organization_id)
    work = lifecycle.running_work(session, org)
    if work and not force:
        raise Conflict(f"organization {org.name!r} has running work ({'; '.join(work[:5])}); "
                       "stop it first or delete with force=true")
    name = org.name
    subgroups = []
    if org.keycloak_group_id:
        try:
            subgroups = [g["name"] for g in ident.call(ident.admin.get_group_children, org.keycloak_group_id,
                                                       {"max": 10000}, what="organization")]
        except NotFound:
            subgroups = []
    client_ids = [c.keycloak_id for c in org.clients if c.keycloak_id]
    members = _members_to_delete(ident, org)
    try:
        for hook in lifecycle.DELETED:
            hook(session, org)
        session.delete(org)
        session.flush()
    except Exception as exc:
        session.rollback()
        raise failure(f"deleting organization {name!r}", exc, []) from None
    # outside systems last: the database change is still uncommitted and is rolled back if Keycloak fails
    try:
        for kc_id in client_ids:
            try:
                ident.call(ident.admin.delete_client, kc_id, what="client")
            except NotFound:
                pass
        if org.keycloak_group_id:
            try:
                ident.call(ident.admin.delete_group, org.keycloak_group_id, what="organization")
            except NotFound:
                pass
        for user_id in members:
            try:
                ident.call(ident.admin.delete_user, user_id, what="user")
            except NotFound:
                pass
    except ApiError as exc:
        session.rollback()
        raise ApiError(f"deleting organization {name!r} failed: {exc.detail}", status=exc.status) from None
    session.commit()
    ident.forget_organizations()
    forget_principals(request)
    try:
        for group in [name, *subgroups]:
            hub_.delete_group(group)
    except ApiError as exc:
        raise Incomplete(f"organization {name!r} deleted, but the hub kept its groups: {exc.detail}") from None


def _members_to_delete(ident: Identity, org: Organization) -> list[str]:
    """People whose account belongs to this organization only (platform admins and other orgs' users stay)."""
    if not org.keycloak_group_id:
        return []
    try:
        users = ident.call(ident.admin.get_group_members, org.keycloak_group_id, {"max": 10000}, what="organization")
    except NotFound:
        return []
    orgs = set(ident.organizations())
    doomed = []
    for user in users:
        if user.get("username", "").startswith("service-account-"):
            continue  # goes with its client
        if "platform-admin" in ident.user_realm_roles(user["id"]):
            continue
        other = {p.strip("/").split("/")[0] for p in ident.user_group_paths(user["id"])} & orgs - {org.name}
        if not other:
            doomed.append(user["id"])
    return doomed


# --- OAuth clients --------------------------------------------------------------------------------------
def _client_out(client: OrgClient, ident: Identity, secret: str | None = None) -> ClientOut:
    return ClientOut(id=client.id, client_id=client.client_id, description=client.description,
                     created_at=_utc(client.created_at), client_secret=secret,
                     token_url=f"{ident.settings.issuer}/protocol/openid-connect/token")


def _client_representation(client_id: str, org: Organization, description: str) -> dict:
    mapper_config = {"id.token.claim": "true", "access.token.claim": "true", "userinfo.token.claim": "true",
                     "introspection.token.claim": "true"}
    return {
        "clientId": client_id, "name": f"{org.name} script client", "description": description,
        "protocol": "openid-connect", "enabled": True, "publicClient": False,
        "clientAuthenticatorType": "client-secret", "serviceAccountsEnabled": True,
        "standardFlowEnabled": False, "directAccessGrantsEnabled": False, "implicitFlowEnabled": False,
        "attributes": {ORG_ATTRIBUTE: org.name},
        "protocolMappers": [
            {"name": "groups", "protocol": "openid-connect", "protocolMapper": "oidc-group-membership-mapper",
             "config": {"claim.name": "groups", "full.path": "false", **mapper_config}},
            {"name": "realm roles", "protocol": "openid-connect", "protocolMapper": "oidc-usermodel-realm-role-mapper",
             "config": {"claim.name": "roles", "jsonType.label": "String", "multivalued": "true", **mapper_config}},
        ],
    }


@router.get("/{organization_id}/clients/", response_model=list[ClientOut], summary="OAuth clients of an organization")
def list_clients(organization_id: str, session: Session = Depends(get_session, scope="function"), ident: Identity = Depends(identity)):
    org = _org(session, organization_id)
    return [_client_out(c, ident) for c in sorted(org.clients, key=lambda c: c.client_id)]


@router.post("/{organization_id}/clients/", response_model=ClientOut, status_code=201,
             summary="Create an OAuth client (client credentials) for an organization's scripts")
def create_client(organization_id: str, body: ClientCreate, request: Request, session: Session = Depends(get_session, scope="function"),
                  ident: Identity = Depends(identity)):
    org = _org(session, organization_id)
    client_id = f"{org.name}-{body.name}"
    if session.scalar(select(OrgClient).where(OrgClient.client_id == client_id)) is not None:
        raise Conflict(f"client {client_id!r} already exists")
    kc_id = ident.call(ident.admin.create_client, _client_representation(client_id, org, body.description),
                       what=f"client {client_id!r}")
    undo = [("delete the Keycloak client", lambda: ident.admin.delete_client(kc_id))]
    try:
        account = ident.call(ident.admin.get_client_service_account_user, kc_id, what="service account")
        ident.call(ident.admin.group_user_add, account["id"], org.keycloak_group_id, what="organization group")
        role = ident.call(ident.admin.get_realm_role, "user", what="role user")
        ident.call(ident.admin.assign_realm_roles, account["id"], [role], what="role")
        secret = ident.call(ident.admin.get_client_secrets, kc_id, what="client secret")["value"]
        client = OrgClient(organization_id=org.id, client_id=client_id, keycloak_id=kc_id,
                           description=body.description)
        session.add(client)
        session.commit()
    except Exception as exc:
        session.rollback()
        raise failure(f"creating client {client_id!r}", exc, undo) from None
    request.app.state.authenticator.principals.clear()  # the accepted audiences include the new client now
    return _client_out(client, ident, secret)


def _client(session: Session, organization_id: str, client_id: str) -> OrgClient:
    org = _org(session, organization_id)
    client = session.get(OrgClient, client_id)
    if client is None or client.organization_id != org.id:
        raise NotFound("client not found")
    return client


@router.get("/{organization_id}/clients/{client_id}", response_model=ClientOut, summary="An OAuth client")
def get_client(organization_id: str, client_id: str, session: Session = Depends(get_session, scope="function"),
               ident: Identity = Depends(identity)):
    return _client_out(_client(session, organization_id, client_id), ident)


@router.delete("/{organization_id}/clients/{client_id}", status_code=204, summary="Delete an OAuth client")
def delete_client(organization_id: str, client_id: str, request: Request, session: Session = Depends(get_session, scope="function"),
                  ident: Identity = Depends(identity)):
    client = _client(session, organization_id, client_id)
    session.delete(client)
    session.flush()
    try:
        ident.call(ident.admin.delete_client, client.keycloak_id, what="client")
    except NotFound:
        pass  # already gone in Keycloak: drop the row anyway
    except ApiError:
        session.rollback()
        raise
    session.commit()
    request.app.state.authenticator.principals.clear()


# --- storage servers ------------------------------------------------------------------------------------
def _server_out(server: StorageServer) -> ServerOut:
    return ServerOut(id=server.id, name=server.name, endpoint_url=server.endpoint_url, region=server.region,
                     created_at=_utc(server.created_at))


@router.get("/{organization_id}/servers/", response_model=list[ServerOut],
            summary="Object-storage endpoints of an organization")
def list_servers(organization_id: str, session: Session = Depends(get_session, scope="function")):
    org = _org(session, organization_id)
    return [_server_out(s) for s in sorted(org.servers, key=lambda s: s.name)]


@router.post("/{organization_id}/servers/", response_model=ServerOut, status_code=201,
             summary="Register an object-storage endpoint for an organization")
def create_server(organization_id: str, body: ServerCreate, session: Session = Depends(get_session, scope="function")):
    org = _org(session, organization_id)
    if session.scalar(select(StorageServer).where(StorageServer.organization_id == org.id,
                                                  StorageServer.name == body.name)) is not None:
        raise Conflict(f"server {body.name!r} already exists in {org.name}")
    server = StorageServer(organization_id=org.id, name=body.name, endpoint_url=body.endpoint_url, region=body.region)
    session.add(server)
    session.commit()  # a concurrent twin: IntegrityError -> 409 (errors.py), the transaction rolled back
    return _server_out(server)


def _server(session: Session, organization_id: str, server_id: str) -> StorageServer:
    org = _org(session, organization_id)
    server = session.get(StorageServer, server_id)
    if server is None or server.organization_id != org.id:
        raise NotFound("server not found")
    return server


@router.get("/{organization_id}/servers/{server_id}", response_model=ServerOut, summary="An object-storage endpoint")
def get_server(organization_id: str, server_id: str, session: Session = Depends(get_session, scope="function")):
    return _server_out(_server(session, organization_id, server_id))


@router.delete("/{organization_id}/servers/{server_id}", status_code=204, summary="Remove an object-storage endpoint")
def delete_server(organization_id: str, server_id: str, session: Session = Depends(get_session, scope="function")):
    session.delete(_server(session, organization_id, server_id))
    session.commit()
