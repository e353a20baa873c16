"""The demo-data component against the running gateway (issue 17): applying it again changes nothing, and the
stack reports it healthy.

What the gateway holds is read through the same REST API the component writes through: every cluster's id and
pinned host key, every template version of both organizations, and the sample input's ETag in each demo user's
space, before and after a second run of the component's set-up.
"""
from __future__ import annotations

import pytest

from heroes_dev.components import demo_data
from heroes_dev.components.login import host_key_fingerprint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def component(require):
    return require("demo-data")


def snapshot(client: demo_data.DemoClient) -> dict:
    state = {}
    for org, admin in demo_data.ORG_ADMINS.items():
        state[f"{org} clusters"] = sorted((c["name"], c["id"], c["host_key_fingerprint"], c["relative_speed"])
                                          for c in client.call(admin, "GET", "/organization/admin/cluster/").json())
        state[f"{org} templates"] = sorted((t["name"], t["version"], t["id"]) for t in client.call(
            admin, "GET", "/organization/workflow/template", params={"all_versions": "true"}).json())
    for user in demo_data.DEMO_USERS:
        bucket = client.own_bucket(user)
        listing = client.call(user, "GET", f"/organization/data/bucket/{bucket}/list",
                              params={"prefix": "samples/"}).json()
        state[f"{user} samples"] = sorted((o["key"], o["etag"], o["size"]) for o in listing["objects"])
    return state


def test_a_second_run_changes_nothing(component, stack_settings):
    client = demo_data.DemoClient(stack_settings)
    try:
        before = snapshot(client)
        changes = demo_data.apply(stack_settings, client)
        after = snapshot(client)
    finally:
        client.close()
    assert changes.done == [], changes.done
    assert len(changes.present) == 2 * 2 + 2 * 3 + len(demo_data.DEMO_USERS)
    assert after == before
    # and what is there is what the demo promises
    for org in demo_data.ORG_ADMINS:
        pinned = {name: fingerprint for name, _id, fingerprint, _speed in before[f"{org} clusters"]}
        for name in ("alpha", "beta"):
            assert pinned[name] == host_key_fingerprint(stack_settings, name)
        assert {"heat-diffusion", "monte-carlo-pi", "sklearn-train"} <= {t[0] for t in before[f"{org} templates"]}
    for user in demo_data.DEMO_USERS:
        assert [key for key, _etag, _size in before[f"{user} samples"]] == [demo_data.SAMPLE_KEY]


def test_the_stack_sees_it_healthy_and_up_does_nothing(component, stack_settings):
    from heroes_dev.stack import Stack

    health = component.health()
    assert health.ok, health.detail
    report = Stack(stack_settings).up(["demo-data"])
    assert "demo-data" in report.already_running and "demo-data" not in report.started
