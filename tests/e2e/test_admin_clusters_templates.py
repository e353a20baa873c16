"""Browser test of the Admin app's Clusters and Templates tabs, clicking as a person would from the hub's start
page: alice (acme's org admin) enrolls a third cluster (alpha's login node again, under another name): a wrong
fingerprint is refused clearly, the right one opens the settings, test connection says what works; an edit
reads the partitions from the cluster and refuses a wrong value with a message. She writes
a template with a YAML error (shown at its line and column), fixes it (the Submit form's preview appears) and
publishes it; bob runs it on the new cluster and it completes. Removing the cluster while bob's run is live is
refused in words; once the run ended, the cluster goes.
"""
from __future__ import annotations

import secrets
import time

import httpx
import pytest
from playwright.sync_api import expect

from admin_support import open_admin, screenshot
from app_support import PREFIX, bearer
from heroes_dev.components.login import host_key_fingerprint, ssh_port

pytestmark = pytest.mark.e2e

TEMPLATE = """\
name: {name}
title: E2E sleep and greet
description: Sleeps, then writes a greeting to outputs/hello.txt.
container:
  runtime: none
parameters:
  - {{name: seconds, type: int, label: Seconds to sleep, min: 0, max: 120, default: 1}}
  - {{name: who, type: string, label: Who to greet, default: world, max_length: 64}}
steps:
  - name: greet
    command: [sh, -c, 'sleep "$0"; mkdir -p outputs; echo "hello $1" > outputs/hello.txt', "{{seconds}}", "{{who}}"]
    resources:
      memory_mb: 64
      time_minutes: 3
outputs:
  - outputs/*
"""


