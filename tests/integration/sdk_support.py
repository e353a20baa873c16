"""Fixtures of the SDK and CLI tests: the running gateway (hub, proxy, the hub-managed service) reached over real
HTTP, with the demo data in place (alpha and beta enrolled for acme and globex, the example templates published).

The demo data is set up by the stack's own ``demo-data`` component (``apply`` is idempotent: it adds only what
is missing) and then checked: a test that needs a cluster or a template fails here, naming what is missing,
rather than passing on an empty gateway.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from heroes_sdk import Client
from service_support import DEMO_PASSWORDS, hub_public, hub_user_token

API_PATH = "/services/heroes/api/v1"
HEROES = str(Path(sys.executable).parent / "heroes")  # the gateway's console script: dev, decision and these
STACK = ("keycloak", "s3", "slurm-alpha", "slurm-beta", "image", "login-alpha", "login-beta", "jupyterhub")


def api_url(stack_settings) -> str:
    return hub_public(stack_settings) + API_PATH


@pytest.fixture(scope="module")
def demo(stack_settings, require):
    """The demo data, added where missing and then verified through the API."""
    from heroes_dev.components import demo_data

    for name in STACK:
        require(name)
    demo_data.apply(stack_settings)
    client = demo_data.DemoClient(stack_settings)
    try:
        gaps = demo_data.missing(client, stack_settings)
    finally:
        client.close()
    assert gaps == [], f"the demo data is incomplete after demo-data's apply: {gaps}"
    return {"url": api_url(stack_settings), "stack": stack_settings}


@pytest.fixture(scope="module")
def users(demo):
    """SDK clients of bob, carol and alice, logged in with their passwords (Keycloak tokens, renewed)."""
    return {name: Client(demo["url"], username=name, password=DEMO_PASSWORDS[name])
            for name in ("bob", "carol", "alice")}


def server_env(stack_settings, username: str) -> dict[str, str]:
    """What a single-user server of ``username`` has: its hub token and the service's URL."""
    token = hub_user_token(stack_settings, username, DEMO_PASSWORDS[username])
    return {"JUPYTERHUB_API_TOKEN": token, "HEROES_API_URL": api_url(stack_settings)}


def run_cli(args: list[str], env: dict[str, str], stdin: str | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """``heroes ARGS`` in a child process with ``env`` added to a clean copy of ours (no hub token leaks in)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("JUPYTERHUB_API_TOKEN", "HEROES_ACCESS_TOKEN", "HEROES_API_URL", "HEROES_CONFIG_DIR")}
    return subprocess.run([HEROES, *args], env={**base, **env}, input=stdin, capture_output=True, text=True,
                          timeout=timeout)
