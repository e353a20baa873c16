"""Secrets never appear in API bodies or in the stack's log files (scanned, not assumed).

Runs against the hub's own HEROES service (the one whose logs land in ``.stack/logs``), after the other
workflow tests of this directory (file order). The needles are read from the stack's state dir: every
private key (demo user keys incl. the ``heroes`` service account's, login-node host keys, the gateway's
user-CA key decrypted with the service's at-rest key, that Fernet key itself), the Keycloak client secret
and admin password, S3 root and per-user secret keys, database passwords, the hub's tokens and cookie
secret, the demo passwords, and the access tokens this test is handed.

The test also makes the service handle secrets while it logs: alice enrolls a cluster in service-account
mode with a private key (write-only), tries a corrupted key, and bob runs a workflow with an S3 input on it
(vault decryption, SSH with the key, S3 staging in and out). Every response body is scanned.
"""
from __future__ import annotations

import glob
import json
import re
import secrets
import time
from pathlib import Path

import httpx
import pytest

from heroes_dev.components.jupyterhub import hub_url
from heroes_dev.components.login import host_key_fingerprint, ssh_port, user_key_path
from heroes_service.clusters.vault import Vault
from service_support import DEMO_PASSWORDS

pytestmark = pytest.mark.integration
PREFIX = "/services/heroes/api/v1"
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
KEY_HEADER = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
#: the service's own secrets directory (clusters.fernet, the encrypted user-CA key)
SERVICE_SECRETS = "data/heroes-service/secrets"


def _key_lines(text: str) -> list[str]:
    """The base64 body lines of a PEM/OpenSSH private key (each one alone is key material)."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("-----")]


def _json_secrets(node, path: str = "") -> dict[str, str]:
    """Values of keys named like *secret*/*password* anywhere in a JSON document."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and re.search(r"secret|password", key, re.I):
                found[f"{path}{key}"] = value
            found.update(_json_secrets(value, f"{path}{key}."))
    elif isinstance(node, list):
        for item in node:
            found.update(_json_secrets(item, path))
    return found


def needles(state: Path) -> dict[str, str]:
    """name -> secret value, every one at least 8 characters (shorter ones would match by chance)."""
    found: dict[str, str] = {}
    keys = [p for p in (state / "etc/login/keys").iterdir() if not p.name.endswith(".pub")]
    keys += list(state.glob("data/login-*/ssh_host_ed25519_key"))
    for path in keys:
        for i, line in enumerate(_key_lines(path.read_text())):
            found[f"{path.relative_to(state)}#{i}"] = line
    for rel in ("etc/keycloak/client-secret", "etc/keycloak/admin-password", "etc/postgres/password",
                "secrets/slurmdbd-storage-password", f"{SERVICE_SECRETS}/clusters.fernet",
                "data/jupyterhub/hub/stack-admin-token", "data/jupyterhub/hub/idle-culler-token",
                "data/jupyterhub/hub/crypt-key"):
        if (state / rel).exists():
            found[rel] = (state / rel).read_text().strip()
    cookie = state / "data/jupyterhub/hub/jupyterhub_cookie_secret"
    if cookie.exists():
        found["hub cookie secret"] = cookie.read_bytes().hex()[:64]
    ca = state / SERVICE_SECRETS / "user_ca_ed25519.enc"
    if ca.exists():  # the user-CA private key, decrypted the way the service does
        pem = Vault(state / SERVICE_SECRETS).decrypt(ca.read_text().strip())
        for i, line in enumerate(_key_lines(pem)):
            found[f"user CA key#{i}"] = line
        found["user CA key (encrypted)"] = ca.read_text().strip()
    for rel in ("etc/s3/root-credentials.json", "data/s3/iam/users.json"):
        if (state / rel).exists():
            found.update({f"{rel}:{k}": v for k, v in _json_secrets(json.loads((state / rel).read_text())).items()})
    found.update({f"password of {u}": p for u, p in DEMO_PASSWORDS.items()})
    return {name: value for name, value in found.items() if len(value) >= 8}


