"""Unit tests of the Admin app's tabs with no kernel (ipywidgets' comm is a no-op outside one), against a fake
transport that answers like the service: groups appear at once, the Clusters tab's enrollment (fingerprint
confirmed or refused, test connection, edit, the in-use 409), number fields that refuse what they cannot hold,
and the Templates tab (errors at their line, the Submit form preview, publish, versions, withdraw). The
template check answers with the service's own checker (heroes_service.workflows.template_errors)."""
from __future__ import annotations

import json
import re
import uuid

from heroes_service.workflows.template_errors import check_source
from heroes_widgets.admin import AdminApp
from heroes_widgets.admin_clusters import normalised_fingerprint
from heroes_widgets.admin_forms import EnergyProfileForm, NumberField, PriceModelForm
from heroes_widgets.admin_templates import STARTER
from heroes_widgets.api_client import ApiClient

BASE = "http://hub.example:8000/services/heroes/api/v1"
FP = "SHA256:" + "A" * 43
OTHER_FP = "SHA256:" + "B" * 43
CHECKS = ["host_key", "authentication", "slurm", "partitions", "work_dir", "sftp", "container_runtime", "sbatch",
          "accounting"]


class FakeResponse:
    def __init__(self, status: int, body=None):
        self.status_code = status
        self.content = json.dumps(body).encode() if body is not None else b""
        self.reason = "Fake"

    def json(self):
        return json.loads(self.content)


