"""The :class:`Client`: one user's handle on the gateway (clusters, templates, decisions, instances, data, energy).

The main job in three lines:

    import heroes_sdk
    heroes = heroes_sdk.connect()               # inside a hub server: no arguments needed
    run = heroes.submit("heat-diffusion", {"points": 200}, cluster="auto").wait()

Why a submit is never sent twice: the service records the instance before it answers, so a submit whose answer
was lost may already be running. After such a loss (no answer, or the proxy's 502/504) the client looks for the
instance by its label among yours instead of sending again, and raises :class:`SubmitUncertain` if it cannot
tell. Reads are retried freely; see :mod:`heroes_sdk.session`.
"""
from __future__ import annotations

import re
import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from . import credentials
from .data import DataSpace
from .errors import HeroesError, NotFound, ServiceUnavailable, SubmitUncertain
from .instance import Instance
from .models import Cluster, DataObject, Decision, EnergyRecord, Me, Template
from .session import Session

WORKFLOW = "/organization/workflow"
DECISION = "/organization/decision"
TEMPLATE_ID = re.compile(r"[0-9a-f]{32}")

__all__ = ["Client", "connect"]


class Client:
    """A connection to the HEROES API as one user.

    With no arguments it finds its own way in (see :mod:`heroes_sdk.credentials`): the server's token inside a
    JupyterHub server of the gateway, else the login ``heroes login`` stored. Outside the hub give ``url`` (the
    hub's address, e.g. ``http://127.0.0.1:8000``, or the API's) and one of ``token`` (a JupyterHub API token),
    ``bearer`` (a Keycloak access token) or ``username`` + ``password``.

    ``transport`` is any object with ``requests.Session.request``'s signature (tests pass fakes); ``retries``
    bounds the attempts of a retried call.
    """

    def __init__(self, url: str | None = None, *, token: str | None = None, bearer: str | None = None,
                 username: str | None = None, password: str | None = None, transport=None,
                 timeout: float = 120.0, retries: int = 3, env: dict | None = None):
        base_url, credential = credentials.resolve(url, token=token, bearer=bearer, username=username,
                                                   password=password, env=env, transport=transport)
        self.session = Session(base_url, credential, transport=transport, timeout=timeout, retries=retries)
        self.data = DataSpace(self.session)
        self.recover_s = 30.0

    @property
    def url(self) -> str:
        """The API's base URL."""
        return self.session.base_url

    def __repr__(self) -> str:
        return f"<heroes_sdk.Client {self.url}>"

    # --- who, where, what ------------------------------------------------------------------------------
    def me(self) -> Me:
        """The user this client acts as (a wrong or expired credential raises AuthenticationError here)."""
        return Me.from_api(self.session.get("/organization/auth/me"))

    def clusters(self) -> list[Cluster]:
        """The clusters of your organization you may submit to, with partitions and prices."""
        return [Cluster.from_api(c) for c in self.session.get("/organization/cluster/")]

    def cluster(self, name: str) -> Cluster:
        """One of your organization's clusters by name or id."""
        for c in self.clusters():
            if name in (c.name, c.id):
                return c
        raise NotFound(f"cluster {name!r} not found among your organization's clusters", status=404)

    def templates(self, all_versions: bool = False) -> list[Template]:
        """Your organization's templates (latest versions unless ``all_versions``), without parameters."""
        return [Template.from_api(t) for t in self.session.get(f"{WORKFLOW}/template",
                                                               all_versions="true" if all_versions else None)]

    def template(self, name: str, version: int | None = None) -> Template:
        """One template with its parameter schema: by id, or by name (the latest version unless ``version``)."""
        if TEMPLATE_ID.fullmatch(name):
            return Template.from_api(self.session.get(f"{WORKFLOW}/template/{name}"))
        versions = [t for t in self.templates(all_versions=True)
                    if t.name == name and (version is None or t.version == version)]
        if not versions:
            raise NotFound(f"template {name!r}" + (f" version {version}" if version else "") + " not found",
                           status=404)
        latest = max(versions, key=lambda t: t.version)
        return Template.from_api(self.session.get(f"{WORKFLOW}/template/{latest.id}"))

    # --- decide and submit -----------------------------------------------------------------------------
    def policies(self) -> dict:
        """The placement policies (name, title, description, weights) and the ``default`` one."""
        return self.session.get(f"{DECISION}/policies")

    def decide(self, template: str, parameters: dict | None = None, *, policy: str | None = None,
               deadline_s: float | None = None, budget: float | None = None, currency: str | None = None,
               clusters: list[str] | None = None, version: int | None = None) -> Decision:
        """Where ``template`` with ``parameters`` should run: every candidate cluster's predicted wait, run
        time, energy and cost, the choice under ``policy`` (performance, energy, cost, balanced) and the
        constraints, and right-sizing. Nothing is submitted."""
        body: dict[str, Any] = {"template": template, "parameters": wire_parameters(parameters)}
        optional = {"policy": policy, "deadline_s": deadline_s, "budget": budget, "currency": currency,
                    "clusters": clusters, "version": version}
        body.update({k: v for k, v in optional.items() if v is not None})
        answer = self.session.call("POST", f"{DECISION}/decide", json=body, retry=True)  # writes nothing
        return Decision.from_api(answer, template=template, parameters=parameters)

    def submit(self, template: "str | Decision", parameters: dict | None = None, *, cluster: str = "auto",
               name: str | None = None, accept_rightsizing: bool = False,
               cpu_freq_khz: int | None = None) -> Instance:
        """Submit a template (name or id) with parameters; the new :class:`Instance` (call ``.wait()``).

        ``cluster="auto"`` lets the decision module choose. A :class:`Decision` may be passed instead of a
        template: its template, parameters and choice are used. ``name`` labels the instance (default:
        the template's name and a random suffix, which is also how a lost answer is recovered).
        """
        if isinstance(template, Decision):
            if template.choice is None:
                raise HeroesError(f"the decision chose no cluster: {template.reason}")
            parameters = template.parameters if parameters is None else parameters
            cluster, template = template.choice, template.template
        label = name if name is not None else f"{template}-{secrets.token_hex(4)}"
        body: dict[str, Any] = {"parameters": wire_parameters(parameters), "cluster": cluster, "name": label,
                                "wait": False, "accept_rightsizing": accept_rightsizing}
        body["template_id" if TEMPLATE_ID.fullmatch(template) else "template"] = template
        if cpu_freq_khz is not None:
            body["cpu_freq_khz"] = cpu_freq_khz
        started = datetime.now(timezone.utc)
        try:
            answer = self.session.call("POST", f"{WORKFLOW}/submit", json=body, retry=False)
        except ServiceUnavailable as exc:
            if exc.status not in (0, 502, 504):
                raise  # the service itself answered 503 before recording anything
            return self._recover_submit(label, template, started, exc)
        return Instance.from_api(answer, client=self)

    def _recover_submit(self, label: str, template: str, started: datetime, cause: HeroesError) -> Instance:
        """After a lost answer: the instance with this label created since the submit began, if it appears."""
        deadline = time.monotonic() + self.recover_s
        since = started - timedelta(minutes=5)
        while True:
            try:
                for inst in self.instances(limit=50):
                    created = inst.created_at
                    if created is not None and created.tzinfo is None:
                        created = created.replace(tzinfo=timezone.utc)
                    if inst.name == label and (created is None or created >= since):
                        return self.instance(inst.id)
            except ServiceUnavailable:
                pass
            if time.monotonic() >= deadline:
                raise SubmitUncertain(
                    f"the answer to the submit of {template!r} was lost ({cause.detail}) and no instance named "
                    f"{label!r} appeared; it was NOT sent again. Check 'heroes status' before submitting again",
                    label)
            time.sleep(2.0)

    # --- instances -------------------------------------------------------------------------------------
    def instances(self, state: str | None = None, limit: int = 200) -> list[Instance]:
        """Your instances, newest first (summaries: call ``refresh()`` on one for steps and outputs)."""
        return [Instance.from_api(i, client=self)
                for i in self.session.get(f"{WORKFLOW}/instance", state=state, limit=limit)]

    def instance(self, instance_id: str) -> Instance:
        """One instance with its steps, events and outputs (NotFound for another user's)."""
        return Instance.from_api(self.session.get(f"{WORKFLOW}/instance/{instance_id}"), client=self)

    def cancel(self, instance_id: str) -> Instance:
        """Cancel an instance (scancel every step); the refreshed instance."""
        return self.instance(instance_id).cancel()

    # --- energy ----------------------------------------------------------------------------------------
    def energy(self, *, instance_id: str | None = None, cluster: str | None = None, template: str | None = None,
               user: str | None = None, limit: int = 1000) -> list[EnergyRecord]:
        """Energy records of the steps you may see (yours; your organization's as an org admin)."""
        rows = self.session.get(f"{DECISION}/energy/steps", instance_id=instance_id, cluster=cluster,
                                template=template, user=user, limit=limit)["steps"]
        return [EnergyRecord.from_api(r) for r in rows]

    def energy_summary(self, group_by: str = "template", **filters) -> list[dict]:
        """Energy totals grouped by step, instance, user, organization, cluster or template."""
        return self.session.get(f"{DECISION}/energy/summary", group_by=group_by,
                                **{k: v for k, v in filters.items() if v not in (None, "")})["groups"]

    def energy_samples(self, job_id: int, step_id: int = 0, cluster: str = "") -> list[dict]:
        """Per-second power samples of one step (every node; empty when none were recorded)."""
        return self.session.get(f"{DECISION}/energy/samples", job_id=job_id, step_id=step_id,
                                cluster=cluster)["samples"]


def wire_parameters(parameters: dict | None) -> dict:
    """Parameter values as the API takes them: a :class:`DataObject` becomes ``{"bucket", "key"}``."""
    return {k: {"bucket": v.bucket, "key": v.key} if isinstance(v, DataObject) else v
            for k, v in (parameters or {}).items()}


def connect(url: str | None = None, **kwargs) -> Client:
    """A :class:`Client` (same arguments); ``heroes_sdk.connect()`` with none inside a hub server."""
    return Client(url, **kwargs)