def leaks(text: str, secret_values: dict[str, str]) -> list[str]:
    hits = [name for name, value in secret_values.items() if value in text]
    if KEY_HEADER.search(text):
        hits.append("a PEM/OpenSSH private key header")
    return hits


class Recorder:
    """An API client that keeps every response body for the scan."""

    def __init__(self, base: str, user: str):
        r = httpx.post(f"{base}{PREFIX}/organization/auth/login",
                       json={"username": user, "password": DEMO_PASSWORDS[user]}, timeout=30)
        assert r.status_code == 200, r.text
        self.bodies: list[tuple[str, str]] = [(f"login {user}", r.text)]
        self.token = r.json()["access_token"]
        self.refresh = r.json().get("refresh_token") or ""
        self.client = httpx.Client(base_url=f"{base}{PREFIX}", timeout=120,
                                   headers={"Authorization": f"Bearer {self.token}"})

    def __getattr__(self, method: str):
        def call(path: str, **kwargs) -> httpx.Response:
            r = getattr(self.client, method)(path, **kwargs)
            self.bodies.append((f"{method.upper()} {path} -> {r.status_code}", r.text))
            return r
        return call


@pytest.fixture(scope="module")
def service(stack_settings, require):
    for name in ("keycloak", "jupyterhub", "s3", "slurm-alpha", "login-alpha", "image"):
        require(name)
    base = hub_url(stack_settings).rstrip("/")
    spec = httpx.get(f"{base}{PREFIX}/openapi.json", timeout=30).json()
    assert f"{PREFIX}/organization/workflow/submit" in spec["paths"], "the hub's service has no workflow routes"
    alice, bob = Recorder(base, "alice"), Recorder(base, "bob")
    yield {"alice": alice, "bob": bob, "state": stack_settings.state}
    alice.client.close()
    bob.client.close()


