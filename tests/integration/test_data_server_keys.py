"""S3 keys per single-user server (issue 17), through the running hub: a person with two running servers keeps
both working, a restart of one leaves the other alone, a stopped server's keys stop working, and a server whose
keys are refused says so (and how to recover) instead of a bare 404.

Before, the hub rotated the user's one S3 account at every spawn, so bob's first server lost its keys when his
second started (SignatureDoesNotMatch, then "404: Not Found" in every app). Now the hub asks the service for
each server's own keys with its token-only service ``hub-server-keys``; the hub holds no S3 admin keys.
"""
from __future__ import annotations

import json
import secrets
import time

import boto3
import httpx
import nbformat
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from heroes_dev.components import keycloak as kc
from heroes_dev.components.jupyterhub import admin_token, hub_url
from heroes_dev.components.s3 import client as s3_root, s3_endpoint

pytestmark = pytest.mark.integration
SECOND = "keys-second"
#: a person of acme of this test's own (the demo users' servers are started and stopped by other tests)
USER = "keystest"
BUCKET = f"heroes-u-{USER}"


@pytest.fixture(scope="module")
def hub(require, stack_settings):
    """The hub's API as stack-admin, with ``USER`` in Keycloak (acme, role user) and in the hub."""
    require("jupyterhub")
    require("s3")
    admin = kc.AdminClient(stack_settings)
    status, _ = admin.call("POST", "/users", {
        "username": USER, "enabled": True, "email": f"{USER}@acme.example.org", "emailVerified": True,
        "firstName": "Keys", "lastName": "Test", "groups": ["/acme"],
        "credentials": [{"type": "password", "value": secrets.token_urlsafe(16), "temporary": False}]})
    assert status in (201, 409), status
    status, body = admin.call("GET", f"/users?exact=true&username={USER}")
    user_id = json.loads(body)[0]["id"]
    status, role = admin.call("GET", "/roles/user")
    admin.call("POST", f"/users/{user_id}/role-mappings/realm", [json.loads(role)])
    status, acme = admin.call("GET", "/group-by-path/acme")
    admin.call("PUT", f"/users/{user_id}/groups/{json.loads(acme)['id']}")
    with httpx.Client(base_url=f"http://127.0.0.1:{stack_settings.ports.hub_api}/hub/api",
                      headers={"Authorization": f"token {admin_token(stack_settings)}"}, timeout=60) as api:
        assert api.post(f"/users/{USER}").status_code in (201, 409)
        try:
            yield api
        finally:
            for name in (SECOND, ""):
                stop(api, name)
            api.delete(f"/users/{USER}")
            # a fresh admin token: the first one has expired by now (Keycloak's admin tokens live a minute)
            assert kc.AdminClient(stack_settings).call("DELETE", f"/users/{user_id}")[0] == 204
            empty_bucket(stack_settings)


def empty_bucket(settings) -> None:
    root = s3_root(settings)
    for page in root.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            root.delete_object(Bucket=BUCKET, Key=obj["Key"])
    root.delete_bucket(Bucket=BUCKET)


def server_path(name: str) -> str:
    return f"/users/{USER}/server" if not name else f"/users/{USER}/servers/{name}"


def server_model(hub: httpx.Client, name: str) -> dict | None:
    return hub.get(f"/users/{USER}").json().get("servers", {}).get(name)


def stop(hub: httpx.Client, name: str) -> None:
    hub.delete(server_path(name))
    deadline = time.monotonic() + 90
    while server_model(hub, name) is not None:
        assert time.monotonic() < deadline, f"{USER}'s server {name!r} did not stop"
        time.sleep(1)


def start(hub: httpx.Client, name: str, fresh: bool = True) -> None:
    """Start (freshly: stopping a running one first, so the spawn hooks run now) and wait until ready."""
    if fresh:
        stop(hub, name)
    r = hub.post(server_path(name), json={})
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + 150
    while not (server_model(hub, name) or {}).get("ready"):
        assert time.monotonic() < deadline, f"{USER}'s server {name!r} was not ready after 150s"
        time.sleep(1)


def contents(settings, hub: httpx.Client, name: str) -> httpx.Client:
    """The person's Jupyter contents API on one of their servers, with a token that may open their servers."""
    token = hub.post(f"/users/{USER}/tokens", json={"scopes": [f"access:servers!user={USER}"], "expires_in": 900,
                                                     "note": "test_data_server_keys"}).json()["token"]
    prefix = f"/user/{USER}/{name}/" if name else f"/user/{USER}/"
    return httpx.Client(base_url=f"{hub_url(settings)}{prefix}api", timeout=60,
                        headers={"Authorization": f"token {token}"})


def save_and_read(server: httpx.Client, label: str) -> None:
    """A notebook written through this server reads back through it (the server's keys work)."""
    name = f"keys-{label}-{secrets.token_hex(3)}.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(f"written by {label}"))
    saved = server.put(f"/contents/{name}", json={"type": "notebook", "format": "json", "content": nb})
    assert saved.status_code in (200, 201), f"{label}: {saved.status_code} {saved.text[:300]}"
    read = server.get(f"/contents/{name}")
    assert read.status_code == 200, f"{label}: {read.status_code} {read.text[:300]}"
    assert read.json()["content"]["cells"][0]["source"] == f"written by {label}"
    assert server.delete(f"/contents/{name}").status_code == 204