class FakeAdminApi:
    """A requests.Session stand-in for the admin routes; ``stale_lists`` answers list reads from before the
    last write (what a cached read right after a write can do)."""

    def __init__(self):
        self.groups: dict[str, dict] = {}
        self.clusters: dict[str, dict] = {}
        self.templates: list[dict] = []
        self.busy: set[str] = set()
        self.calls: list[tuple[str, str, dict | None]] = []
        self.stale_lists = False

    def request(self, method, url, params=None, json=None, **_kw):
        path = url.split("/api/v1", 1)[1]
        self.calls.append((method, path, json))
        handler = self.route(method, path, params or {}, json or {})
        return FakeResponse(*handler) if isinstance(handler, tuple) else FakeResponse(200, handler)

    def route(self, method, path, params, body):  # noqa: C901 - one fake service, read top to bottom
        org = "/organization/admin"
        if path == "/organization/auth/me":
            return {"username": "alice", "organization": "acme", "roles": ["org-admin", "user"], "groups": []}
        if path == f"{org}/users/":
            return [{"id": "u1", "username": "alice"}, {"id": "u2", "username": "bob"}]
        if path == f"{org}/roles/":
            return [{"name": "user", "members": ["alice", "bob"]}, {"name": "org-admin", "members": ["alice"]}]
        if path == f"{org}/groups/" and method == "GET":
            return [] if self.stale_lists else [dict(g, members=None) for g in self.groups.values()]
        if path == f"{org}/groups/" and method == "POST":
            group = {"id": str(uuid.uuid4()), "name": body["name"], "hub_group": f"acme.{body['name']}", "members": []}
            self.groups[group["id"]] = group
            return 201, group
        if m := re.fullmatch(f"{org}/groups/([^/]+)", path):
            group = self.groups[m.group(1)]
            if method == "DELETE":
                del self.groups[m.group(1)]
                return 204, None
            if method == "PATCH":
                group["members"] = sorted(set(group["members"]) | set(body["add_members"]))
            return group
        answer = self.cluster_route(method, path, body)
        return answer if answer is not None else self.template_route(method, path, params, body)

    def cluster_route(self, method, path, body):
        admin = "/organization/admin/cluster/"
        if path == f"{admin}host-key":
            return {"host": body["host"], "port": body["port"], "key_type": "ssh-ed25519", "fingerprint": FP,
                    "public_key": "ssh-ed25519 AAAA"}
        if path == admin and method == "GET":
            return [] if self.stale_lists else list(self.clusters.values())
        if path == admin and method == "POST":
            if normalised_fingerprint(body["host_key_fingerprint"]) != FP:
                return 409, {"detail": "presents another host key; nothing was enrolled"}
            cluster = dict(body, id=str(uuid.uuid4()), host_key_fingerprint=FP, slurm_version="24.05",
                           partitions=[{"name": "compute", "default": True}], organization="acme")
            self.clusters[cluster["id"]] = cluster
            return 201, cluster
        m = re.fullmatch(f"{admin}([^/]+)(/readiness|/partitions)?", path)
        if not m:
            return None
        cluster = self.clusters[m.group(1)]
        if m.group(2) == "/readiness":
            return {"cluster": cluster["name"], "login": "alice", "identity_mode": "per-user", "ok": True,
                    "checks": [{"name": n, "ok": True, "detail": f"{n} fine", "seconds": 0.1} for n in CHECKS]}
        if m.group(2) == "/partitions":
            return [{"name": "compute", "default": True}, {"name": "gpu", "default": False}]
        if method == "DELETE":
            if cluster["id"] in self.busy:
                return 409, {"detail": f"cluster {cluster['name']!r} still runs work: instance x (RUNNING) of bob. "
                                       "Cancel it first"}
            del self.clusters[cluster["id"]]
            return 204, None
        if method == "PATCH":
            cluster.update({k: v for k, v in body.items() if k != "partitions"})
            if "partitions" in body:
                cluster["partitions"] = [{"name": n, "default": n == "compute"} for n in body["partitions"]]
        return cluster

    def template_route(self, method, path, params, body):
        admin, users = "/organization/admin/workflow/template", "/organization/workflow/template"
        if path == f"{admin}/check":
            template, errors = check_source(body["source"])
            if template is None:
                return {"ok": False, "errors": [e.as_dict() for e in errors]}
            version = 1 + sum(1 for t in self.templates if t["name"] == template.name)
            return {"ok": True, "errors": [], "name": template.name, "title": template.title,
                    "description": template.description, "next_version": version,
                    "parameters": template.form_schema(), "steps": [s.name for s in template.ordered_steps()]}
        if path == admin and method == "POST":
            template, _errors = check_source(body["source"])
            row = {"id": uuid.uuid4().hex, "name": template.name, "title": template.title, "source": body["source"],
                   "version": 1 + sum(1 for t in self.templates if t["name"] == template.name),
                   "created_by": "alice", "created_at": "2026-12-05T09:00:00"}
            self.templates.append(row)
            return 201, row
        if path == users:
            return [] if self.stale_lists else sorted(self.templates, key=lambda t: (t["name"], -t["version"]))
        m = re.fullmatch(f"({admin}|{users})/([0-9a-f]+)", path)
        if m and method == "DELETE":
            self.templates = [t for t in self.templates if t["id"] != m.group(2)]
            return 204, None
        if m:
            return next(t for t in self.templates if t["id"] == m.group(2))
        return 404, {"detail": f"no fake route for {method} {path}"}


def admin_app():
    api = FakeAdminApi()
    return AdminApp(ApiClient(base_url=BASE, token="t", session=api)), api


# --- groups ------------------------------------------------------------------------------------------------
def test_a_created_group_is_chosen_at_once_even_when_the_list_read_is_stale():
    app, api = admin_app()
    assert [app.tabs.get_title(i) for i in range(len(app.tabs.children))] == \
        ["Users", "Groups", "Roles", "Clusters", "Templates"]
    people = app.people
    assert "no group yet" in people.group_members.value
    api.stale_lists = True
    group = people.create_group("physics")
    assert "group physics created" in app.status.value
    assert people.group_pick.value == group["id"] and ("physics", group["id"]) in people.group_pick.options
    people.change_members(people.group_pick.value, add=["bob"])
    assert "bob added to physics" in app.status.value and "bob" in people.group_members.value


