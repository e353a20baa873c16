"""Helpers of the desktop tests (no tests here): the service in-process with a 1 s desktop reconciler (the
``wf`` fixture's stack: real Keycloak, alpha/beta enrolled, per-user certificates), a minimal RFB client that
speaks to a desktop through the gateway's websocket, and checks over real SSH and Slurm.
"""
from __future__ import annotations

import os
import struct
import subprocess
import time

import paramiko
import pytest

from heroes_dev.components.login import ssh_port, user_key_path
from heroes_dev.components.slurm import slurm_conf_path
from service_support import PREFIX
from workflow_support import workflow_service

KEYSYM_RETURN = 0xFF0D
#: alpha by default; HEROES_DESKTOP_TEST_CLUSTER=beta when other sessions' jobs fill alpha's two small nodes
CLUSTER = os.environ.get("HEROES_DESKTOP_TEST_CLUSTER", "alpha")


@pytest.fixture(scope="module")
def desk(stack_settings, require, tmp_path_factory):
    """``wf``-like dict; desktops ride the shared reconciler (``workflow_service`` runs it every second) and
    idle culls may be short."""
    require("desktop")
    service = workflow_service(stack_settings, require, f"sqlite:///{tmp_path_factory.mktemp('desk-db') / 'heroes.db'}")
    desk = next(service)
    yield desk
    end_all(desk)  # the clusters cannot be removed while desktops live on them (and alpha is small)
    next(service, None)


def end_all(desk) -> None:
    for api in desk["apis"].values():
        for d in api.get("/organization/visualization/session", params={"live": True}).json():
            api.delete(f"/organization/visualization/session/{d['id']}")


def start_desktop(api, **body) -> dict:
    body = {"cluster": CLUSTER, "cores": 1, "memory_mb": 256, "minutes": 15, **body}
    r = api.post("/organization/visualization/session", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def wait_desktop(api, session_id: str, *, ready: bool = True, states: set[str] | None = None,
                 timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = api.get(f"/organization/visualization/session/{session_id}").json()
        if (states and got["state"] in states) or (not states and got["ready"] == ready):
            return got
        assert time.monotonic() < deadline, f"desktop never got there: {got}"
        time.sleep(0.5)


def ws_path(session_id: str) -> str:
    return f"{PREFIX}/organization/visualization/ws/{session_id}"


def ticket(api, session_id: str) -> str:
    r = api.post(f"/organization/visualization/session/{session_id}/ticket")
    assert r.status_code == 200, r.text
    return r.json()["ticket"]


def squeue_ids(stack, cluster: str = CLUSTER) -> set[str]:
    env = dict(os.environ, SLURM_CONF=str(slurm_conf_path(stack, cluster)))
    out = subprocess.run(["squeue", "--noheader", "-o", "%i"], env=env, capture_output=True, text=True,
                         check=True).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def ssh_as(stack, user: str, cluster: str = CLUSTER) -> paramiko.SSHClient:
    """bob's own SSH login to the cluster (his demo key), as a person would check his files."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - the test's own loopback sshd
    client.connect(stack.host, port=ssh_port(stack, cluster), username=user,
                   key_filename=str(user_key_path(stack, user)), look_for_keys=False, allow_agent=False)
    return client


def remote_exists(stack, user: str, path: str) -> bool:
    with ssh_as(stack, user) as client:
        _in, out, _err = client.exec_command(f"test -e {path} && echo yes || echo no")
        return out.read().decode().strip() == "yes"


def remote_read(stack, user: str, path: str) -> str:
    with ssh_as(stack, user) as client:
        _in, out, _err = client.exec_command(f"cat {path} 2>/dev/null")
        return out.read().decode()


class Rfb:
    """Just enough of an RFB 3.8 viewer: handshake, raw frames, keys and clicks (no SetEncodings: Raw only)."""

    def __init__(self, ws):
        self.ws = ws
        self.buf = bytearray()
        self.width = self.height = 0

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self.ws.receive_bytes()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def handshake(self) -> str:
        assert self._read(12).startswith(b"RFB 003.")
        self.ws.send_bytes(b"RFB 003.008\n")
        count = self._read(1)[0]
        assert 1 in self._read(count), "the desktop must offer security type None (its socket is 0600)"
        self.ws.send_bytes(b"\x01")
        assert self._read(4) == b"\x00\x00\x00\x00"
        self.ws.send_bytes(b"\x01")  # shared
        self.width, self.height = struct.unpack(">HH", self._read(4))
        self.bpp = self._read(16)[0]
        name_len = struct.unpack(">I", self._read(4))[0]
        return self._read(name_len).decode()

    def frame(self, incremental: bool = False) -> bytes:
        """Request and read one full update; returns the raw pixels of its rectangles."""
        self.ws.send_bytes(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.width, self.height))
        while True:
            kind = self._read(1)[0]
            if kind == 0:
                break
            if kind == 2:  # bell
                continue
            if kind == 3:  # server cut text
                self._read(3)
                self._read(struct.unpack(">I", self._read(4))[0])
                continue
            raise AssertionError(f"unexpected server message {kind}")
        self._read(1)
        pixels = bytearray()
        for _ in range(struct.unpack(">H", self._read(2))[0]):
            _x, _y, w, h, enc = struct.unpack(">HHHHi", self._read(12))
            assert enc == 0, f"raw encoding expected, got {enc}"
            pixels += self._read(w * h * self.bpp // 8)
        return bytes(pixels)

    def click(self, x: int, y: int) -> None:
        self.ws.send_bytes(struct.pack(">BBHH", 5, 1, x, y))
        self.ws.send_bytes(struct.pack(">BBHH", 5, 0, x, y))

    def key(self, keysym: int) -> None:
        self.ws.send_bytes(struct.pack(">BBxxI", 4, 1, keysym))
        self.ws.send_bytes(struct.pack(">BBxxI", 4, 0, keysym))

    def type(self, text: str) -> None:
        for char in text:
            self.key(KEYSYM_RETURN if char == "\n" else ord(char))


def distinct_colours(pixels: bytes, step: int = 4 * 97) -> int:
    return len({pixels[i:i + 3] for i in range(0, len(pixels) - 3, step)})


def drawn_frame(rfb: Rfb, timeout: float = 20) -> bytes:
    """A full frame once the desktop has drawn something (the terminal maps a moment after "ready")."""
    deadline = time.monotonic() + timeout
    while True:
        pixels = rfb.frame()
        if distinct_colours(pixels) > 2:
            return pixels
        assert time.monotonic() < deadline, "the desktop stayed blank"
        time.sleep(0.3)