def keys_of(name: str) -> tuple[str, str]:
    """The S3 keys in the environment of the person's running server ``name`` (read from the process, as root)."""
    for proc in psutil.process_iter(["username", "cmdline", "environ"]):
        env = proc.info.get("environ") or {}
        if proc.info.get("username") == f"jh-{USER}" and env.get("JUPYTERHUB_SERVER_NAME", "") == name \
                and "HEROES_S3_ACCESS_KEY_ID" in env:
            return env["HEROES_S3_ACCESS_KEY_ID"], env["HEROES_S3_SECRET_ACCESS_KEY"]
    raise AssertionError(f"no running server {name!r} of {USER} with S3 keys in its environment")


def s3_as(settings, keys: tuple[str, str]):
    return boto3.client("s3", endpoint_url=s3_endpoint(settings), region_name="us-east-1",
                        aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
                        config=Config(signature_version="s3v4", retries={"max_attempts": 1}))


def test_two_running_servers_of_one_user_both_keep_working(hub, stack_settings):
    start(hub, "")
    default = contents(stack_settings, hub, "")
    save_and_read(default, "default")
    default_keys = keys_of("")

    start(hub, SECOND)
    second = contents(stack_settings, hub, SECOND)
    second_keys = keys_of(SECOND)
    assert second_keys[0] != default_keys[0]  # one account per server
    save_and_read(second, "second")
    save_and_read(default, "default after the second started")  # the old rotation broke exactly this
    assert keys_of("") == default_keys

    # a restart of the second server re-keys that server only
    start(hub, SECOND)
    assert keys_of(SECOND)[1] != second_keys[1]
    save_and_read(default, "default after the second restarted")
    save_and_read(contents(stack_settings, hub, SECOND), "second after its restart")

    # a stopped server's keys stop working; the running one's do not
    stop(hub, SECOND)
    with pytest.raises(ClientError) as refused:
        s3_as(stack_settings, second_keys).list_objects_v2(Bucket=BUCKET, Prefix="notebooks/", MaxKeys=1)
    assert refused.value.response["Error"]["Code"] in ("InvalidAccessKeyId", "AccessDenied", "SignatureDoesNotMatch")
    save_and_read(default, "default after the second stopped")
    s3_as(stack_settings, default_keys).list_objects_v2(Bucket=BUCKET, Prefix="notebooks/", MaxKeys=1)


def test_a_server_whose_keys_are_refused_says_how_to_recover(hub, stack_settings):
    """The keys of a running server revoked behind its back (as the hub's stop hook would): its file list and
    its apps answer 503 with what happened and what to do, not a bare 404."""
    start(hub, SECOND)
    second = contents(stack_settings, hub, SECOND)
    assert second.get("/contents/").status_code == 200
    token = (stack_settings.data("jupyterhub") / "hub" / "server-keys-token").read_text().strip()
    revoked = httpx.delete(f"{hub_url(stack_settings)}/services/heroes/api/v1/organization/data/server-credentials",
                           params={"user": USER, "server": SECOND}, headers={"Authorization": f"token {token}"},
                           timeout=60)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True, revoked.text
    time.sleep(6)  # the contents manager reuses its verdict of the store for a few seconds
    listing = second.get("/contents/")
    assert listing.status_code == 503, listing.text[:300]
    message = listing.json()["message"]
    assert "refused this server's keys" in message and "Stop My Server" in message and "safe" in message
    page = httpx.get(f"{hub_url(stack_settings)}/user/{USER}/{SECOND}/voila/render/welcome.ipynb",
                     headers=second.headers, timeout=60)
    assert page.status_code == 503 and "Stop My Server" in page.text, page.text[:500]
    # and recovering is what the message says: restart, and the server works again
    start(hub, SECOND)
    save_and_read(contents(stack_settings, hub, SECOND), "second after recovering")
    stop(hub, SECOND)


def test_only_the_hubs_service_token_gets_a_servers_keys(hub, stack_settings):
    """The person's own token (what their kernels hold) and the stack-admin service's token are refused."""
    url = f"{hub_url(stack_settings)}/services/heroes/api/v1/organization/data/server-credentials"
    own = hub.post(f"/users/{USER}/tokens", json={"scopes": ["access:services!service=heroes"], "expires_in": 300,
                                                   "note": "test_data_server_keys"}).json()["token"]
    for token in (own, admin_token(stack_settings)):
        r = httpx.post(url, json={"user": USER, "server": ""}, headers={"Authorization": f"token {token}"},
                       timeout=60)
        assert r.status_code == 403, r.text
        assert "secret_access_key" not in r.text


def test_the_hub_holds_no_s3_admin_keys(hub, stack_settings, stack_components):
    """The S3 root keys are the service's alone: not in the hub's environment, nor in any spawned server's."""
    from heroes_dev.components.s3 import root_credentials

    access, secret = root_credentials(stack_settings)
    (record,) = [r for r in stack_components["jupyterhub"].records() if r.name == "jupyterhub"]
    hub_env = psutil.Process(record.pid).environ()
    assert secret not in hub_env.values() and access not in hub_env.values()
    service = [p for p in psutil.Process(record.pid).children(recursive=True)
               if "heroes_service.app:app" in " ".join(p.cmdline())]
    assert service, "the hub-managed service is not a child of the hub"
    start(hub, "")
    server_env = next(p.info["environ"] for p in psutil.process_iter(["username", "environ"])
                      if p.info["username"] == f"jh-{USER}" and "HEROES_S3_ACCESS_KEY_ID" in (p.info["environ"] or {}))
    assert server_env["HEROES_S3_ACCESS_KEY_ID"] != access and secret not in server_env.values()
