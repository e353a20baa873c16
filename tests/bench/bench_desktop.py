"""Benchmark (not a test) of remote desktops against the running stack (the hub's own service, alpha).

    .venv/bin/python tests/bench/bench_desktop.py [--rounds 3] [--pairs 5] [--seconds 6] [--fps 30]
                                                  [--cluster alpha] [--user alice] [--skip-start]

Measures, in the same run:

1. **Start -> first frame.** Gateway: ``POST /organization/visualization/session`` as ``--user`` (alice),
   poll until ready, ticket, websocket through the hub's proxy and the bridge (SSH to alpha's login node,
   srun into the job, the 0600 socket), RFB handshake, first full frame. Slurm alone: the same batch script
   submitted directly with ``sbatch`` over the same user's own SSH login, until its ``ready`` file exists
   (what Slurm and Xvnc take without the gateway). Prints both medians, the overhead and the ratio (goal:
   overhead <= 3 s).
2. **Frames a viewer gets**, through the gateway's bridge vs a direct connection to the same VNC socket on
   the node (root may open it; the embedded nodes share this machine), ratio goal >= 0.8. The desktop runs
   a deterministic workload: an xterm of 160x50 whose whole text changes ``--fps`` times a second (a fixed,
   seeded sequence of screens, so every run draws the same frames and the workload needs almost no CPU).
   The viewer (``rfb_viewer.py``) speaks as noVNC does (Tight encoding at noVNC's default quality 6 /
   compression 2, continuous updates, fences answered) and counts framebuffer updates and bytes per second. Bridge and
   direct alternate ``--pairs`` times (the first of each pair alternates too), so a change of load on the
   shared machine hits both sides; each pair's ratio, the median and the spread are printed.
3. **Round trip** (Fence to the server and back, no updates in the way): the latency the bridge adds to
   every key press and pointer move.
4. **The pipe's ceiling** (secondary): raw, non-incremental full frames (1280x800x32, 4 MB each), pairs
   alternated the same way, MB/s.

Why the old measure swung (0.5-4.7x between runs): its workload was ``yes`` scrolling a terminal, which
changes the screen as fast as the CPU lets xterm draw, so the bridge's own CPU (sshd, srun, slurmstepd,
the service) slowed the workload it was measuring, and a busy 2-core machine changed the desktop's frame
rate from one run to the next; bridge and direct were also measured once each, one after the other.
A paced workload and alternating pairs remove both. What is left is the machine's load: when other work
starves Xvnc or the bridge's processes for a moment, one pair swings (the load average and the gateway's
CPU are printed with the results; read the median).

What limits the bridge is Slurm's I/O forwarding (srun <-> slurmstepd), not the gateway: raw frames over
SSH + srun + socat move as fast as through the whole bridge, SSH + socat without srun about 3x faster;
srun hands a task's output on in 1024-byte messages (strace of Slurm 22.05's srun: 1837 of its ~1950
writes of a 2 MB stream are 1024 bytes), so every MB costs ~1000 message round trips in srun and slurmstepd.

Every desktop it made is deleted (scancel) at the end.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shlex
import socket
import statistics
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
from heroes_service.clusterjobs.script import Resources  # noqa: E402
from heroes_service.visualization.script import desktop_script  # noqa: E402
from rfb_viewer import Stream, full_frame, handshake, raw_ceiling, round_trip_ms, viewer_rate  # noqa: E402

PREFIX = "/services/heroes/api/v1"
VIS = "/organization/visualization"

#: the desktop's workload: a fixed sequence of 60 seeded screens of text, drawn ``fps`` times a second
WORKLOAD = """
import random, sys, time
fps = float(sys.argv[1]); rnd = random.Random(16); chars = "abcdefghijklmnopqrstuvwxyz0123456789 .:-"
screens = ["\\x1b[H" + "\\r\\n".join("".join(rnd.choice(chars) for _ in range(159)) for _ in range(49))
           for _ in range(60)]
out = sys.stdout; out.write("\\x1b[?25l"); start = time.monotonic(); k = 0
while True:
    out.write(screens[k % 60]); out.flush(); k += 1
    time.sleep(max(0.0, start + k / fps - time.monotonic()))