def test_a_group_is_deleted_after_confirmation():
    app, api = admin_app()
    people = app.people
    first, second = people.create_group("alpha-team"), people.create_group("beta-team")
    people.ask_delete_group(second["id"])
    assert people.delete_confirm.layout.display is None and "beta-team" in people.delete_question.value
    assert people.delete_group(second["id"])
    assert "group beta-team deleted" in app.status.value
    assert list(api.groups) == [first["id"]] and people.group_pick.options == (("alpha-team", first["id"]),)
    assert people.delete_confirm.layout.display == "none"


# --- number fields ------------------------------------------------------------------------------------------
def test_number_fields_refuse_what_they_cannot_hold_and_keep_the_text():
    port = NumberField("Port", "port", minimum=1, maximum=65535, integer=True)
    for typed, problem in (("12.7", "not a whole number"), ("1e30", "not a whole number"), ("", "required"),
                           ("70000", "at most 65535"), ("0", "at least 1")):
        port.input.value = typed
        assert port.value is None and problem in port.message.value and port.input.value == typed
    port.input.value = "2221"
    assert port.value == 2221 and port.message.value == ""
    speed = NumberField("Speed", "relative_speed", above=0, maximum=1000)
    for typed, problem in (("0", "must be above 0"), ("1e30", "at most 1000"), ("nan", "finite"),
                           ("1,5", "use a dot")):
        speed.input.value = typed
        assert speed.value is None and problem in speed.message.value


def test_price_and_energy_forms_mark_every_wrong_field():
    price = PriceModelForm()
    price.currency.input.value = "eur"
    price.rates["per_core_hour"].input.value = "-1"
    assert price.value() is None
    assert "three capital letters" in price.currency.message.value
    assert "at least 0" in price.rates["per_core_hour"].message.value
    price.set({"kind": "on-premises", "currency": "EUR", "per_core_hour": 0.02, "per_kwh": 0.25})
    assert price.value() == {"kind": "on-premises", "currency": "EUR", "per_core_hour": 0.02, "per_node_hour": 0,
                             "per_gpu_hour": 0, "per_gb_memory_hour": 0, "per_kwh": 0.25}
    price.kind.value = "cloud"
    assert price.on_premises.layout.display == "none" and price.value() is None  # no instance type yet
    energy = EnergyProfileForm()
    energy.fields["pue"].input.value = "0.5"
    energy.freqs.value = "2400000, 99"
    assert energy.value() is None and "at least 1" in energy.fields["pue"].message.value
    assert "99" in energy.freqs_message.value
    energy.fields["pue"].input.value = "1.3"
    energy.freqs.value = "1800000, 2400000"
    assert energy.value()["cpu_freqs_khz"] == [1800000, 2400000] and energy.value()["pue"] == 1.3


# --- clusters ----------------------------------------------------------------------------------------------
def enroll(app, name="gamma", fingerprint=FP):
    tab = app.clusters
    tab.host.input.value = "127.0.0.1"
    tab.port.input.value = "2221"
    tab.fetch_key()
    assert FP in tab.key_info.value and tab.confirm_box.layout.display is None
    tab.fingerprint.value = fingerprint
    if not tab.confirm_key(tab.fingerprint.value):
        return None
    tab.enroll_form.name.input.value = name
    tab.enroll_form.speed.input.value = "1.5"
    return tab.enroll()


def test_a_wrong_fingerprint_is_refused_clearly_and_nothing_is_enrolled():
    app, api = admin_app()
    assert enroll(app, fingerprint=OTHER_FP) is None
    tab = app.clusters
    assert "Refused" in tab.verdict.value and FP in tab.verdict.value and OTHER_FP in tab.verdict.value
    assert tab.settings_box.layout.display == "none" and api.clusters == {}