def _wait_state(api: httpx.Client, iid: str, states: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    body = {}
    while time.monotonic() < deadline:
        body = api.get(f"/organization/workflow/instance/{iid}").json()
        if body["state"] in states:
            return body
        time.sleep(1)
    raise AssertionError(f"instance {iid} never reached {states}: {body}")


def enroll_third_cluster(page, stack_settings, name: str) -> None:
    page.get_by_role("tab", name="Clusters").click()
    page.locator(".heroes-admin-field-host input").fill(stack_settings.host)
    page.locator(".heroes-admin-field-port input").fill(str(ssh_port(stack_settings, "alpha")))
    page.locator(".heroes-admin-fetch-key").click()
    right, wrong = host_key_fingerprint(stack_settings, "alpha"), host_key_fingerprint(stack_settings, "beta")
    expect(page.locator(".heroes-admin-presented")).to_have_text(right, timeout=30_000)
    # a wrong fingerprint (here: the other login node's) is refused, and says both
    page.locator(".heroes-admin-fingerprint input").fill(wrong)
    page.locator(".heroes-admin-confirm-key").click()
    verdict = page.locator(".heroes-admin-key-verdict")
    expect(verdict).to_contain_text("Refused")
    expect(verdict).to_contain_text(right)
    expect(verdict).to_contain_text(wrong)
    expect(page.locator(".heroes-admin-enroll-settings")).to_be_hidden()
    screenshot(page, "admin-clusters-1-wrong-fingerprint")
    page.locator(".heroes-admin-fingerprint input").fill(right)
    page.locator(".heroes-admin-confirm-key").click()
    expect(verdict).to_contain_text("matches")
    settings = page.locator(".heroes-admin-enroll-settings")
    expect(settings).to_be_visible()
    settings.locator(".heroes-admin-field-name input").fill(name)
    speed = settings.locator(".heroes-admin-field-relative_speed")
    speed.locator("input").fill("12,7")
    expect(speed).to_contain_text("not a number (use a dot for decimals)")
    speed.locator("input").fill("1.4")
    settings.locator(".heroes-admin-field-per_core_hour input").fill("0.03")
    settings.locator(".heroes-admin-field-pue input").fill("1.25")
    settings.locator(".heroes-admin-field-watts_per_core input").fill("11")
    settings.locator(".heroes-admin-field-container_runtime select").select_option("none")
    page.locator(".heroes-admin-enroll").click()
    status = page.locator(".heroes-admin-status")
    expect(status).to_contain_text(f"cluster {name} enrolled", timeout=90_000)
    expect(status).to_contain_text(right)
    checks = page.locator(".heroes-admin-checks")
    for check in ("host_key", "authentication", "slurm", "partitions", "work_dir", "sftp", "sbatch", "accounting"):
        expect(checks.locator(f".heroes-admin-check-{check}")).to_contain_text("works", timeout=90_000)
    expect(checks.locator(".heroes-admin-check-container_runtime")).to_contain_text("skipped")
    expect(page.locator(".heroes-admin-cluster select option:checked")).to_have_text(name)
    screenshot(page, "admin-clusters-2-enrolled-and-tested")


def edit_cluster(page, name: str) -> None:
    """Edit: the partitions are read from the cluster; a wrong value is marked and nothing is saved."""
    page.locator(".heroes-admin-edit").click()
    box = page.locator(".heroes-admin-edit-box")
    expect(box).to_contain_text(f"Edit {name}")
    expect(box.locator(".heroes-admin-partitions-note")).to_contain_text("read from the cluster: compute",
                                                                         timeout=30_000)
    box.locator(".heroes-admin-field-relative_speed input").fill("2")
    box.locator(".heroes-admin-field-pue input").fill("0.5")
    page.locator(".heroes-admin-save-cluster").click()
    expect(box.locator(".heroes-admin-field-pue")).to_contain_text("must be at least 1")
    expect(page.locator(".heroes-admin-status")).to_contain_text("fix the fields marked in red")
    screenshot(page, "admin-clusters-3-edit-refused")
    box.locator(".heroes-admin-field-pue input").fill("1.1")
    page.locator(".heroes-admin-save-cluster").click()
    expect(page.locator(".heroes-admin-status")).to_contain_text(f"cluster {name} saved", timeout=30_000)
    expect(box).to_be_hidden()


def publish_template(page, name: str) -> str:
    """Type the template with an error, see it at its line, fix it, see the preview, publish; its text."""
    page.get_by_role("tab", name="Templates").click()
    good = TEMPLATE.format(name=name)
    bad = good.replace("memory_mb: 64", "memory_mb: 64MB")
    line = bad.splitlines().index("      memory_mb: 64MB") + 1
    editor = page.locator(".heroes-admin-template-editor textarea")
    editor.fill(bad)
    page.locator(".heroes-admin-template-check").click()
    errors = page.locator(".heroes-admin-template-errors")
    expect(errors).to_contain_text(f"line {line}, column 7", timeout=30_000)
    expect(errors).to_contain_text("steps.0.resources.memory_mb")
    expect(errors).to_contain_text("memory_mb: 64MB")  # the line itself, with a caret under the column
    page.locator(".heroes-admin-template-publish").click()
    expect(page.locator(".heroes-admin-status")).to_contain_text("not published")
    screenshot(page, "admin-templates-1-error-at-its-line")
    editor.fill(good)
    page.locator(".heroes-admin-template-check").click()
    expect(errors).to_contain_text(f"publishing makes {name} v1", timeout=30_000)
    preview = page.locator(".heroes-admin-template-preview")
    expect(preview).to_contain_text("Seconds to sleep")
    expect(preview.locator(".heroes-submit-param-who input")).to_have_value("world")
    page.locator(".heroes-admin-template-publish").click()
    expect(page.locator(".heroes-admin-status")).to_contain_text(f"published {name} v1", timeout=30_000)
    expect(errors).to_contain_text(f"publishing makes {name} v2")
    expect(page.locator(".heroes-admin-template-version select option", has_text=f"{name} v1")).to_have_count(1)
    screenshot(page, "admin-templates-2-published-with-preview")
    return good


def remove_cluster(page, name: str) -> None:
    page.get_by_role("tab", name="Clusters").click()
    page.locator(".heroes-admin-cluster select").select_option(label=name)
    page.locator(".heroes-admin-remove-cluster").click()
    expect(page.locator(".heroes-admin-remove-confirm")).to_contain_text(f"Remove {name}")
    page.locator(".heroes-admin-remove-yes").click()


def test_alice_enrolls_a_cluster_and_publishes_a_template_bob_runs(page, hub, stack_settings):
    suffix = secrets.token_hex(3)
    cluster, template = f"e2e-{suffix}", f"e2e-sleep-{suffix}"
    alice = httpx.Client(base_url=hub.url + PREFIX, headers=bearer(hub, "alice", "alice-pass"), timeout=60)
    bob = httpx.Client(base_url=hub.url + PREFIX, headers=bearer(hub, "bob", "bob-pass"), timeout=60)
    try:
        open_admin(page, hub, "alice")
        enroll_third_cluster(page, stack_settings, cluster)
        edit_cluster(page, cluster)
        saved = next(c for c in alice.get("/organization/admin/cluster/").json() if c["name"] == cluster)
        assert saved["relative_speed"] == 2 and saved["energy_profile"]["pue"] == 1.1, saved
        assert saved["price_model"]["per_core_hour"] == 0.03 and saved["energy_profile"]["watts_per_core"] == 11
        publish_template(page, template)
        # bob runs it on the new cluster (his own login there, through the API)
        r = bob.post("/organization/workflow/submit", json={"template": template, "cluster": cluster,
                                                              "parameters": {"seconds": 25, "who": "bob"}})
        assert r.status_code == 201, r.text
        iid = r.json()["id"]
        _wait_state(bob, iid, {"QUEUED", "RUNNING"}, timeout=120)
        remove_cluster(page, cluster)
        status = page.locator(".heroes-admin-status")
        expect(status).to_contain_text(f"{cluster} was not removed", timeout=30_000)
        expect(status).to_contain_text("still runs work")
        screenshot(page, "admin-clusters-4-remove-refused-while-running")
        done = _wait_state(bob, iid, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=240)
        assert done["state"] == "COMPLETED", done
        assert done["cluster"] == cluster and done["template_version"] == 1
        assert any(o["key"].endswith("outputs/hello.txt") for o in done["outputs"]), done["outputs"]
        remove_cluster(page, cluster)
        expect(status).to_contain_text(f"cluster {cluster} removed", timeout=30_000)
        assert cluster not in {c["name"] for c in alice.get("/organization/admin/cluster/").json()}
    finally:
        for row in alice.get("/organization/workflow/template", params={"all_versions": "true"}).json():
            if row["name"] == template:
                alice.delete(f"/organization/admin/workflow/template/{row['id']}")
        for row in alice.get("/organization/admin/cluster/").json():
            if row["name"] == cluster:
                alice.delete(f"/organization/admin/cluster/{row['id']}")
        alice.close()
        bob.close()
