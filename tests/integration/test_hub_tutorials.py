"""The tutorials reach a user's notebook space at spawn (hub_config/heroes_data.py) on the real S3 server, and a
copy the user already has — run, edited — is never overwritten, unlike the dashboards."""
from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest

from heroes_dev.components.s3 import client

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hub_config"))
import heroes_data  # noqa: E402

TUTORIALS = ROOT / "notebooks" / "tutorials"


@pytest.fixture
def bucket(require, stack_settings):
    require("s3")
    name = f"test-tutorials-{secrets.token_hex(4)}"
    root = client(stack_settings)
    root.create_bucket(Bucket=name)
    yield root, name
    for page in root.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            root.delete_object(Bucket=name, Key=obj["Key"])
    root.delete_bucket(Bucket=name)


def test_tutorials_are_copied_once_and_a_users_copy_is_kept(bucket):
    s3, name = bucket
    expected = sorted(p.name for p in TUTORIALS.glob("*.ipynb"))
    assert len(expected) >= 3, "the three tutorials are in notebooks/tutorials/"

    heroes_data._upload_tutorials(s3, name, TUTORIALS)
    listed = s3.list_objects_v2(Bucket=name, Prefix="notebooks/tutorials/").get("Contents", [])
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed) == expected

    edited_key = f"notebooks/tutorials/{expected[0]}"
    s3.put_object(Bucket=name, Key=edited_key, Body=b'{"edited": "by the user"}')
    heroes_data._upload_tutorials(s3, name, TUTORIALS)
    assert s3.get_object(Bucket=name, Key=edited_key)["Body"].read() == b'{"edited": "by the user"}'
    assert s3.get_object(Bucket=name, Key=f"notebooks/tutorials/{expected[1]}")["Body"].read() == \
        (TUTORIALS / expected[1]).read_bytes()