def test_enrollment_with_the_confirmed_key_then_test_connection_edit_and_remove():
    app, api = admin_app()
    tab = app.clusters
    cluster_id = enroll(app, fingerprint=FP.removeprefix("SHA256:") + "=")  # as ssh-keygen may print it
    sent = next(body for method, path, body in api.calls if method == "POST" and path == "/organization/admin/cluster/")
    assert sent["host_key_fingerprint"] == FP and sent["port"] == 2221 and sent["relative_speed"] == 1.5
    assert sent["price_model"]["kind"] == "on-premises" and sent["energy_profile"]["pue"] == 1
    assert tab.pick.value == cluster_id and [r["name"] for r in tab.table.rows] == ["gamma"]
    for name in CHECKS:
        assert f"heroes-admin-check-{name}" in tab.checks.value
    tab.start_edit(cluster_id)
    form = tab.edit_form
    assert form.partitions.options == ("compute", "gpu") and form.partitions.value == ("compute",)
    form.speed.input.value = "abc"
    tab.save_edit()
    assert "fix the fields" in app.status.value and "not a number" in form.speed.message.value
    form.speed.input.value = "2"
    form.partitions.value = ("compute", "gpu")
    tab.save_edit()
    patched = api.calls[-2][2]
    assert patched["relative_speed"] == 2 and patched["partitions"] == ["compute", "gpu"]
    assert "cluster gamma saved" in app.status.value and api.clusters[cluster_id]["relative_speed"] == 2
    api.busy.add(cluster_id)
    tab.ask_remove(cluster_id)
    assert not tab.remove(cluster_id)
    assert "gamma was not removed" in app.status.value and "still runs work" in app.status.value
    api.busy.clear()
    assert tab.remove(cluster_id) and api.clusters == {} and "removed" in app.status.value


# --- templates ---------------------------------------------------------------------------------------------
def test_a_template_with_an_error_shows_its_line_and_is_not_published():
    app, api = admin_app()
    tab = app.templates
    assert "Preview" in tab.preview_title.value and len(tab.preview.children) == 2  # the starter's two fields
    tab.editor.value = STARTER.replace("max: 10", "max: ten")
    assert "line 8, column" in tab.errors.value and "max" in tab.errors.value
    assert "^" in tab.errors.value and tab.preview.children == ()
    assert tab.publish() is None and "not published" in app.status.value and api.templates == []


def test_publish_versions_preview_and_withdraw():
    app, api = admin_app()
    tab = app.templates
    first = tab.publish()
    assert first["version"] == 1 and "published hello v1" in app.status.value
    assert "hello v2" in tab.errors.value  # the next publication's version
    labels = [w.children[0].description for w in tab.preview.children]
    assert labels == ["Who to greet", "How many times"]
    tab.editor.value = STARTER.replace("default: 2}", "default: 3}")
    second = tab.publish()
    assert second["version"] == 2 and [r["version"] for r in tab.table.rows] == [2, 1]
    tab.load(first["id"])
    assert tab.editor.value == STARTER
    tab.withdraw(first["id"])
    assert "hello v1 withdrawn" in app.status.value and [t["version"] for t in api.templates] == [2]
    assert tab.version_pick.options == (("hello v2", second["id"]),)


def test_what_the_app_just_did_shows_even_when_the_next_list_read_is_stale():
    """The service commits as its answer leaves: a list read right after may miss the change."""
    app, api = admin_app()
    api.stale_lists = True
    cluster_id = enroll(app)
    tab = app.clusters
    assert [r["name"] for r in tab.table.rows] == ["gamma"] and tab.pick.value == cluster_id
    assert "heroes-admin-check-sbatch" in tab.checks.value  # the test connection found the cluster
    tab.ask_remove(cluster_id)
    assert tab.remove(cluster_id) and tab.table.rows == [] and tab.pick.options == ()
    templates = app.templates
    published = templates.publish()
    assert templates.version_pick.value == published["id"] and [r["version"] for r in templates.table.rows] == [1]