"""


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


def gateway_start(api: httpx.Client, base: str, cluster: str, made: list[str]) -> tuple[float, dict]:
    """Start -> first frame through the gateway; the desktop's id goes in ``made`` at once (deleted at the
    end even when it never becomes ready)."""
    t0 = time.monotonic()
    created = api.post(f"{VIS}/session", json={"cluster": cluster, "memory_mb": 256, "minutes": 15})
    created.raise_for_status()
    sid = created.json()["id"]
    made.append(sid)
    desk = wait_ready(api, sid)
    ticket = api.post(f"{VIS}/session/{sid}/ticket").json()["ticket"]
    ws, stream = ws_stream(base, f"{PREFIX}{VIS}/ws/{sid}", ticket)
    with ws:
        full_frame(stream, *handshake(stream))
    return time.monotonic() - t0, desk


def slurm_start(ssh: paramiko.SSHClient, timeout: float = 180) -> float:
    """The same desktop script, submitted by the user himself, until its ready file exists (cancelled after)."""
    home = ssh.exec_command("echo $HOME")[1].read().decode().strip()
    folder = f"{home}/.bench-desktop-{secrets.token_hex(4)}"
    ssh.exec_command(f"mkdir -m 0700 {folder}")[1].read()
    # the gateway's script, #SBATCH lines included (without the energy collector, which the gateway stages)
    script = desktop_script(folder, folder, "bench.desktop", Resources(memory_mb=256, minutes=15), energy=False)
    t0 = time.monotonic()
    stdin, out, _err = ssh.exec_command("sbatch --parsable")
    stdin.write(script)
    stdin.channel.shutdown_write()
    job_id = out.read().decode().strip().split(";")[0]
    try:
        while ssh.exec_command(f"test -e {folder}/ready && echo y")[1].read().strip() != b"y":
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"the directly submitted desktop (job {job_id}) was not ready in {timeout:.0f} s")
            time.sleep(0.05)
        return time.monotonic() - t0
    finally:
        ssh.exec_command(f"scancel {shlex.quote(job_id)}; sleep 1; rm -rf {folder}")[1].read()


def start_workload(ssh: paramiko.SSHClient, desk: dict, fps: float) -> dict[str, str]:
    """Run the paced workload in an xterm on the desktop (a step of the desktop's own job, as its user)."""
    # the socket is not in the API (nobody but the bridge needs it): the user reads the session folder (in the
    # desktop's working folder when it is not a run's)
    ready = ssh.exec_command(f"cat {desk['work_dir']}/.heroes-desktops/{desk['id']}/ready")[1].read().decode()
    info = dict(line.split("=", 1) for line in ready.split())
    runtime = info["socket"].rsplit("/", 1)[0]
    argv = ["srun", f"--jobid={desk['job_id']}", "--overlap", "--nodes=1", "--ntasks=1", "--mem=0", "--quiet",
            "env", f"DISPLAY=:{info['display']}", f"XAUTHORITY={runtime}/Xauthority",
            "xterm", "-geometry", "160x50+0+0", "-e", "python3", "-c", WORKLOAD, str(fps)]
    ssh.exec_command(" ".join(map(shlex.quote, argv)) + " >/dev/null 2>&1 &")[1].channel.recv_exit_status()
    return info


def gateway_pids(stack: StackSettings) -> list[int]:
    """The gateway's processes a bridged viewer's bytes cross: the hub's service and the hub's proxy (found by
    the ports the stack gave them, so another service started by a test on this machine is not counted)."""
    wanted = (f"--port\0{stack.ports.heroes_service}\0".encode(), f"--port\0{stack.ports.hub}\0".encode())
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if (b"heroes_service.app:app" in cmdline or b"configurable-http-proxy" in cmdline) and any(
                port in cmdline for port in wanted):
            pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f}, min {min(values):.2f}, max {max(values):.2f}"


def alternate(pairs: int, openers: dict, measure, pids: list[int]) -> tuple[list[dict], dict]:
    """``pairs`` rounds of bridge and direct, the one measured first alternating between rounds; also the
    gateway's CPU (cores) during each side's measurements: while the viewer goes direct, the gateway only
    does its background work (reconciler, other users), so the difference is what bridging costs."""
    rounds, cpu, wall = [], {"bridge": 0.0, "direct": 0.0}, {"bridge": 0.0, "direct": 0.0}
    for i in range(pairs):
        order = ("bridge", "direct") if i % 2 == 0 else ("direct", "bridge")
        got = {}
        for name in order:
            handle, stream = openers[name]()
            cpu0, t0 = cpu_seconds(pids), time.monotonic()
            with handle:
                got[name] = measure(stream)
            cpu[name] += cpu_seconds(pids) - cpu0
            wall[name] += time.monotonic() - t0
        rounds.append(got)
    return rounds, {name: cpu[name] / wall[name] for name in cpu}


def cpu_line(cores: dict) -> str:
    return (f"gateway CPU (service + proxy) {cores['bridge']:.2f} cores while bridging, {cores['direct']:.2f} "
            f"while the viewer went direct (background)")


def bench_viewer(openers: dict, args) -> None:
    load0 = os.getloadavg()[0]
    rounds, cores = alternate(args.pairs, openers, lambda s: viewer_rate(s, args.seconds),
                                   args.gateway_pids)
    fps_ratios, byte_ratios = [], []
    print(f"frames a viewer gets (Tight q6/c2 as noVNC, continuous updates; workload {args.fps:g} screens/s; "
          f"{args.seconds:g} s each, pairs alternated):")
    for i, got in enumerate(rounds, 1):
        (bf, bk), (df, dk) = got["bridge"], got["direct"]
        fps_ratios.append(bf / df)
        byte_ratios.append(bk / dk)
        print(f"  pair {i}: bridge {bf:5.1f} updates/s {bk:7.0f} kB/s | direct {df:5.1f} updates/s {dk:7.0f} kB/s"
              f" | ratio {bf / df:.2f} updates, {bk / dk:.2f} bytes")
    medians = {side: statistics.median(r[side][0] for r in rounds) for side in ("bridge", "direct")}
    print(f"  updates/s ratio bridge/direct: {spread(fps_ratios)} (goal >= 0.8); medians' ratio "
          f"{medians['bridge'] / medians['direct']:.2f}")
    print(f"  bytes/s ratio bridge/direct:   {spread(byte_ratios)}")
    print(f"  {cpu_line(cores)}; load average 1 min: {load0:.2f} before, {os.getloadavg()[0]:.2f} after")


