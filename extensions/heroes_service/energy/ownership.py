"""Whose energy rows are whose: the owner of an ingest and the rows a caller may see.

Ownership never comes from a file: the rows of a request belong to the caller's organization, and to the
caller (an org admin may name another user of the organization). A workflow instance named by the request or by
the file's ``HEROES_INSTANCE_WORKFLOW_ID`` must be visible to the caller; it then supplies the template, the
cluster and the owner.

Visibility: a user sees their own rows; an org admin their organization's; a platform admin everything.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from ..auth import Principal
from ..errors import Forbidden, Invalid, NotFound
from .models import EnergyRecord

#: the clusters API's naming rule (an ingest's cluster is one of those, or an outside cluster's label)
CLUSTER_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}[a-z0-9]")
CLUSTER_RULE = "2-32 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'"


@dataclass
class Owner:
    organization: str
    username: str
    cluster: str
    instance_id: str = ""
    template: str = ""


def visible(principal: Principal, model=EnergyRecord):
    """The SQL condition of the rows ``principal`` may see."""
    if principal.is_platform_admin:
        return True
    if principal.organization is None:
        return model.username == principal.username and model.organization == ""
    if principal.is_org_admin:
        return model.organization == principal.organization
    return and_(model.organization == principal.organization, model.username == principal.username)


def _check_cluster(session: Session, organization: str, cluster: str) -> None:
    """A cluster name must follow the cluster naming rule and may not be another organization's enrolled
    cluster that yours does not have (outside clusters, never enrolled here, are labels: allowed)."""
    from ..clusters.models import Cluster, cluster_by_name

    if not cluster:
        return
    if not CLUSTER_NAME.fullmatch(cluster):
        raise Invalid(f"cluster {cluster[:70]!r} is not a cluster name", rule=CLUSTER_RULE)
    if cluster_by_name(session, organization, cluster) is None and session.scalars(
            select(Cluster.id).where(Cluster.name == cluster).limit(1)).first() is not None:
        raise Invalid(f"cluster {cluster!r} is not one of your organization's clusters",
                      rule="energy is recorded for your organization's clusters")


def resolve_owner(session: Session, principal: Principal, cluster: str, instance_id: str, user: str,
           is_member: Callable[[str], bool] | None = None) -> Owner:
    """Who the ingested rows belong to (see the module docstring). ``is_member(username)`` says whether a user
    named by ``user=`` belongs to the caller's organization (the API asks Keycloak)."""
    if principal.organization is None:
        raise Forbidden("you belong to no organization: energy is recorded per organization")
    username = principal.username
    if user and user != principal.username:
        if not principal.is_org_admin:
            raise Forbidden("only an org admin may record energy for another user")
        if is_member is None or not is_member(user):
            raise Invalid(f"user {user[:70]!r} is not a member of your organization",
                          rule="energy belongs to a user of your organization")
        username = user
    _check_cluster(session, principal.organization, cluster)
    owner = Owner(principal.organization, username, cluster)
    if instance_id:
        apply_instance(session, principal, owner, instance_id)
    return owner


def apply_instance(session: Session, principal: Principal, owner: Owner, instance_id: str) -> None:
    """Take template, cluster and owner from a workflow instance the caller may see (404 otherwise)."""
    from ..workflows.models import WorkflowInstance

    inst = session.get(WorkflowInstance, instance_id) if len(instance_id) <= 32 else None
    if inst is None:
        owner.instance_id = instance_id  # an instance outside this gateway (e.g. a manual run): kept as a label
        return
    if inst.organization != principal.organization or (
            not principal.is_org_admin and inst.username != principal.username):
        raise NotFound(f"workflow instance {instance_id!r} not found")
    owner.instance_id, owner.template, owner.username = inst.id, inst.template_name, inst.username
    owner.cluster = owner.cluster or inst.cluster_name
