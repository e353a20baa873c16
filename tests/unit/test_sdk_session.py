"""The SDK's HTTP layer with a fake transport: which calls are retried (reads; writes only when never sent),
how the service's errors become exceptions with its own message, and the token renewal after a 401."""
from __future__ import annotations

import pytest
import requests
from urllib3.exceptions import NewConnectionError

from heroes_sdk import errors
from heroes_sdk.session import Credential, Session, api_url, never_sent
from sdk_fakes import BASE, FakeResponse, FakeTransport


def session(route, **kw) -> tuple[Session, FakeTransport]:
    transport = FakeTransport(route)
    return Session(BASE, Credential("token", "t0k"), transport=transport, backoff_s=0, **kw), transport


def refused() -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(NewConnectionError(None, "Failed to establish a new connection"))


def test_api_url_from_what_a_user_types():
    assert api_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/services/heroes/api/v1"
    assert api_url("https://gw.example.org/hub/") == "https://gw.example.org/services/heroes/api/v1"
    assert api_url("http://x:1/services/heroes/api/v1/") == "http://x:1/services/heroes/api/v1"
    with pytest.raises(ValueError):
        api_url("gw.example.org")


def test_reads_are_retried_after_503_and_a_dropped_connection():
    answers = [FakeResponse(503, {"detail": "busy"}), refused(), FakeResponse(200, {"ok": True})]

    def route(method, path, call):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    s, transport = session(route)
    assert s.call("GET", "/x") == {"ok": True}
    assert transport.count("GET", "/x") == 3
    assert transport.calls[0]["headers"]["Authorization"] == "token t0k"


def test_reads_give_up_after_the_retries_with_the_service_message():
    s, transport = session(lambda m, p, c: FakeResponse(503, {"detail": "S3 unreachable"}), retries=2)
    with pytest.raises(errors.ServiceUnavailable) as caught:
        s.call("GET", "/x")
    assert caught.value.status == 503 and caught.value.detail == "S3 unreachable"
    assert transport.count("GET", "/x") == 2


def test_writes_are_not_retried_once_sent():
    s, transport = session(lambda m, p, c: FakeResponse(503, {"detail": "cluster down"}))
    with pytest.raises(errors.ServiceUnavailable):
        s.call("POST", "/organization/workflow/submit", json={})
    assert transport.count("POST", "/organization/workflow/submit") == 1

    def timeout(method, path, call):
        raise requests.exceptions.ReadTimeout("read timed out")

    s, transport = session(timeout)
    with pytest.raises(errors.ServiceUnavailable) as caught:
        s.call("POST", "/organization/workflow/submit", json={})
    assert caught.value.status == 0 and "did not answer" in caught.value.detail
    assert transport.count("POST", "/organization/workflow/submit") == 1


def test_a_write_that_never_left_is_sent_again():
    answers = [refused(), FakeResponse(201, {"id": "x"})]

    def route(method, path, call):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    s, transport = session(route)
    assert s.call("POST", "/w", json={}) == {"id": "x"}
    assert transport.count("POST", "/w") == 2
    assert never_sent(refused()) and not never_sent(requests.exceptions.ReadTimeout())


def test_errors_carry_the_service_message_status_and_rule():
    validation = {"detail": [{"loc": ["body", "parameters", "points"], "msg": "must be >= 8", "type": "x"}]}
    cases = [(422, validation, errors.InvalidRequest, "parameters.points: must be >= 8"),
             (404, {"detail": "instance 'x' not found"}, errors.NotFound, "instance 'x' not found"),
             (403, {"detail": "no", "rule": "org-admin"}, errors.PermissionDenied, "no"),
             (409, {"detail": "already ended"}, errors.Conflict, "already ended"),
             (413, {"detail": "quota"}, errors.QuotaExceeded, "quota"),
             (401, {"detail": "invalid or expired JupyterHub token"}, errors.AuthenticationError,
              "invalid or expired JupyterHub token"),
             (500, None, errors.HeroesError, "did not come from the HEROES service")]
    for status, body, kind, message in cases:
        s, _ = session(lambda m, p, c: FakeResponse(status, body))
        with pytest.raises(kind) as caught:
            s.call("GET", "/x")
        assert caught.value.status == status and message in caught.value.detail, (status, caught.value)
        assert f"(HTTP {status})" in str(caught.value)
    s, _ = session(lambda m, p, c: FakeResponse(403, {"detail": "no", "rule": "org-admin"}))
    with pytest.raises(errors.PermissionDenied) as caught:
        s.call("GET", "/x")
    assert caught.value.rule == "org-admin"


def test_a_renewable_token_is_renewed_before_expiry_and_after_one_401():
    renewals = []

    def renew():
        renewals.append(1)
        return f"fresh{len(renewals)}", 4_000_000_000.0

    seen = []

    def route(method, path, call):
        seen.append(call["headers"]["Authorization"])
        return FakeResponse(401, {"detail": "expired"}) if len(seen) == 1 else FakeResponse(200, {"ok": 1})

    transport = FakeTransport(route)
    s = Session(BASE, Credential("Bearer", "old", expires_at=1.0, renew=renew), transport=transport, backoff_s=0)
    assert s.call("GET", "/x") == {"ok": 1}
    # due before the first call (expired), and once more after the 401
    assert seen == ["Bearer fresh1", "Bearer fresh2"] and len(renewals) == 2

    transport = FakeTransport(lambda m, p, c: FakeResponse(401, {"detail": "invalid bearer token"}))
    s = Session(BASE, Credential("Bearer", "old", expires_at=4e9, renew=renew), transport=transport, backoff_s=0)
    with pytest.raises(errors.AuthenticationError):
        s.call("GET", "/x")
    assert len(transport.calls) == 2  # one renewal, then the refusal stands
