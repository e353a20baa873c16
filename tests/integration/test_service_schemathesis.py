"""schemathesis against the OpenAPI document the running service serves (through the hub's proxy).

Every operation is fuzzed as the org admin of a throwaway organization and as the platform admin;
the service must never answer 5xx nor show a stack trace. Everything the fuzzing creates lives in that
organization or in organizations recorded from the answers, and is deleted at the end. Logout is left
out (it would end the fuzzing sessions); the API tests cover it.

A second run is stateful: schemathesis links operations by what one answers and the next takes (a created
user's id into GET/PATCH/DELETE of that user, a cluster's id into its test...), so calls reach real objects
instead of 404s, in sequences a single call never makes.
"""
from __future__ import annotations

import hypothesis
import pytest
import schemathesis  # noqa: F401 (schemathesis.openapi below)
import schemathesis.openapi
from hypothesis import HealthCheck, Phase

from service_support import DEMO_PASSWORDS, PREFIX, Api, LiveClient, drop_tenant, hub_public, make_tenant

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live(require, stack_settings):
    require("keycloak")
    require("jupyterhub")
    return Api(LiveClient(hub_public(stack_settings)))


@pytest.fixture(scope="module")
def fuzz_callers(live):
    root = live.login("root", DEMO_PASSWORDS["root"])
    tenant = make_tenant(live, root, "z")
    created: list[str] = []
    yield {"org_admin": tenant.apis["org_admin"].headers, "platform_admin": root.headers, "created": created}
    for org_id in created:
        r = root.delete(f"/heroes/admin/organizations/{org_id}", params={"force": "true"})
        assert r.status_code in (204, 404), r.text
    drop_tenant(root, tenant)


@pytest.fixture(scope="module")
def served_schema(live, stack_settings):
    schema = schemathesis.openapi.from_url(f"{hub_public(stack_settings)}{PREFIX}/openapi.json")
    return schema.exclude(path=f"{PREFIX}/organization/auth/logout")


def test_no_server_errors(served_schema, fuzz_callers, stack_settings):
    """Each operation gets its own hypothesis run (schemathesis' pytest plugin does not load on this pytest)."""
    base = hub_public(stack_settings)
    failures, operations = [], 0

    for result in served_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=15, deadline=None, phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            for caller in ("org_admin", "platform_admin"):
                response = case.call(base_url=base, headers=dict(fuzz_callers[caller]), timeout=60)
                if (case.method.upper() == "POST" and case.path == f"{PREFIX}/heroes/admin/organizations/"
                        and response.status_code == 201):
                    fuzz_callers["created"].append(response.json()["id"])
                assert response.status_code < 500, (f"{caller}: {response.status_code} {response.text[:300]}\n"
                                                    f"{case.as_curl_command()}")
                assert "Traceback" not in response.text

        try:
            fuzz()
        except AssertionError as exc:  # keep going: report every operation that failed
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:600]}")
    assert operations >= 30
    assert not failures, "\n\n".join(failures)


def test_stateful_links_no_server_errors(served_schema, fuzz_callers, stack_settings):
    """Chains of linked calls (schemathesis' state machine over the inferred OpenAPI links), as each caller."""
    base = hub_public(stack_settings)
    machine = served_schema.as_state_machine()
    links = [name for name in dir(machine) if "__" in name.strip("_") and not name.startswith(("RANDOM", "_"))]
    assert len(links) >= 20, f"schemathesis found only {len(links)} links"
    failures: list[str] = []
    calls: list[int] = []

    for caller in ("org_admin", "platform_admin"):
        class Chains(machine):  # type: ignore[misc, valid-type]
            def get_call_kwargs(self, case):
                return {"base_url": base, "headers": dict(fuzz_callers[caller]), "timeout": 60}

            def after_call(self, response, case):
                calls.append(response.status_code)
                if (case.method.upper() == "POST" and case.path == f"{PREFIX}/heroes/admin/organizations/"
                        and response.status_code == 201):
                    fuzz_callers["created"].append(response.json()["id"])
                if response.status_code >= 500 or "Traceback" in response.text:
                    failures.append(f"{caller}: {response.status_code} {response.text[:300]}\n{case.as_curl_command()}")

            def validate_response(self, response, case, additional_checks=None, **kwargs):
                return None  # our own check above: no 5xx, no traceback (the schema checks belong elsewhere)

        Chains.run(settings=hypothesis.settings(max_examples=25, stateful_step_count=8, deadline=None,
                                                phases=[Phase.generate], suppress_health_check=list(HealthCheck),
                                                database=None))
    print(f"stateful chains: {len(calls)} calls over {len(links)} links, "
          f"{sum(200 <= c < 300 for c in calls)} answered 2xx, {sum(c == 404 for c in calls)} 404")
    assert len(calls) >= 100, len(calls)
    assert sum(200 <= c < 300 for c in calls) >= 20, "the chains never reached a real object"
    assert not failures, "\n\n".join(failures[:20])
