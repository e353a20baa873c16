"""Benchmark (not a test) of remote desktops against the running stack (the hub's own service, alpha).

    .venv/bin/python tests/bench/bench_desktop.py [--rounds 3] [--frames 40] [--cluster alpha]

Measures, in the same run:

1. **Start -> first frame.** Gateway: ``POST /organization/visualization/session`` as bob, poll until ready,
   ticket, websocket through the hub's proxy and the bridge (SSH to alpha's login node, srun into the job,
   the 0600 socket), RFB handshake, first full frame. Slurm alone: the same batch script submitted directly
   with ``sbatch`` over bob's own SSH login, until its ``ready`` file exists (what Slurm and Xvnc take
   without the gateway). Prints both medians, the overhead and the ratio (goal: overhead <= 3 s).
2. **Frame throughput**, through the gateway's bridge vs a direct connection to the same VNC socket on the
   node (root may open it; the embedded nodes share this machine), in the same session (ratio goal >= 0.8):
   a) as noVNC works: ZRLE encoding (compressed), continuous updates and fences, for ``--seconds`` while the
      desktop's terminal scrolls ``yes`` output; updates per second and kB/s;
   b) the pipe's ceiling: ``--frames`` full, non-incremental raw 1280x800x32 frames (4 MB each).

Every desktop it made is deleted (scancel) at the end.
"""
from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

import httpx
import paramiko
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "extensions"))

from heroes_dev.components.jupyterhub import hub_url  # noqa: E402
from heroes_dev.components.login import ssh_port, user_key_path  # noqa: E402
from heroes_dev.settings import StackSettings  # noqa: E402
from heroes_service.visualization.script import desktop_script  # noqa: E402

PREFIX = "/services/heroes/api/v1"
VIS = "/organization/visualization"


class Stream:
    """Bytes in, bytes out over a websocket or a socket, with exact reads."""

    def __init__(self, send, recv):
        self.send, self._recv, self.buf = send, recv, bytearray()

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def handshake(s: Stream) -> tuple[int, int, int]:
    s.read(12)
    s.send(b"RFB 003.008\n")
    s.read(s.read(1)[0])
    s.send(b"\x01")
    s.read(4)
    s.send(b"\x01")
    width, height = struct.unpack(">HH", s.read(4))
    bpp = s.read(16)[0]
    s.read(struct.unpack(">I", s.read(4))[0])
    return width, height, bpp


