"""EAR file ingestion and energy queries through the real service app (``create_app`` on SQLite and on the
stack's PostgreSQL, a fresh database per backend) with real Keycloak tokens of the demo users:
bob and alice (org admin) in acme, carol in globex.

Shows: every EAR variant ingests (eacct, HEROES plugin, ours with estimates) and sample files too; energy
is DC power x time summed over the nodes of a step; malformed files are refused with file, line and column
and nothing is stored; duplicates are ignored; tenants see only what they may.
"""
from __future__ import annotations

import random

import pytest

from heroes_energy import columns as C
from heroes_energy import synthetic
from service_support import DEMO_PASSWORDS, Api, database_url, service  # noqa: F401

pytestmark = pytest.mark.integration
ING = "/organization/decision/ingest_ear_files"
STEPS = "/organization/decision/energy/steps"
SUMMARY = "/organization/decision/energy/summary"
SAMPLES = "/organization/decision/energy/samples"


@pytest.fixture(scope="module")
def users(service):
    return {name: service.login(name, DEMO_PASSWORDS[name]) for name in ("alice", "bob", "carol")}


def eacct_text(n_rows: int, seed: int) -> str:
    return "\n".join(synthetic.eacct_lines(n_rows, nodes_per_step=2, seed=seed)) + "\n"


def heroes_text(job: int, nodes: list[str], org: str = "acme", estimated: str | None = None) -> str:
    """The HEROES plugin layout (or ours, with EARLITE_ESTIMATED, when ``estimated`` is given)."""
    rng = random.Random(job)
    layout = C.earlite_app_columns() if estimated is not None else C.heroes_app_columns()
    lines = [C.SEP.join(layout)]
    for node in nodes:
        values = synthetic.ear_row_values(job, 0, node, rng, num_gpus=1)
        values.update(dict(zip(C.HEROES_ID_COLUMNS, ("inst-energy-1", "heat", "bob", org, "org-1"))))
        values["MAX_POWER_W"] = "500.0"
        values.update({name: "0.1" for name in C.PHASE_COLUMNS})
        if estimated is not None:
            values[C.ESTIMATED_COLUMN] = estimated
        lines.append(C.SEP.join(values[name] for name in layout))
    return "\n".join(lines) + "\n"


def expected_energy(text: str) -> dict[tuple[int, int], float]:
    """DC node power x time summed over nodes, per (job, step), straight from the file's text."""
    lines = text.strip().split("\n")
    names = lines[0].split(";")
    out: dict[tuple[int, int], float] = {}
    for line in lines[1:]:
        v = dict(zip(names, line.split(";")))
        key = (int(v["JOBID"]), int(v["STEPID"]))
        out[key] = out.get(key, 0.0) + float(v["DC_NODE_POWER_W"]) * float(v["TIME_SEC"])
    return out


def sample_text(job: int, node: str, seconds: int = 5) -> str:
    lines = [C.SEP.join(C.SAMPLE_COLUMNS)]
    for t in range(seconds):
        v = {name: "0" for name in C.SAMPLE_COLUMNS}
        v.update({"TIMESTAMP": str(1_700_000_000 + t), "ELAPSED_SEC": str(t), "NODENAME": node, "JOBID": str(job),
                  "STEPID": "0", "PCK_POWER_W": str(40 + t), "DC_NODE_POWER_W": str(100 + t),
                  "GPU_POWER_W_EACH": "", "GPU_FREQ_KHZ_EACH": "", C.ESTIMATED_COLUMN: "DC_NODE_POWER_W"})
        lines.append(C.SEP.join(v[name] for name in C.SAMPLE_COLUMNS))
    return "\n".join(lines) + "\n"


def ingest(api: Api, files: dict[str, str], **params):
    return api.post(ING, params=params, json={"files": [{"name": n, "content": c} for n, c in files.items()]})


def step_count(api: Api, **params) -> int:
    r = api.get(STEPS, params=params)
    assert r.status_code == 200, r.text
    return len(r.json()["steps"])