def _wait_final(api: Recorder, iid: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/organization/workflow/instance/{iid}").json()
        if body["state"] in FINAL:
            return body
        time.sleep(2)
    raise AssertionError(f"instance {iid} not final after {timeout}s: {body['state']}")


def test_api_bodies_carry_no_secret(service, stack_settings):
    alice, bob, state = service["alice"], service["bob"], service["state"]
    key_text = user_key_path(stack_settings, "heroes").read_text()
    tag = secrets.token_hex(3)
    # a corrupted key: refused without echoing any of it
    lines = key_text.splitlines()
    corrupted = "\n".join(lines[:2] + [lines[2][::-1]] + lines[3:]) + "\n"
    fields = {"host": stack_settings.host, "port": ssh_port(stack_settings, "alpha"),
              "host_key_fingerprint": host_key_fingerprint(stack_settings, "alpha"), "work_dir": "heroes-work/{login}",
              "container_runtime": "charliecloud", "identity_mode": "service-account", "service_login": "heroes"}
    r = alice.post("/organization/admin/cluster/", json={**fields, "name": f"scan-bad-{tag}",
                                                         "service_private_key": corrupted})
    assert r.status_code == 422, r.text
    assert not any(line in r.text for line in _key_lines(corrupted)), r.text
    # the real key: accepted, encrypted at rest, never returned
    r = alice.post("/organization/admin/cluster/", json={**fields, "name": f"scan-{tag}", "service_private_key": key_text})
    assert r.status_code == 201, r.text
    cluster = r.json()
    assert cluster["has_service_key"] is True and "service_private_key" not in cluster
    template_id = None
    try:
        alice.get("/organization/admin/cluster/")
        alice.get(f"/organization/admin/cluster/{cluster['id']}")
        r = alice.post(f"/organization/admin/cluster/{cluster['id']}/test")
        assert r.status_code == 200 and r.json()["ok"], r.text
        alice.get("/organization/admin/cluster/ca")
        bob.get("/organization/cluster/")
        r = alice.post("/organization/admin/workflow/template", json={"template": {
            "name": f"scan-{tag}", "title": "secrets scan",
            "parameters": [{"name": "data", "type": "file"}, {"name": "word", "type": "string", "default": "hi"}],
            "steps": [{"name": "a", "command": ["sh", "-c", "wc -c < \"$1\" > outputs/size.txt; echo \"$2\"", "sh",
                                                "{data}", "{word}"], "resources": {"memory_mb": 64}}],
            "outputs": ["outputs/*"]}})
        assert r.status_code == 201, r.text
        template_id = r.json()["id"]
        buckets = bob.get("/organization/data/list").json()["buckets"]
        bucket = next(b["bucket"] for b in buckets if b["kind"] == "user" and b["default"])
        r = bob.post("/organization/data/upload", params={"bucket": bucket, "key": f"scan/{tag}.txt"},
                     content=b"twelve bytes")
        assert r.status_code == 201, r.text
        r = bob.post("/organization/workflow/submit", json={
            "template_id": template_id, "cluster": f"scan-{tag}",
            "parameters": {"data": {"bucket": bucket, "key": f"scan/{tag}.txt"}, "word": "hello"}})
        assert r.status_code == 201, r.text
        iid = r.json()["id"]
        final = _wait_final(bob, iid)
        assert final["state"] == "COMPLETED", (final["state"], final["reason"])
        assert bob.get("/organization/data/download", params={
            "bucket": bucket, "key": f"workflows/{iid}/outputs/size.txt"}).text.strip() == "12"
        bob.get(f"/organization/workflow/instance/{iid}/log/a")
        bob.get("/organization/workflow/instance")
        bob.get("/organization/workflow/visualization", params={"instance_id": iid})
        alice.get(f"/organization/admin/workflow/instance/{template_id}")
        bob.get("/organization/workflow/template")
        bob.get(f"/organization/workflow/template/{template_id}")
        bob.delete("/organization/data/bucket/" + bucket, params={"key": f"scan/{tag}.txt"})
    finally:
        if template_id:
            alice.delete(f"/organization/admin/workflow/template/{template_id}")
        alice.delete(f"/organization/admin/cluster/{cluster['id']}")
    secret_values = needles(state)
    assert any(name.startswith("etc/login/keys/heroes") for name in secret_values)
    found = {label: hit for label, body in alice.bodies + bob.bodies
             if not label.startswith("login ") and (hit := leaks(body, secret_values))}
    assert found == {}, found
    print(f"scanned {len(alice.bodies) + len(bob.bodies)} response bodies for {len(secret_values)} secrets: none")


def test_log_files_carry_no_secret(service):
    state = service["state"]
    secret_values = needles(state)
    # the bearer/refresh tokens handed to this test are secrets too
    for user in ("alice", "bob"):
        secret_values[f"{user}'s access token"] = service[user].token
        if service[user].refresh:
            secret_values[f"{user}'s refresh token"] = service[user].refresh
    kinds = {name.split("#")[0].split(":")[0] for name in secret_values}
    assert {"etc/login/keys/heroes", "user CA key", f"{SERVICE_SECRETS}/clusters.fernet", "etc/keycloak/client-secret",
            "etc/s3/root-credentials.json", "data/s3/iam/users.json", "password of bob"} <= kinds, kinds  # not vacuous
    logs = sorted(glob.glob(str(state / "logs" / "*.log")))
    assert any(Path(p).name == "jupyterhub.log" for p in logs), logs  # the hub's service logs here
    found = {}
    for path in logs:
        text = Path(path).read_text(errors="replace")
        if hits := leaks(text, secret_values):
            found[Path(path).name] = hits
    assert found == {}, found
    print(f"scanned {len(logs)} log files for {len(secret_values)} secrets: none")