def full_frame(s: Stream, width: int, height: int, bpp: int) -> int:
    s.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
    while (kind := s.read(1)[0]) != 0:
        if kind == 3:
            s.read(3)
            s.read(struct.unpack(">I", s.read(4))[0])
    s.read(1)
    total = 0
    for _ in range(struct.unpack(">H", s.read(2))[0]):
        _x, _y, w, h, _enc = struct.unpack(">HHHHi", s.read(12))
        total += len(s.read(w * h * bpp // 8))
    return total


def ws_stream(base: str, path: str, ticket: str):
    ws = connect(base.replace("http", "ws", 1) + path, subprotocols=["binary", f"heroes-ticket.{ticket}"],
                 max_size=None, open_timeout=30)
    return ws, Stream(ws.send, ws.recv)


def wait_ready(api: httpx.Client, sid: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = api.get(f"{VIS}/session/{sid}").json()
        if got["ready"]:
            return got
        if time.monotonic() > deadline or got["state"] not in ("SUBMITTING", "PENDING", "RUNNING"):
            raise SystemExit(f"desktop never became ready: {got}")
        time.sleep(0.05)


def gateway_start(api: httpx.Client, base: str, cluster: str) -> tuple[float, dict]:
    t0 = time.monotonic()
    made = api.post(f"{VIS}/session", json={"cluster": cluster, "memory_mb": 256, "minutes": 15})
    made.raise_for_status()
    sid = made.json()["id"]
    desk = wait_ready(api, sid)
    ticket = api.post(f"{VIS}/session/{sid}/ticket").json()["ticket"]
    ws, stream = ws_stream(base, f"{PREFIX}{VIS}/ws/{sid}", ticket)
    with ws:
        full_frame(stream, *handshake(stream))
    return time.monotonic() - t0, desk


def slurm_start(ssh: paramiko.SSHClient) -> float:
    """The same desktop script, submitted by bob himself, until its ready file exists."""
    folder = f"/home/bob/.bench-desktop-{secrets.token_hex(4)}"
    ssh.exec_command(f"mkdir -m 0700 {folder}")[1].read()
    script = desktop_script(folder)
    t0 = time.monotonic()
    stdin, out, _err = ssh.exec_command(f"sbatch --parsable --job-name=bench.desktop --mem=256M --time=15 "
                                        f"--chdir={folder} --output={folder}/desktop.log")
    stdin.write(script)
    stdin.channel.shutdown_write()
    job_id = out.read().decode().strip().split(";")[0]
    while ssh.exec_command(f"test -e {folder}/ready && echo y")[1].read().strip() != b"y":
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    ssh.exec_command(f"scancel {job_id}; sleep 1; rm -rf {folder}")[1].read()
    return elapsed


def zrle_rate(stream: Stream, seconds: float) -> tuple[float, float]:
    """(updates per second, kB/s) of a viewer that works like noVNC: ZRLE, continuous updates (the server pushes
    changes without waiting for a request) and fences answered, so the path's latency does not pace it."""
    width, height, _bpp = handshake(stream)
    stream.send(struct.pack(">BxH", 2, 3) + struct.pack(">iii", 16, -313, -312))  # ZRLE, ContinuousUpdates, Fence
    stream.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
    updates = total = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        kind = stream.read(1)[0]
        if kind == 150:  # EndOfContinuousUpdates: the server supports them; switch them on for the screen
            stream.send(struct.pack(">BBHHHH", 150, 1, 0, 0, width, height))
            continue
        if kind == 248:  # Fence: answer a request (its flag cleared), as a viewer must
            stream.read(3)
            flags = struct.unpack(">I", stream.read(4))[0]
            payload = stream.read(stream.read(1)[0])
            if flags & (1 << 31):
                stream.send(struct.pack(">BxxxIB", 248, flags & 0x7, len(payload)) + payload)
            continue
        if kind == 3:
            stream.read(3)
            stream.read(struct.unpack(">I", stream.read(4))[0])
            continue
        if kind != 0:
            continue  # bell
        stream.read(1)
        for _ in range(struct.unpack(">H", stream.read(2))[0]):
            _x, _y, _w, _h, enc = struct.unpack(">HHHHi", stream.read(12))
            if enc == 16:
                total += len(stream.read(struct.unpack(">I", stream.read(4))[0]))
        updates += 1
    elapsed = time.monotonic() - t0
    return updates / elapsed, total / elapsed / 1e3


def type_line(stream: Stream, text: str) -> None:
    handshake(stream)
    stream.send(struct.pack(">BBHH", 5, 1, 200, 150) + struct.pack(">BBHH", 5, 0, 200, 150))  # focus the terminal
    for char in text:
        keysym = 0xFF0D if char == "\n" else ord(char)
        stream.send(struct.pack(">BBxxI", 4, 1, keysym) + struct.pack(">BBxxI", 4, 0, keysym))


def throughput(stream: Stream, frames: int) -> float:
    width, height, bpp = handshake(stream)
    full_frame(stream, width, height, bpp)  # warm
    t0 = time.monotonic()
    total = sum(full_frame(stream, width, height, bpp) for _ in range(frames))
    return total / (time.monotonic() - t0) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cluster", default="alpha", help="enrolled for acme in the hub's service (beta when "
                                                            "other sessions' jobs fill alpha)")
    args = parser.parse_args()
    stack = StackSettings()
    base = hub_url(stack).rstrip("/")
    login = httpx.post(f"{base}{PREFIX}/organization/auth/login", json={"username": "bob", "password": "bob-pass"})
    login.raise_for_status()
    api = httpx.Client(base_url=base + PREFIX, timeout=120,
                       headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - the benchmark's own loopback sshd
    ssh.connect(stack.host, port=ssh_port(stack, args.cluster), username="bob", key_filename=str(user_key_path(stack, "bob")),
                look_for_keys=False, allow_agent=False)
    made: list[str] = []
    try:
        direct_s, gateway_s = [], []
        for _ in range(args.rounds):
            direct_s.append(slurm_start(ssh))
            elapsed, desk = gateway_start(api, base, args.cluster)
            gateway_s.append(elapsed)
            made.append(desk["id"])
            api.delete(f"{VIS}/session/{desk['id']}")
        d, g = statistics.median(direct_s), statistics.median(gateway_s)
        print(f"start -> first frame: gateway median {g:.2f} s, Slurm alone (sbatch -> ready) {d:.2f} s, "
              f"overhead {g - d:+.2f} s (goal <= 3 s), ratio {g / d:.2f}")

        _elapsed, desk = gateway_start(api, base, args.cluster)
        made.append(desk["id"])
        # the socket path is not in the API (nobody but the bridge needs it): read it as bob
        ready = ssh.exec_command(f"cat {desk['work_dir']}/.heroes-desktops/{desk['id']}/ready")[1].read().decode()
        socket_path = dict(line.split("=", 1) for line in ready.split())["socket"]

        def bridge() -> tuple:
            ticket = api.post(f"{VIS}/session/{desk['id']}/ticket").json()["ticket"]
            return ws_stream(base, f"{PREFIX}{VIS}/ws/{desk['id']}", ticket)

        def direct() -> tuple:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(socket_path)
            return sock, Stream(sock.sendall, lambda: sock.recv(1 << 20))

        ws, stream = bridge()
        with ws:
            type_line(stream, "yes HEROES desktop benchmark\n")  # the terminal scrolls from now on
            time.sleep(1)  # let the keys through before the socket closes
        scrolling = ssh.exec_command("pgrep -u bob -x yes >/dev/null && echo yes || echo no")[1].read().decode().strip()
        print(f"(terminal scrolling: {scrolling})")
        results = {}
        for name, opener in (("bridge", bridge), ("direct", direct)):
            handle, stream = opener()
            with handle:
                results[name] = zrle_rate(stream, args.seconds)
        (bf, bm), (df, dm) = results["bridge"], results["direct"]
        print(f"viewer throughput (ZRLE, scrolling terminal, {args.seconds:.0f} s each): bridge {bf:.1f} updates/s "
              f"{bm:.1f} kB/s, direct socket {df:.1f} updates/s {dm:.1f} kB/s, ratio {bf / df:.2f} (goal >= 0.8)")
        for name, opener in (("bridge", bridge), ("direct", direct)):
            handle, stream = opener()
            with handle:
                results[name] = throughput(stream, args.frames)
        print(f"pipe ceiling ({args.frames} raw full frames): bridge {results['bridge']:.1f} MB/s, direct socket "
              f"{results['direct']:.1f} MB/s, ratio {results['bridge'] / results['direct']:.2f}")
    finally:
        for sid in made:
            api.delete(f"{VIS}/session/{sid}")
        ssh.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
