"""schemathesis against the OpenAPI document the running service serves (through the hub's proxy).

Every operation is fuzzed as the org admin of a throwaway organization and as the platform admin;
the service must never answer 5xx nor show a stack trace. Everything the fuzzing creates lives in that
organization or in organizations recorded from the answers, and is deleted at the end. Logout is left
out (it would end the fuzzing sessions); the API tests cover it.
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
