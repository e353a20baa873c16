"""The embedded S3 store (Versity Gateway) against the real server: data, persistence, auth, secrets.

Needs ``heroes dev up s3`` (or ``heroes dev test``); fails, never skips, when the store is down.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from heroes_dev.components.s3 import client, credentials_path, root_credentials, s3_endpoint

#: the CLI of the venv running the tests (the checkout's own ``heroes``), run as a real subprocess
HEROES = str(Path(sys.executable).with_name("heroes"))


def heroes(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``heroes <args>`` the way a person does, with the test's environment (same state dir, ports)."""
    return subprocess.run([HEROES, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


@pytest.fixture
def s3(require):
    component = require("s3")
    return component


@pytest.fixture
def bucket(s3, stack_settings):
    """A fresh bucket for one test, emptied and removed afterwards."""
    name = f"test-s3-{secrets.token_hex(4)}"
    client(stack_settings).create_bucket(Bucket=name)
    yield name
    root = client(stack_settings)
    for page in root.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            root.delete_object(Bucket=name, Key=obj["Key"])
    root.delete_bucket(Bucket=name)


def _put_random(settings, bucket: str, key: str, size: int) -> str:
    body = os.urandom(size)
    client(settings).put_object(Bucket=bucket, Key=key, Body=body)
    return hashlib.sha256(body).hexdigest()


def _get_sha256(settings, bucket: str, key: str) -> str:
    return hashlib.sha256(client(settings).get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def test_put_get_round_trip_keeps_bytes(stack_settings, bucket):
    digest = _put_random(stack_settings, bucket, "dir/sub/data.bin", 3 * 1024 * 1024 + 17)
    assert _get_sha256(stack_settings, bucket, "dir/sub/data.bin") == digest
    listed = client(stack_settings).list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("dir/sub/data.bin", 3 * 1024 * 1024 + 17)]


def test_multipart_upload_round_trip(stack_settings, bucket):
    """boto3's transfer manager splits large files into parts; the gateway must reassemble them."""
    from boto3.s3.transfer import TransferConfig
    import io

    body = os.urandom(12 * 1024 * 1024)
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    client(stack_settings).upload_fileobj(io.BytesIO(body), bucket, "big.bin", Config=config)
    head = client(stack_settings).head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(body)
    assert "-" in head["ETag"]  # a multipart ETag ("<md5>-<parts>"), so it really went up in parts
    assert _get_sha256(stack_settings, bucket, "big.bin") == hashlib.sha256(body).hexdigest()


def test_object_survives_down_and_up(stack_settings, s3, bucket):
    digest = _put_random(stack_settings, bucket, "keep.bin", 256 * 1024)
    pids_before = {r.pid for r in s3.records()}

    down = heroes("dev", "down", "s3")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(r.alive() for r in s3.records())
    with pytest.raises(Exception):
        client(stack_settings, timeout=2).list_buckets()  # really stopped, not just forgotten

    up = heroes("dev", "up", "s3")
    assert up.returncode == 0, up.stdout + up.stderr
    pids_after = {r.pid for r in s3.records()}
    assert pids_after and pids_after.isdisjoint(pids_before)  # a new process serves the old data
    assert _get_sha256(stack_settings, bucket, "keep.bin") == digest


def test_wrong_secret_is_refused(stack_settings, s3):
    access, secret = root_credentials(stack_settings)
    wrong = client(stack_settings, access, secret[:-4] + "oops")
    with pytest.raises(ClientError) as err:
        wrong.list_buckets()
    assert err.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied"}
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unknown_access_key_is_refused(stack_settings, s3):
    stranger = client(stack_settings, "NOSUCHKEY" + secrets.token_hex(4).upper(), secrets.token_urlsafe(30))
    with pytest.raises(ClientError) as err:
        stranger.list_buckets()
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_root_secret_stays_out_of_logs_and_records(stack_settings, s3):
    _, secret = root_credentials(stack_settings)
    path = credentials_path(stack_settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    logs = s3.log_paths()
    assert logs and all(p.exists() for p in logs)
    for log in logs:
        assert secret not in log.read_text(errors="replace"), f"root secret leaked into {log}"
    assert secret not in s3.book.path.read_text()  # the pid record keeps argv
    for record in s3.records():
        assert secret not in " ".join(record.process().cmdline())  # `ps` shows argv to every user


def test_second_up_changes_nothing(stack_settings, s3):
    pids_before = [(r.pid, r.create_time) for r in s3.records()]
    up = heroes("dev", "up", "s3")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "already running" in up.stdout
    assert [(r.pid, r.create_time) for r in s3.records()] == pids_before


def test_status_reports_s3_healthy(stack_settings, s3):
    status = heroes("dev", "status", "--json", timeout=120)
    rows = {row["component"]: row for row in json.loads(status.stdout)}
    assert rows["s3"]["state"] == "healthy", rows["s3"]
    assert str(stack_settings.ports.s3) in rows["s3"]["ports"]
    assert s3_endpoint(stack_settings).endswith(f":{stack_settings.ports.s3}")
