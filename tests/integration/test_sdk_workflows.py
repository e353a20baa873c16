"""The SDK against the running gateway (hub proxy, the hub-managed service, Keycloak, Slurm over SSH, S3): submit,
wait and read outputs as in a hub server (no arguments but the server's environment), cancel, carol (globex)
sees nothing of bob's (acme), and a wrong credential says so clearly."""
from __future__ import annotations

import secrets
import time

import pytest
import requests

from heroes_sdk import AuthenticationError, Client, Conflict, Decision, InvalidRequest, NotFound
from sdk_support import demo, run_cli, server_env, users  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bob_run(demo, stack_settings):
    """bob's heat-diffusion run where the decision module says, from a client built like in his hub server."""
    heroes = Client(env=server_env(stack_settings, "bob"))
    label = f"sdk-{secrets.token_hex(3)}"
    # the demo's clusters only: other tests may enroll (and remove) clusters of acme meanwhile
    decision = heroes.decide("heat-diffusion", {"points": 60, "steps": 400, "label": label}, policy="performance",
                             clusters=["alpha", "beta"])
    run = heroes.submit(decision)  # its template, parameters and choice
    seen: list[tuple] = []
    run.wait(timeout=360, poll_s=1, progress=lambda done, total, status: seen.append((done, total, status)))
    return {"client": heroes, "run": run, "label": label, "decision": decision, "progress": seen}


def test_submit_wait_and_read_outputs_inside_a_hub_server(bob_run):
    heroes, run, label = bob_run["client"], bob_run["run"], bob_run["label"]
    assert heroes.me().username == "bob"
    clusters = {c.name: c for c in heroes.clusters()}
    assert {"alpha", "beta"} <= set(clusters) and clusters["beta"].price.currency == "EUR"
    assert clusters["alpha"].partitions and clusters["alpha"].partitions[0].cpus_per_node > 0
    template = heroes.template("heat-diffusion")
    assert [p.name for p in template.parameters][:2] == ["points", "steps"] and template.parameters[0].min == 8
    decision = bob_run["decision"]
    assert isinstance(decision, Decision) and decision.choice in ("alpha", "beta")
    assert {c.cluster for c in decision.candidates} == {"alpha", "beta"}
    assert run.cluster == decision.choice and run.parameters["label"] == label

    assert run.state == "COMPLETED", run
    progress = bob_run["progress"]
    assert progress[-1] == (1, 1, "COMPLETED | simulate=COMPLETED"), progress[-3:]
    summary = run.read_output("outputs/summary.txt").decode()
    assert f"label={label}\n" in summary and summary.startswith("image=heroes python3 image"), summary
    profile = run.read_csv("outputs/profile.csv")
    assert list(profile.columns) == ["x", "u", "exact"] and len(profile) == 60
    assert (profile["u"] - profile["exact"]).abs().max() < 1e-3
    assert "max_error=" in run.logs("simulate")
    assert "COMPLETED" in run._repr_html_() and run.id in {i.id for i in heroes.instances(limit=20)}


def test_energy_of_the_run_as_records_and_a_figure(bob_run):
    run = bob_run["run"]
    deadline = time.monotonic() + 60  # the engine ingests the step's energy file as the instance finishes
    while not (records := run.energy()) and time.monotonic() < deadline:
        time.sleep(2)
    assert len(records) == 1, run.events
    [record] = records
    assert (record.instance_id, record.template, record.username) == (run.id, "heat-diffusion", "bob")
    assert record.energy_j > 0 and str(record.job_id) == run.step("simulate").job_id
    figure = run.plot_energy()
    bars = [t for t in figure.data if t.type == "bar"]
    assert bars and list(bars[0].x) == ["simulate"] and bars[0].y[0] == pytest.approx(record.energy_j)


def test_cancel_a_running_instance(users):
    bob = users["bob"]
    run = bob.submit("heat-diffusion", {"points": 20000, "steps": 1000000, "label": "to cancel"}, cluster="alpha")
    deadline = time.monotonic() + 180
    while run.refresh().state not in ("QUEUED", "RUNNING") and not run.done and time.monotonic() < deadline:
        time.sleep(1)
    assert run.state in ("QUEUED", "RUNNING"), run
    assert run.cancel().cancel_requested is True
    run.wait(timeout=180, poll_s=1, progress=False)
    assert run.state == "CANCELLED" and all(s.state in ("CANCELLED", "SKIPPED") for s in run.steps), run
    with pytest.raises(Conflict, match="already ended"):
        run.cancel()


def test_carol_cannot_see_bobs_instance(bob_run, users):
    carol, run = users["carol"], bob_run["run"]
    assert carol.me().organization == "globex"
    with pytest.raises(NotFound) as caught:
        carol.instance(run.id)
    assert caught.value.status == 404 and run.id in caught.value.detail
    assert run.id not in {i.id for i in carol.instances()}
    with pytest.raises(NotFound):
        carol.cancel(run.id)
    with pytest.raises(NotFound):
        carol.data.read(run.output_bucket, run.outputs[0]["key"])
    with pytest.raises(NotFound):
        carol.template(run.template_id)  # acme's template version, by id
    assert carol.energy(instance_id=run.id) == []
    assert run.output_bucket not in {b.bucket for b in carol.data.buckets()}


def test_a_wrong_credential_gives_a_clear_error(demo):
    url = demo["url"]
    with pytest.raises(AuthenticationError) as caught:
        Client(url, token="not-a-real-hub-token").clusters()
    assert caught.value.status == 401 and "invalid or expired JupyterHub token" in str(caught.value)
    with pytest.raises(AuthenticationError, match="invalid bearer token"):
        Client(url, bearer="e30.e30.c2ln").me()
    with pytest.raises(AuthenticationError, match="invalid username or password"):
        Client(url, username="bob", password="not-bobs")
    cli = run_cli(["clusters"], {"HEROES_API_URL": url, "HEROES_ACCESS_TOKEN": "e30.e30.c2ln"})
    assert cli.returncode == 3 and cli.stdout == "", cli
    assert cli.stderr.startswith("heroes: invalid bearer token") and "Traceback" not in cli.stderr


class LosesSubmitAnswers(requests.Session):
    """A real session whose submit reaches the service but whose answer is lost on the way back."""

    def request(self, method, url, *args, **kwargs):
        response = super().request(method, url, *args, **kwargs)
        if method == "POST" and url.endswith("/organization/workflow/submit"):
            response.close()
            raise requests.exceptions.ReadTimeout("the answer was lost (test)")
        return response


def test_a_submit_whose_answer_is_lost_is_found_not_sent_twice(demo, users):
    lossy = Client(demo["url"], username="bob", password="bob-pass", transport=LosesSubmitAnswers())
    label = f"lost-answer-{secrets.token_hex(3)}"
    run = lossy.submit("heat-diffusion", {"points": 20, "steps": 10}, cluster="alpha", name=label)
    assert run.name == label and run.template_name == "heat-diffusion" and run.steps
    assert [i.id for i in users["bob"].instances(limit=50) if i.name == label] == [run.id]  # recorded once


def test_a_refused_parameter_names_the_rule(users):
    with pytest.raises(InvalidRequest) as caught:
        users["bob"].submit("heat-diffusion", {"points": 3}, cluster="alpha")
    assert caught.value.status == 422 and "points" in caught.value.detail and ">= 8" in caught.value.detail
