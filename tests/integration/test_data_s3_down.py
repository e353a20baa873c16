"""S3 server down -> the data API answers 503 saying so, and recovers when it is back.

Uses a second Versity Gateway that this test starts itself (own port, own state dir, own root keys) and
stops; the stack's shared S3 server is never touched.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time

import pytest
import requests

from heroes_dev.components.s3 import REGION, S3Server, _supports_user_xattrs
from data_support import DATA, ServiceProcess, free_port, password_token, service_env

pytestmark = pytest.mark.integration


class PrivateGateway:
    """A throw-away versitygw on a free port with its own buckets/IAM dirs and root keys."""

    def __init__(self, binary, root, access, secret):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        (root / "buckets").mkdir(exist_ok=True)
        (root / "iam").mkdir(exist_ok=True)
        argv = [str(binary), "--port", f"127.0.0.1:{self.port}", "--region", REGION,
                "--iam-dir", str(root / "iam"), "--iam-cache-disable", "--quiet", "posix"]
        if not _supports_user_xattrs(root):
            (root / "meta").mkdir(exist_ok=True)
            argv += ["--sidecar", str(root / "meta")]
        argv.append(str(root / "buckets"))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ROOT_ACCESS_KEY_ID": access,
               "ROOT_SECRET_ACCESS_KEY": secret}
        self.log = open(root / "gateway.log", "wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                requests.get(self.endpoint, timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("private versitygw did not start")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def private_gateway(require, stack_settings, tmp_path):
    require("s3")  # built binary; the shared server itself is not used
    binary = S3Server(stack_settings).binary
    access, secret = "priv" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24)
    creds = tmp_path / "creds.json"
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"access_key": access, "secret_key": secret}, fh)
    gw = PrivateGateway(binary, tmp_path, access, secret)
    yield gw, creds
    gw.stop()


def test_s3_down_answers_503_that_says_so(require, stack_settings, private_gateway, tmp_path):
    require("keycloak")
    gw, creds = private_gateway
    env = service_env(stack_settings, "down",
                      HEROES_SERVICE_DATABASE_URL=f"sqlite:///{tmp_path / 'svc.db'}",
                      HEROES_SERVICE_S3_ENDPOINT=gw.endpoint, HEROES_SERVICE_S3_CREDENTIALS_FILE=str(creds))
    service = ServiceProcess(env, tmp_path)
    try:
        headers = {"Authorization": f"Bearer {password_token(stack_settings, 'bob', 'bob-pass')}"}
        buckets = requests.get(service.url + DATA + "/list", headers=headers, timeout=30)
        assert buckets.status_code == 200, buckets.text
        mine = next(b["bucket"] for b in buckets.json()["buckets"] if b["kind"] == "user")
        up = requests.post(service.url + DATA + "/upload", params={"bucket": mine, "key": "k.txt"},
                           data=b"before", headers=headers, timeout=30)
        assert up.status_code == 201, up.text

        gw.stop()
        calls = [
            ("GET", "/list", {}, None),
            ("GET", "/size", {}, None),
            ("GET", f"/bucket/{mine}/list", {}, None),
            ("GET", "/download", {"bucket": mine, "key": "k.txt"}, None),
            ("POST", "/upload", {"bucket": mine, "key": "k2.txt"}, b"after"),
            ("POST", "/upload", {"bucket": mine, "key": "big.bin"}, os.urandom(20 * 1024 * 1024)),
            ("DELETE", f"/bucket/{mine}", {"key": "k.txt"}, None),
        ]
        for method, path, params, body in calls:
            began = time.monotonic()
            r = requests.request(method, service.url + DATA + path, params=params, data=body, headers=headers,
                                 timeout=60)
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            detail = r.json()["detail"]
            assert "object storage" in detail and "unreachable" in detail and gw.endpoint in detail, detail
            assert "Traceback" not in r.text
            assert time.monotonic() - began < 20  # fails fast, does not hang
        assert requests.get(service.url + "/services/heroes/api/v1/health", timeout=5).status_code == 200
    finally:
        service.stop()
