"""The Submit and Monitor apps driven headlessly (ipywidgets without a browser) against the service: the
form comes from the template's schema, client-side validation stops bad values, the service's refusal is
shown, bob submits the pipeline on alpha, the Monitor app follows it to COMPLETED, shows steps, logs and
outputs, and cancels another instance."""
from __future__ import annotations

import time

import pytest

from heroes_widgets.api_client import ApiClient
from heroes_widgets.monitor_app import MonitorApp
from heroes_widgets.submit_app import SubmitApp
from service_support import PREFIX
from workflow_support import EXAMPLES, publish, wait_final, wf  # noqa: F401

pytestmark = pytest.mark.integration


class InProcessSession:
    """requests.Session's call shape over the in-process TestClient (the apps take any such session)."""

    def __init__(self, client):
        self.client = client

    def request(self, method, url, params=None, json=None, data=None, headers=None, timeout=None, stream=False):
        return self.client.request(method, url, params=params, json=json, content=data, headers=headers)


def app_client(wf, user: str) -> ApiClient:
    api = wf["apis"][user]
    return ApiClient(base_url=PREFIX, bearer=api.headers["Authorization"].split(" ", 1)[1],
                     session=InProcessSession(api.client))


def test_submit_and_monitor_apps(wf):
    publish(wf["apis"]["alice"], (EXAMPLES / "monte-carlo-pi.yaml").read_text())
    publish(wf["apis"]["alice"], {"name": "app-sleeper", "steps": [{"name": "nap", "command": ["sleep", "300"]}]})
    bob = app_client(wf, "bob")
    submit = SubmitApp(bob, poll_s=0.3)
    options = dict((label.split(" (v")[0], value) for label, value in submit.template.options)
    assert "Monte Carlo pi (pre -> parallel solve -> post)" in options
    assert {v for _, v in submit.cluster.options} >= {"auto", "alpha", "beta"}
    submit.template.value = options["Monte Carlo pi (pre -> parallel solve -> post)"]
    fields = {f.name: f for f in submit.fields}
    assert list(fields) == ["samples", "tasks", "seed"] and fields["tasks"].input.value == "2"
    fields["tasks"].input.value = "9"  # max is 4: refused before anything is sent
    assert submit.submit() is None and "must be &lt;= 4" in fields["tasks"].message.value
    fields["tasks"].input.value = "12.7"  # no whole number: refused with a message, nothing is rounded
    assert submit.submit() is None and "not a whole number" in fields["tasks"].message.value
    fields["tasks"].input.value = "2"
    fields["samples"].input.value = "30000"
    submit.cluster.value = "alpha"
    submit.label.value = "from the app"
    iid = submit.submit(wait=True)
    assert iid and all(f"{step}=" in submit.state.value for step in ("pre", "solve", "post")), submit.state.value
    monitor = MonitorApp(bob, auto=False)
    assert iid in {r["id"] for r in monitor.table.rows} and monitor.detail["id"] == iid  # the newest opens
    wait_final(wf["apis"]["bob"], [iid], timeout=180)
    monitor.refresh()
    assert "COMPLETED" in monitor.head.value and [s["state"] for s in monitor.steps.rows] == ["COMPLETED"] * 3
    assert "outputs/pi.txt" in monitor.outputs.value
    assert monitor.log_step.value == "post" and "pi ~ 3.1" in monitor.log.value  # the last step's log, unasked
    # cancel from the Monitor app
    submit.template.value = dict((label.split(" (v")[0], value) for label, value in submit.template.options)["app-sleeper"]
    other = submit.submit(wait=True)
    monitor.refresh()
    monitor.open(other)
    monitor.cancel()
    assert "cancel requested" in monitor.status.value
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and "CANCELLED" not in monitor.head.value:
        time.sleep(1)
        monitor.open(other)
    assert "CANCELLED" in monitor.head.value and monitor.cancel_button.layout.display == "none"
    monitor.close()
