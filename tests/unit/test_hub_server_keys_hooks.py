"""The hub's spawn hooks for S3 keys (hub_config/heroes_data.py) against a stand-in of the service's route: what
they send (the hub's token, the user and the server's name), what the server's environment gets, and the words a
user sees on the spawn page when the service refuses or is down. The real route and hub: tests/integration/
test_data_server_keys.py."""
from __future__ import annotations

import asyncio
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub_config"))
import heroes_data  # noqa: E402

CREDS = {"endpoint_url": "http://s3.invalid", "bucket": "heroes-u-bob", "access_key_id": "hs0123456789ab654321",
         "secret_access_key": "not-a-real-secret", "region": "us-east-1"}


@pytest.fixture
def service():
    """A stand-in of /organization/data/server-credentials: records calls; ``answer`` sets the reply."""
    state = SimpleNamespace(calls=[], answer=(200, CREDS))

    class Handler(BaseHTTPRequestHandler):
        def _reply(self):
            length = int(self.headers.get("Content-Length") or 0)
            state.calls.append((self.command, self.path, self.headers.get("Authorization"),
                                json.loads(self.rfile.read(length)) if length else None))
            status, body = state.answer
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_DELETE = _reply

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/services/heroes/api/v1"
    yield state
    server.shutdown()


def spawner(name: str = "") -> SimpleNamespace:
    log = SimpleNamespace(error=lambda *a: None, warning=lambda *a: None)
    return SimpleNamespace(user=SimpleNamespace(name="bob"), name=name, environment={"PATH": "/usr/bin"},
                           args=["--ServerApp.contents_manager_class=other"], log=log)


def test_the_pre_spawn_hook_asks_for_this_servers_keys_with_the_hubs_token(service):
    hook = heroes_data.make_hook("", service.url, "hub-token")
    target = spawner("second")
    asyncio.run(hook(target))
    assert service.calls == [("POST", "/services/heroes/api/v1/organization/data/server-credentials",
                              "token hub-token", {"user": "bob", "server": "second"})]
    assert target.environment["HEROES_S3_ACCESS_KEY_ID"] == CREDS["access_key_id"]
    assert target.environment["HEROES_S3_BUCKET"] == "heroes-u-bob" and target.environment["PATH"] == "/usr/bin"
    assert target.args == ["--ServerApp.contents_manager_class=" + heroes_data.CONTENTS_CLASS]
    assert not any(CREDS["secret_access_key"] in a for a in target.args)  # never on the command line


def test_a_refusal_reaches_the_spawn_page_in_words(service):
    service.answer = (404, {"detail": "no enabled HEROES user named 'bob'"})
    with pytest.raises(RuntimeError, match="not usable now: the HEROES service answered 404: no enabled HEROES user"):
        asyncio.run(heroes_data.make_hook("", service.url, "hub-token")(spawner()))


def test_an_unreachable_service_says_so():
    with pytest.raises(RuntimeError, match="the HEROES service is unreachable"):
        asyncio.run(heroes_data.make_hook("", "http://127.0.0.1:9/none", "hub-token")(spawner()))


def test_the_stop_hook_revokes_that_server_only_and_never_fails_the_stop(service):
    service.answer = (200, {"revoked": True})
    asyncio.run(heroes_data.make_stop_hook(service.url, "hub-token")(spawner("second")))
    (method, path, auth, _body), = service.calls
    assert (method, auth) == ("DELETE", "token hub-token")
    assert path.endswith("/organization/data/server-credentials?user=bob&server=second")
    service.answer = (503, {"detail": "object storage unreachable"})
    asyncio.run(heroes_data.make_stop_hook(service.url, "hub-token")(spawner("second")))  # logged, not raised
