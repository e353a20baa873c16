"""Shared fixtures of the data API tests (imported by test_data_*.py; holds no tests itself).

The service runs as a real uvicorn process (the way the hub runs it) on a free port, against the stack's
real Keycloak (users log in with the password grant and call the API with bearer tokens) and the real S3
server. Each test session uses its own bucket base (``t<hex>``), so its buckets and gateway accounts
never touch the live service's, and removes them at the end.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import psutil
import pytest
import requests

from heroes_dev.components import keycloak as kc
from heroes_dev.components.s3 import client as s3_client
from heroes_dev.components.s3 import s3_endpoint
from heroes_service.data.iam import GatewayAdmin, account_name
from heroes_dev.components.s3 import root_credentials

PREFIX = "/services/heroes/api/v1"
DATA = f"{PREFIX}/organization/data"
PASSWORDS = {"alice": "alice-pass", "bob": "bob-pass", "carol": "carol-pass", "root": "root-pass"}
GiB = 1024**3
MiB = 1024**2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """The HEROES service under uvicorn in a subprocess, with the environment a test gives it."""

    def __init__(self, env: dict[str, str], workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"service-{self.port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HEROES_SERVICE_", "JUPYTERHUB_"))}
        full_env.update(env)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "heroes_service.app:app", "--host", "127.0.0.1",
                 "--port", str(self.port), "--no-access-log"],
                env=full_env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}{PREFIX}/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"service did not answer in 60 s: {self.log.read_text()[-3000:]}")

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def password_token(settings, username: str, password: str) -> str:
    response = requests.post(f"{kc.issuer_url(settings)}/protocol/openid-connect/token", timeout=10, data={
        "grant_type": "password", "client_id": kc.CLIENT_ID, "client_secret": kc.client_secret(settings),
        "username": username, "password": password, "scope": "openid"})
    assert response.status_code == 200, f"login of {username} failed: {response.status_code} {response.text[:200]}"
    return response.json()["access_token"]


class ReadOnlyMember:
    """A throw-away Keycloak user in /acme and /acme/data-readonly (role user), removed afterwards."""

    def __init__(self, settings):
        self.admin = kc.AdminClient(settings)
        self.username = f"dana-{secrets.token_hex(3)}"
        self.password = secrets.token_urlsafe(16)
        self.created_group = None
        status, _ = self.admin.call("POST", "/users", {
            "username": self.username, "enabled": True, "email": f"{self.username}@example.org",
            "emailVerified": True, "firstName": "Dana", "lastName": "Readonly",
            "credentials": [{"type": "password", "value": self.password, "temporary": False}]})
        assert status == 201, status
        self.user_id = self._one(f"/users?exact=true&username={self.username}")["id"]
        acme = self._group_by_path("/acme")
        readonly = self._child(acme["id"], "data-readonly")
        for group in (acme, readonly):
            status, _ = self.admin.call("PUT", f"/users/{self.user_id}/groups/{group['id']}")
            assert status == 204, status
        status, body = self.admin.call("GET", "/roles/user")
        status, _ = self.admin.call("POST", f"/users/{self.user_id}/role-mappings/realm", [json.loads(body)])
        assert status == 204, status

    def _one(self, path: str) -> dict:
        status, body = self.admin.call("GET", path)
        assert status == 200, (path, status)
        found = json.loads(body)
        assert found, path
        return found[0]

    def _group_by_path(self, path: str) -> dict:
        status, body = self.admin.call("GET", f"/group-by-path{urllib.parse.quote(path)}")
        assert status == 200, (path, status)
        return json.loads(body)

    def _child(self, parent_id: str, name: str) -> dict:
        status, body = self.admin.call("GET", f"/groups/{parent_id}/children?briefRepresentation=true&max=200")
        for child in json.loads(body) if status == 200 else []:
            if child["name"] == name:
                return child
        status, _ = self.admin.call("POST", f"/groups/{parent_id}/children", {"name": name})
        assert status == 201, status
        self.created_group = name
        status, body = self.admin.call("GET", f"/groups/{parent_id}/children?briefRepresentation=true&max=200")
        return next(c for c in json.loads(body) if c["name"] == name)

    def remove(self) -> None:
        self.admin.call("DELETE", f"/users/{self.user_id}")


class Api:
    """A small client of the data API for one caller (``token=None``: anonymous)."""

    def __init__(self, base_url: str, token: str | None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=httpx.Timeout(300, connect=10))

    def get(self, path, **kw):
        return self.http.get(DATA + path, **kw)

    def post(self, path, **kw):
        return self.http.post(DATA + path, **kw)

    def delete(self, path, **kw):
        return self.http.delete(DATA + path, **kw)

    def upload(self, bucket: str, key: str, content, **params):
        return self.post("/upload", params={"bucket": bucket, "key": key, **params}, content=content)

    def download(self, bucket: str, key: str, **kw):
        return self.get("/download", params={"bucket": bucket, "key": key}, **kw)


def cleanup_base(settings, base: str) -> None:
    """Remove every bucket of a test bucket base (objects, policy, bucket) and its gateway accounts."""
    root = s3_client(settings)
    for b in root.list_buckets().get("Buckets", []):
        name = b["Name"]
        if not name.startswith(f"{base}-"):
            continue
        for page in root.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                root.delete_object(Bucket=name, Key=obj["Key"])
        for up in root.list_multipart_uploads(Bucket=name).get("Uploads", []):
            root.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
        try:
            root.delete_bucket_policy(Bucket=name)
        except Exception:
            pass
        root.delete_bucket(Bucket=name)
    access, secret = root_credentials(settings)
    admin = GatewayAdmin(s3_endpoint(settings), access, secret)
    mine = {account_name(u, base) for u in [*PASSWORDS, "dana"]}
    for acc in admin.list_accounts():
        if acc in mine:
            admin.delete_account(acc)


def service_env(settings, base: str, **extra: str) -> dict[str, str]:
    return {
        "HEROES_STATE_DIR": str(settings.state),
        "HEROES_SERVICE_DATABASE_URL": "",
        "HEROES_SERVICE_KEYCLOAK_URL": kc.base_url(settings),
        "HEROES_SERVICE_S3_ENDPOINT": s3_endpoint(settings),
        "HEROES_SERVICE_DATA_BUCKET_BASE": base,
        **extra,
    }


@pytest.fixture(scope="session")
def data_stack(require, stack_settings, tmp_path_factory):
    """(settings, service, base): one service process for the data tests, on a fresh bucket base."""
    require("keycloak")
    require("s3")
    base = f"t{secrets.token_hex(3)}"
    work = tmp_path_factory.mktemp("data-service")
    env = service_env(stack_settings, base,
                      HEROES_SERVICE_DATABASE_URL=f"sqlite:///{work / 'service.db'}",
                      # globex is small so that quota tests run fast; acme holds the 1 GiB tests
                      HEROES_SERVICE_DATA_ORG_QUOTAS=json.dumps({"globex": 8 * MiB, "acme": 6 * GiB}))
    service = ServiceProcess(env, work)
    try:
        yield stack_settings, service, base
    finally:
        service.stop()
        cleanup_base(stack_settings, base)


@pytest.fixture(scope="session")
def readonly_member(data_stack):
    settings = data_stack[0]
    member = ReadOnlyMember(settings)
    yield member
    member.remove()


@pytest.fixture(scope="session")
def apis(data_stack, readonly_member):
    """Api clients: alice (acme org admin), bob (acme), carol (globex), dana (acme, read-only), anon."""
    settings, service, _ = data_stack
    out = {name: Api(service.url, password_token(settings, name, pw)) for name, pw in PASSWORDS.items()}
    out["dana"] = Api(service.url, password_token(settings, readonly_member.username, readonly_member.password))
    out["anon"] = Api(service.url, None)
    return out


@pytest.fixture(scope="session")
def spaces(apis):
    """The default bucket names, read from each caller's own list."""
    def default(api, kind):
        buckets = api.get("/list").json()["buckets"]
        return next(b["bucket"] for b in buckets if b["kind"] == kind and b["default"])

    return {"bob": default(apis["bob"], "user"), "alice": default(apis["alice"], "user"),
            "carol": default(apis["carol"], "user"), "acme": default(apis["bob"], "organization"),
            "globex": default(apis["carol"], "organization")}