def test_every_variant_ingests_with_eacct_energy_and_duplicates_are_ignored(users):
    bob = users["bob"]
    eacct = eacct_text(4, seed=7)  # jobs 1 and 2, two nodes each
    heroes = heroes_text(5001, ["n1", "n2"])
    ours = heroes_text(5002, ["n1"], estimated="DC_NODE_POWER_W,PCK_POWER_W")
    r = ingest(bob, {"eacct.csv": eacct, "heroes.csv": heroes, "earlite.csv": ours,
                     "samples.csv": sample_text(5002, "n1")}, cluster="alpha")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["rows"], body["stored"], body["duplicates"], body["steps"]) == (7, 7, 0, 4)
    assert body["samples_stored"] == 5 and body["organization"] == "acme" and body["user"] == "bob"
    steps = {(s["job_id"], s["step_id"]): s for s in bob.get(STEPS, params={"cluster": "alpha"}).json()["steps"]}
    want = {**expected_energy(eacct), **expected_energy(heroes), **expected_energy(ours)}
    assert set(steps) == set(want)
    for key, energy in want.items():
        assert steps[key]["energy_j"] == pytest.approx(energy, rel=1e-6)
        assert steps[key]["username"] == "bob" and steps[key]["organization"] == "acme"
    assert steps[(1, 0)]["nodes"] == 2 and steps[(5001, 0)]["nodes"] == 2
    # the HEROES ids link steps to their instance and template; our estimates are marked as such
    assert (steps[(5001, 0)]["instance_id"], steps[(5001, 0)]["template"]) == ("inst-energy-1", "heat")
    assert steps[(5002, 0)]["estimated"] is True and steps[(5001, 0)]["estimated"] is False
    assert bob.get(STEPS, params={"instance_id": "inst-energy-1"}).json()["steps"]
    samples = bob.get(SAMPLES, params={"cluster": "alpha", "job_id": 5002, "step_id": 0}).json()["samples"]
    assert [s["dc_power_w"] for s in samples] == [100, 101, 102, 103, 104]
    assert all(s["estimated"] == "DC_NODE_POWER_W" for s in samples)
    # the same files again: nothing new
    again = ingest(bob, {"eacct.csv": eacct, "heroes.csv": heroes}, cluster="alpha")
    assert again.status_code == 201 and (again.json()["stored"], again.json()["duplicates"]) == (0, 6)
    assert step_count(bob, cluster="alpha") == 4


def test_batch_step_ids_past_32_bits(users):
    """EAR writes Slurm's batch step as 4294967294: stored and queried exactly (BIGINT on PostgreSQL)."""
    bob = users["bob"]
    lines = eacct_text(2, seed=41).strip().split("\n")
    names = lines[0].split(";")
    rows = [line.split(";") for line in lines[1:]]
    for fields in rows:
        fields[names.index("JOBID")] = "5000000000"
        fields[names.index("STEPID")] = "4294967294"
    text = "\n".join([lines[0]] + [";".join(f) for f in rows]) + "\n"
    r = ingest(bob, {"batch.csv": text}, cluster="zeta")
    assert r.status_code == 201, r.text
    steps = bob.get(STEPS, params={"cluster": "zeta", "job_id": 5000000000, "step_id": 4294967294}).json()["steps"]
    assert [(s["job_id"], s["step_id"], s["nodes"]) for s in steps] == [(5000000000, 4294967294, 2)]
    assert bob.get(STEPS, params={"job_id": 2**64}).status_code == 422


def test_raw_body_of_one_file(users):
    bob = users["bob"]
    text = eacct_text(2, seed=11)
    r = bob.post(ING, params={"name": "one.csv", "cluster": "beta"}, content=text.encode(),
                 headers={"Content-Type": "text/csv"})
    assert r.status_code == 201, r.text
    assert r.json()["stored"] == 2 and step_count(bob, cluster="beta") == 1
    assert bob.post(ING, content=text.encode(), headers={"Content-Type": "text/csv"}).status_code == 422  # no name


@pytest.mark.parametrize("breakage, line, column", [
    ("text-in-number", 3, "TIME_SEC"),
    ("missing-column", 1, "DC_NODE_POWER_W"),
    ("wrong-separator", 1, None),
    ("truncated-line", 3, None),
])
def test_malformed_files_are_refused_with_file_line_column_and_nothing_stored(users, breakage, line, column):
    bob = users["bob"]
    before = step_count(bob, cluster="gamma")
    good = eacct_text(2, seed=21)
    lines = eacct_text(4, seed=22 + line).strip().split("\n")
    names = lines[0].split(";")
    if breakage == "text-in-number":
        fields = lines[2].split(";")
        fields[names.index("TIME_SEC")] = "twelve"
        lines[2] = ";".join(fields)
    elif breakage == "missing-column":
        drop = names.index("DC_NODE_POWER_W")
        lines = [";".join(f for i, f in enumerate(l.split(";")) if i != drop) for l in lines]
    elif breakage == "wrong-separator":
        lines = [l.replace(";", ",") for l in lines]
    else:
        lines[2] = ";".join(lines[2].split(";")[:10])
    r = ingest(bob, {"good.csv": good, "bad file.csv": "\n".join(lines) + "\n"}, cluster="gamma")
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert errors and errors[0]["file"] == "bad file.csv" and errors[0]["line"] == line
    if column:
        assert errors[0]["column"] == column
    assert "bad file.csv" in r.json()["detail"] and "nothing was stored" in r.json()["detail"]
    assert step_count(bob, cluster="gamma") == before  # not even the good file's rows


