"""Where the SDK's credential comes from (arguments, hub server, CI token, the login file) and how the file is
kept: 0600 in a 0700 folder whatever the umask, refused when others may read it, refreshed tokens written back."""
from __future__ import annotations

import os
import stat

import pytest

from heroes_sdk import credentials
from heroes_sdk.errors import AuthenticationError
from heroes_sdk.session import Session
from sdk_fakes import BASE, FakeResponse, FakeTransport

ANSWER = {"access_token": "acc", "refresh_token": "ref", "expires_in": 300, "refresh_expires_in": 1800}


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_file_is_0600_in_a_0700_folder_even_with_a_lax_umask(tmp_path):
    old = os.umask(0)
    try:
        path = credentials.save(credentials.token_record("http://gw.test:8000", "bob", ANSWER, now=100.0),
                                tmp_path / "cfg" / "credentials.json")
    finally:
        os.umask(old)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    record = credentials.load(path)
    assert record["url"] == BASE.replace("gw.test", "gw.test:8000") and record["expires_at"] == 400.0
    assert "password" not in path.read_text()
    assert not list(path.parent.glob(".*tmp"))  # written through a temporary file, nothing left over


def test_a_file_others_can_read_is_refused(tmp_path):
    path = credentials.save({"url": BASE, "access_token": "a"}, tmp_path / "credentials.json")
    os.chmod(path, 0o644)
    with pytest.raises(AuthenticationError, match="readable by others"):
        credentials.load(path)


def test_resolution_order(tmp_path):
    env = {"HEROES_CONFIG_DIR": str(tmp_path), "HEROES_API_URL": "http://hub.test:8000"}
    url, cred = credentials.resolve(token="explicit", env=env)
    assert cred.header() == {"Authorization": "token explicit"} and url.endswith("/services/heroes/api/v1")
    url, cred = credentials.resolve(env={**env, "JUPYTERHUB_API_TOKEN": "hubtok"})
    assert cred.header() == {"Authorization": "token hubtok"}
    url, cred = credentials.resolve(env={**env, "HEROES_ACCESS_TOKEN": "kc"})
    assert cred.header() == {"Authorization": "Bearer kc"}
    with pytest.raises(AuthenticationError, match="heroes login"):
        credentials.resolve(env=env)
    credentials.save({**credentials.token_record(BASE, "bob", ANSWER), "expires_at": 4e9},
                     credentials.credentials_path(env))
    url, cred = credentials.resolve(env=env)
    assert url == BASE and cred.header() == {"Authorization": "Bearer acc"} and cred.renew is not None
    with pytest.raises(AuthenticationError):  # the stored login is for another gateway
        credentials.resolve("http://other.test", env=env)


def test_a_login_and_a_refresh_go_through_the_service_and_are_written_back(tmp_path):
    def route(method, path, call):
        if path == "/organization/auth/login":
            ok = call["json"] == {"username": "bob", "password": "bob-pass"}
            return FakeResponse(200, ANSWER) if ok else FakeResponse(401, {"detail": "invalid username or password"})
        if path == "/organization/auth/refresh_token":
            assert call["headers"]["X-Refresh-Token"] == "ref"
            return FakeResponse(200, {**ANSWER, "access_token": "acc2", "refresh_token": "ref2"})
        return FakeResponse(200, {"username": "bob"}) if call["headers"]["Authorization"] == "Bearer acc2" \
            else FakeResponse(401, {"detail": "bearer token expired"})

    transport = FakeTransport(route)
    with pytest.raises(AuthenticationError, match="invalid username or password"):
        credentials.keycloak_login(BASE, "bob", "wrong", transport)
    record = credentials.keycloak_login(BASE, "bob", "bob-pass", transport)
    path = credentials.save(record, tmp_path / "credentials.json")
    cred = credentials.refreshing_credential(record, transport, path)
    assert Session(BASE, cred, transport=transport).call("GET", "/organization/auth/me") == {"username": "bob"}
    stored = credentials.load(path)
    assert stored["access_token"] == "acc2" and stored["refresh_token"] == "ref2" and mode(path) == 0o600
    stored["refresh_expires_at"] = 1.0  # the Keycloak session is over: say so, do not loop
    with pytest.raises(AuthenticationError, match="log in again"):
        credentials.refreshing_credential(stored, transport).refresh()
