"""Fakes for the SDK's unit tests: a transport with ``requests.Session.request``'s call shape that answers
from a routing function and records every call (the integration tests use the real service)."""
from __future__ import annotations

import json as jsonlib
from urllib.parse import urlsplit

BASE = "http://gw.test/services/heroes/api/v1"


class FakeResponse:
    def __init__(self, status: int = 200, body=None, headers: dict | None = None, raw: bytes | None = None):
        self.status_code = status
        self.reason = {200: "OK", 201: "Created", 401: "Unauthorized", 503: "Service Unavailable"}.get(status, "")
        if raw is not None:
            self.content = raw
        else:
            self.content = b"" if body is None else jsonlib.dumps(body).encode()
        self.headers = {"Content-Length": str(len(self.content)), **(headers or {})}
        self.closed = False

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self):
        return jsonlib.loads(self.content)

    def iter_content(self, size: int):
        for i in range(0, len(self.content), size):
            yield self.content[i:i + size]

    def close(self):
        self.closed = True


class FakeTransport:
    """``route(method, path, call)`` answers a FakeResponse or raises; every call is kept in ``calls``."""

    def __init__(self, route):
        self.route = route
        self.calls: list[dict] = []

    def request(self, method, url, params=None, json=None, data=None, headers=None, stream=False, timeout=None):
        path = urlsplit(url).path.removeprefix(urlsplit(BASE).path)
        if data is not None and not isinstance(data, (bytes, str)):
            data = b"".join(data)  # a streamed body: read it as requests would
        call = {"method": method, "path": path, "params": params, "json": json, "data": data,
                "headers": headers or {}}
        self.calls.append(call)
        return self.route(method, path, call)

    def count(self, method: str, path: str) -> int:
        return sum(1 for c in self.calls if c["method"] == method and c["path"] == path)


INSTANCE = {
    "id": "a" * 32, "name": "heat-1234", "username": "bob", "template_id": "b" * 32, "template_name": "heat-diffusion",
    "template_version": 1, "cluster": "alpha", "state": "RUNNING", "reason": "", "exit_code": None,
    "cancel_requested": False, "created_at": "2026-12-05T08:00:00Z", "updated_at": "2026-12-05T08:00:01Z",
    "finished_at": None, "parameters": {"points": 20},
    "steps": [{"name": "simulate", "state": "RUNNING", "job_name": "h", "job_id": "17", "depends_on": [],
               "exit_code": None, "nodes": "alpha-n1", "reason": "", "log_tail": "", "max_rss_mb": None,
               "submitted_at": None, "started_at": None, "ended_at": None}],
    "events": [{"at": "2026-12-05T08:00:00Z", "step": "", "from_state": "", "to_state": "NEW", "detail": "submitted"}],
    "outputs": [], "output_bucket": "u-bob", "output_prefix": f"workflows/{'a' * 32}/",
}


def instance(**changes) -> dict:
    body = jsonlib.loads(jsonlib.dumps(INSTANCE))
    body.update(changes)
    return body
