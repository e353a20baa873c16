"""Notebooks in S3: a notebook saved through bob's JupyterLab lands in bob's bucket and carol cannot see it.

Against the running hub (``heroes dev up jupyterhub``, whose pre-spawn hook points servers at S3), the real
S3 server and the live HEROES service behind the hub's proxy.
"""
from __future__ import annotations

import json
import secrets
import time

import httpx
import nbformat
import pytest

from heroes_dev.components.jupyterhub import admin_token, hub_url
from heroes_dev.components.s3 import client as s3_client
from data_support import password_token

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub_api(require, stack_settings):
    require("jupyterhub")
    require("s3")
    with httpx.Client(base_url=f"http://127.0.0.1:{stack_settings.ports.hub_api}/hub/api",
                      headers={"Authorization": f"token {admin_token(stack_settings)}"}, timeout=60) as api:
        yield api


def start_server(api: httpx.Client, name: str, timeout: float = 150) -> None:
    """A fresh spawn (stopping a running server first), so the pre-spawn hook runs with the current config."""
    assert api.post(f"/users/{name}").status_code in (201, 409)
    if api.get(f"/users/{name}").json().get("servers", {}).get(""):
        api.delete(f"/users/{name}/server")
        deadline = time.monotonic() + 60
        while api.get(f"/users/{name}").json().get("servers", {}).get("") and time.monotonic() < deadline:
            time.sleep(1)
    started = api.post(f"/users/{name}/server")
    assert started.status_code in (201, 202, 400), started.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = api.get(f"/users/{name}").json().get("servers", {}).get("")
        if server and server.get("ready"):
            return
        time.sleep(1)
    raise AssertionError(f"{name}'s server was not ready after {timeout}s")


def server_token(api: httpx.Client, name: str) -> str:
    answer = api.post(f"/users/{name}/tokens", json={"scopes": [f"access:servers!user={name}"],
                                                     "expires_in": 600, "note": "test_data_notebooks"})
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


def test_notebook_saved_in_lab_lands_in_bobs_bucket_and_carol_cannot_see_it(hub_api, stack_settings):
    start_server(hub_api, "bob")
    base = hub_url(stack_settings)
    name = f"saved-in-lab-{secrets.token_hex(3)}.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("print('hello from bob')"))
    bob = httpx.Client(base_url=f"{base}/user/bob/api",
                       headers={"Authorization": f"token {server_token(hub_api, 'bob')}"}, timeout=60)
    saved = bob.put(f"/contents/{name}", json={"type": "notebook", "format": "json", "content": nb})
    assert saved.status_code in (200, 201), saved.text
    # the bytes are in bob's bucket under notebooks/, written by bob's server with its scoped keys
    s3 = s3_client(stack_settings)
    body = s3.get_object(Bucket="heroes-u-bob", Key=f"notebooks/{name}")["Body"].read()
    assert json.loads(body)["cells"][0]["source"] == "print('hello from bob')"
    # the dashboards are still there (copied into the bucket at spawn)
    listing = {m["name"] for m in bob.get("/contents/").json()["content"]}
    assert name in listing and "welcome.ipynb" in listing

    # carol: not through the data API, not in her own server's contents
    carol_api = httpx.Client(base_url=f"{base}/services/heroes/api/v1/organization/data", timeout=60, headers={
        "Authorization": f"Bearer {password_token(stack_settings, 'carol', 'carol-pass')}"})
    assert carol_api.get("/bucket/heroes-u-bob/list", params={"prefix": "notebooks/"}).status_code == 404
    assert carol_api.get("/download", params={"bucket": "heroes-u-bob", "key": f"notebooks/{name}"}).status_code == 404
    start_server(hub_api, "carol")
    carol = httpx.Client(base_url=f"{base}/user/carol/api",
                         headers={"Authorization": f"token {server_token(hub_api, 'carol')}"}, timeout=60)
    assert name not in {m["name"] for m in carol.get("/contents/").json()["content"]}
    assert carol.get(f"/contents/{name}").status_code == 404
    # and carol's token does not open bob's server
    assert carol.get(f"{base}/user/bob/api/contents/{name}").status_code in (302, 403, 404)
    assert bob.delete(f"/contents/{name}").status_code == 204