def bench_latency(openers: dict, args) -> None:
    rounds, _cpu = alternate(args.pairs, openers, round_trip_ms, args.gateway_pids)
    bridge, direct = [r["bridge"] for r in rounds], [r["direct"] for r in rounds]
    print(f"round trip to the VNC server (Fence, median of 30 per connection): bridge {spread(bridge)} ms, "
          f"direct {spread(direct)} ms")


def bench_ceiling(openers: dict, args) -> None:
    rounds, cores = alternate(max(1, args.pairs // 2), openers, lambda s: raw_ceiling(s, args.frames),
                                   args.gateway_pids)
    line = ", ".join(f"{r['bridge']:.1f}/{r['direct']:.1f}" for r in rounds)
    ratios = [r["bridge"] / r["direct"] for r in rounds]
    print(f"pipe ceiling ({args.frames} raw 4 MB frames, MB/s bridge/direct per pair: {line}): "
          f"ratio {spread(ratios)}; {cpu_line(cores)}")


def bench_start(api: httpx.Client, base: str, ssh: paramiko.SSHClient, args, made: list[str]) -> None:
    direct_s, gateway_s = [], []
    for _ in range(args.rounds):
        direct_s.append(slurm_start(ssh))
        elapsed, desk = gateway_start(api, base, args.cluster, made)
        gateway_s.append(elapsed)
        api.delete(f"{VIS}/session/{desk['id']}")
    d, g = statistics.median(direct_s), statistics.median(gateway_s)
    print(f"start -> first frame: gateway median {g:.2f} s, Slurm alone (sbatch -> ready) {d:.2f} s, "
          f"overhead {g - d:+.2f} s (goal <= 3 s), ratio {g / d:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="desktops started for start -> first frame")
    parser.add_argument("--pairs", type=int, default=5, help="bridge/direct pairs for the frame rates")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of one frame-rate measurement")
    parser.add_argument("--fps", type=float, default=30.0, help="screens per second the workload draws")
    parser.add_argument("--frames", type=int, default=10, help="raw full frames per ceiling measurement")
    parser.add_argument("--skip-start", action="store_true", help="only the throughput parts")
    parser.add_argument("--cluster", default="alpha", help="enrolled in the hub's service (beta when other "
                                                            "sessions' jobs fill alpha)")
    parser.add_argument("--user", default="alice", help="demo user (password <user>-pass) with a cluster login; "
                                                        "not bob: the desktop browser test ends all of bob's "
                                                        "desktops when it finishes, the benchmark's among them")
    args = parser.parse_args()
    stack = StackSettings()
    args.gateway_pids = gateway_pids(stack)
    base = hub_url(stack).rstrip("/")
    login = httpx.post(f"{base}{PREFIX}/organization/auth/login",
                       json={"username": args.user, "password": f"{args.user}-pass"})
    login.raise_for_status()
    api = httpx.Client(base_url=base + PREFIX, timeout=120,
                       headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - the benchmark's own loopback sshd
    ssh.connect(stack.host, port=ssh_port(stack, args.cluster), username=args.user,
                key_filename=str(user_key_path(stack, args.user)), look_for_keys=False, allow_agent=False)
    made: list[str] = []
    try:
        if not args.skip_start:
            bench_start(api, base, ssh, args, made)
        _elapsed, desk = gateway_start(api, base, args.cluster, made)
        socket_path = start_workload(ssh, desk, args.fps)["socket"]
        time.sleep(2)  # the workload's xterm maps

        def bridge() -> tuple:
            ticket = api.post(f"{VIS}/session/{desk['id']}/ticket").json()["ticket"]
            return ws_stream(base, f"{PREFIX}{VIS}/ws/{desk['id']}", ticket)

        def direct() -> tuple:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(socket_path)
            return sock, Stream(sock.sendall, lambda: sock.recv(1 << 20))

        openers = {"bridge": bridge, "direct": direct}
        bench_viewer(openers, args)
        bench_latency(openers, args)
        bench_ceiling(openers, args)
    finally:
        for sid in made:
            gone = api.delete(f"{VIS}/session/{sid}")
            if gone.status_code not in (200, 204, 404):
                print(f"could not delete desktop {sid}: {gone.status_code} (the idle cull will end it)")
        ssh.close()


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each result as soon as it is measured, also into a file
    main()