def test_tenant_isolation(users, service):
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    assert ingest(alice, {"alice.csv": eacct_text(2, seed=31)}, cluster="delta").status_code == 201
    assert ingest(bob, {"bob.csv": heroes_text(7001, ["x1"])}, cluster="delta").status_code == 201
    assert ingest(carol, {"carol.csv": heroes_text(7002, ["y1"], org="globex")}, cluster="delta").status_code == 201
    seen = {name: {(s["username"], s["organization"]) for s in api.get(STEPS, params={"cluster": "delta"})
                   .json()["steps"]} for name, api in users.items()}
    assert seen["bob"] == {("bob", "acme")}
    assert seen["carol"] == {("carol", "globex")}
    assert seen["alice"] == {("alice", "acme"), ("bob", "acme")}  # org admin: the organization's
    # asking for more than one may see is refused, not silently emptied
    assert bob.get(STEPS, params={"user": "alice"}).status_code == 403
    assert carol.get(SUMMARY, params={"group_by": "user", "organization": "acme"}).status_code == 403
    assert alice.get(SUMMARY, params={"group_by": "user", "organization": "globex"}).status_code == 403
    assert carol.get(SAMPLES, params={"cluster": "alpha", "job_id": 5002, "step_id": 0}).json()["samples"] == []
    # a file that names another organization is refused; a user cannot record energy for someone else
    r = ingest(carol, {"spoof.csv": heroes_text(7003, ["z1"], org="acme")}, cluster="delta")
    assert r.status_code == 422 and r.json()["errors"][0]["column"] == "HEROES_ORGANIZATION_NAME"
    assert ingest(bob, {"b.csv": eacct_text(2, seed=32)}, user="alice").status_code == 403
    # anonymous callers get nothing
    anonymous = Api(service.client)
    assert anonymous.get(STEPS).status_code == 401
    assert anonymous.post(ING, json={"files": []}).status_code == 401


def test_summaries_by_group_and_period(users):
    alice = users["alice"]
    by_user = {g["group"]: g for g in alice.get(SUMMARY, params={"group_by": "user", "cluster": "delta"})
               .json()["groups"]}
    assert set(by_user) == {"alice", "bob"}
    steps = alice.get(STEPS, params={"cluster": "delta"}).json()["steps"]
    for name, group in by_user.items():
        mine = [s for s in steps if s["username"] == name]
        assert group["steps"] == len(mine)
        assert group["energy_j"] == pytest.approx(sum(s["energy_j"] for s in mine))
    clusters = {g["group"] for g in alice.get(SUMMARY, params={"group_by": "cluster"}).json()["groups"]}
    assert {"alpha", "delta"} <= clusters
    templates = {g["group"]: g for g in users["bob"].get(SUMMARY, params={"group_by": "template"}).json()["groups"]}
    assert "heat" in templates
    # period: synthetic jobs start at 1_700_000_000 + job id
    early = alice.get(STEPS, params={"start": "2023-11-14T22:13:00Z", "end": "2023-11-14T22:13:30Z"}).json()["steps"]
    assert early and all(1_700_000_000 <= s["start_time"] < 1_700_000_010 for s in early)
    assert alice.get(SUMMARY, params={"group_by": "nonsense"}).status_code == 422


class AppTransport:
    """requests.Session.request's signature over the in-process app (the widgets' transport)."""

    def __init__(self, client):
        self.client = client

    def request(self, method, url, params=None, json=None, data=None, headers=None, timeout=None, stream=False):
        return self.client.request(method, url, params=params, json=json, content=data, headers=headers)


def test_energy_app_shows_the_steps_of_the_caller(users, service):
    """The Energy app's widgets (no kernel) against this service as bob: his steps, the estimated one marked,
    the timeline from his samples, totals, CSV export; alice's steps never appear."""
    from heroes_widgets.api_client import ApiClient
    from heroes_widgets.energy_app import EnergyApp

    token = users["bob"].headers["Authorization"].split(" ", 1)[1]
    client = ApiClient(base_url="http://testserver/services/heroes/api/v1", bearer=token,
                       session=AppTransport(service.client))
    app = EnergyApp(client)
    assert "step(s)" in app.status.value, app.status.value
    assert {s["username"] for s in app.steps} == {"bob"}
    shown = str(app.table.rows)
    assert "5002.0" in shown and "(estimated)" in shown
    assert "heroes-energy.csv" in app.export_link.value
    labels = dict(app.step_pick.options)
    app.step_pick.value = labels[next(k for k in labels if k.startswith("alpha:5002.0"))]
    timeline = app.figures["timeline"]
    assert any("(estimated)" in trace.name for trace in timeline.data)
    assert [list(t.y) for t in timeline.data if t.name == "DC node (estimated)"][0] == [100, 101, 102, 103, 104]
    assert any(trace.name == "estimated" for trace in app.figures["per_step"].data)
    assert "bob" in [row["group"] for row in app.totals.rows]
    app.cluster.value = "delta"
    app.refresh()
    assert {s["cluster"] for s in app.steps} == {"delta"} and {s["username"] for s in app.steps} == {"bob"}


def test_engine_ingests_a_finished_step_for_its_owner(users, service):
    """What the workflow engine calls when a step's energy file comes back: rows belong to the instance's
    owner, who sees them through the API; another organization does not."""
    from heroes_service.energy.ingest import ingest_for_owner

    sessions = service.client.app_ref.state.sessions
    with sessions() as session:
        out = ingest_for_owner(session, organization="acme", username="bob", cluster="epsilon",
                               files={"step.csv": heroes_text(9001, ["e1", "e2"]).encode()})
        session.commit()
    assert (out["stored"], out["user"], out["organization"]) == (2, "bob", "acme")
    assert step_count(users["bob"], cluster="epsilon") == 1
    assert step_count(users["carol"], cluster="epsilon") == 0
