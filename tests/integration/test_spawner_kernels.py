"""Remote Slurm kernels: bob's notebook server runs on the gateway, its kernel runs as a Slurm job on
alpha (kernelspec 'heroes-alpha-small', provisioner heroes_kernels), connected through SSH-tunnelled
ports on the hub host. The kernel reports the node's SLURMD_NODENAME; interrupt stops a running cell,
restart gives a new job, and shutdown leaves no job behind.
"""
from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from heroes_dev.components.jupyterhub import hub_url
from spawner_support import (KERNEL_JOB, ensure_enrolled, hub_admin, jobs_named, server_of, server_token, slurm,
                             wait_until)

pytestmark = pytest.mark.integration
SPEC = "heroes-alpha-small"


@pytest.fixture(scope="module")
def gateway_server(require, stack_settings):
    for name in ("jupyterhub", "slurm-alpha", "login-alpha"):
        require(name)
    ensure_enrolled(stack_settings, "alpha")
    for leftover in jobs_named(stack_settings, "alpha", KERNEL_JOB):  # of interrupted runs
        slurm(stack_settings, "alpha", "scancel", leftover["id"])
    for _ in range(3):  # a shared hub: another session may stop bob's server while it starts
        with hub_admin(stack_settings) as api:
            api.delete("/users/bob/server")
            wait_until("bob's old server to stop", lambda: server_of(stack_settings, "bob") is None, 60)
            api.post("/users/bob/server", json={"user_options": {"target": "gateway"}})
        try:
            wait_until("bob's gateway server", lambda: (s := server_of(stack_settings, "bob")) and s.get("ready"),
                       120, 2)
            break
        except AssertionError:
            continue
    token = server_token(stack_settings, "bob")
    client = httpx.Client(base_url=hub_url(stack_settings).rstrip("/") + "/user/bob/api",
                          headers={"Authorization": f"token {token}"}, timeout=400)
    yield client, token
    with hub_admin(stack_settings) as api:
        api.delete("/users/bob/server")


def execute(stack, token: str, kernel_id: str, code: str, expression: str = "None",
            interrupt_after: float | None = None, client: httpx.Client | None = None) -> dict:
    """Run ``code`` in the kernel over the server's websocket; the execute_reply's content.

    ``expression`` is evaluated after the code and comes back in the reply itself (shell channel), so
    the test does not depend on catching iopub output of a freshly connected socket."""

    async def run() -> dict:
        url = hub_url(stack).rstrip("/").replace("http", "ws", 1) + f"/user/bob/api/kernels/{kernel_id}/channels"
        # the server answers the websocket upgrade only once the kernel has replied to kernel_info (it
        # waits up to kernel_info_timeout, 60 s); tornado's 20 s default gave up first on a loaded machine
        ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"},
                                                 connect_timeout=120, request_timeout=120))
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "bob", "session": uuid.uuid4().hex,
                       "version": "5.3"}, "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {"x": expression}, "allow_stdin": False, "stop_on_error": True}}))
        if interrupt_after is not None:
            await asyncio.sleep(interrupt_after)
            await asyncio.to_thread(client.post, f"/kernels/{kernel_id}/interrupt")
        while True:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), 180))
            if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "execute_reply":
                ws.close()
                return msg["content"]

    return asyncio.run(run())


def value(reply: dict) -> str:
    return reply["user_expressions"]["x"]["data"]["text/plain"].strip("'")


def test_remote_kernel_on_alpha(stack_settings, gateway_server):
    client, token = gateway_server
    specs = client.get("/kernelspecs").json()["kernelspecs"]
    assert SPEC in specs, sorted(specs)
    assert specs[SPEC]["spec"]["metadata"]["kernel_provisioner"]["provisioner_name"] == "heroes-slurm-provisioner"
    r = client.post("/kernels", json={"name": SPEC})
    assert r.status_code == 201, r.text
    kernel_id = r.json()["id"]
    jobs = jobs_named(stack_settings, "alpha", KERNEL_JOB)
    assert len(jobs) == 1 and jobs[0]["user"] == "bob" and jobs[0]["state"] == "RUNNING"
    reply = execute(stack_settings, token, kernel_id, "import os", "os.environ['SLURMD_NODENAME']")
    assert reply["status"] == "ok" and value(reply) == jobs[0]["node"]

    # interrupt: a long cell ends with KeyboardInterrupt, the kernel (same job) stays usable
    reply = execute(stack_settings, token, kernel_id, "import time; time.sleep(120)", interrupt_after=3, client=client)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert [j["id"] for j in jobs_named(stack_settings, "alpha", KERNEL_JOB)] == [jobs[0]["id"]]

    # restart: a new job replaces the old one
    assert client.post(f"/kernels/{kernel_id}/restart").status_code == 200
    restarted = jobs_named(stack_settings, "alpha", KERNEL_JOB)
    assert len(restarted) == 1 and restarted[0]["id"] != jobs[0]["id"]
    reply = execute(stack_settings, token, kernel_id, "import os", "os.environ['SLURM_JOB_ID']")
    assert reply["status"] == "ok" and value(reply) == restarted[0]["id"]

    # shutdown: no job left behind
    assert client.delete(f"/kernels/{kernel_id}").status_code == 204
    assert wait_until("the kernel job to leave the queue", lambda: not jobs_named(stack_settings, "alpha",
                                                                                  KERNEL_JOB), 30)
