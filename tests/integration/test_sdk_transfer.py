"""A 200 MiB file up and down through the ``heroes`` command (real proxy, service and S3), with a progress bar
and bounded memory: the child process's peak resident memory may grow by a small fraction of the file only,
because the SDK streams 1 MiB chunks and never holds the file."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from heroes_sdk import Client, credentials
from sdk_support import demo  # noqa: F401

pytestmark = pytest.mark.integration

SIZE = 200 * 1024 * 1024
#: allowed growth of the peak RSS while moving the file (chunks, buffers, TLS-free sockets): 1/5 of it
MAX_GROWTH_MB = 40

#: runs the real command line in this process; a thread samples the resident memory every 5 ms, and each step
#: reports its peak over the RSS it started from (ru_maxrss would hide growth under the imports' high-water mark)
MEASURE = textwrap.dedent("""
    import json, sys, threading, time
    import psutil
    from heroes_dev.cli import main

    process, state = psutil.Process(), {"peak": 0, "run": True}

    def sample():
        while state["run"]:
            state["peak"] = max(state["peak"], process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    growth, codes = {}, {}
    for name, argv in json.loads(sys.argv[1]):
        time.sleep(0.05)
        start = process.memory_info().rss
        state["peak"] = start
        if name == "control":  # what a client that reads the whole file does: shows the meter sees it
            data = open(argv, "rb").read()
            codes[name] = len(data)
            time.sleep(0.05)
            del data
        else:
            codes[name] = main(argv)
        growth[name] = (state["peak"] - start) / 2**20
    state["run"] = False
    print("MEASURED " + json.dumps({"growth": growth, "codes": codes}))
""")


def big_file(path, size: int) -> str:
    """A file of ``size`` bytes, not compressible, written 1 MiB at a time; its sha256."""
    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as out:
        for i in range(size // len(block)):
            chunk = i.to_bytes(8, "big") + block[8:]
            out.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def test_a_200_mib_upload_and_download_stream_with_progress_and_bounded_memory(demo, tmp_path):
    source, back = tmp_path / "big.bin", tmp_path / "back.bin"
    expected = big_file(source, SIZE)
    key = f"sdk-tests/{os.getpid()}/big.bin"
    login = Client(demo["url"], username="bob", password="bob-pass")
    # the child logs in as `heroes login` would have: a refreshable record in its own 0600 file
    credentials.save(credentials.keycloak_login(demo["url"], "bob", "bob-pass"), tmp_path / "cfg" / "credentials.json")
    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTERHUB_API_TOKEN", "HEROES_ACCESS_TOKEN")}
    env.update(HEROES_API_URL=demo["url"], HEROES_CONFIG_DIR=str(tmp_path / "cfg"))
    steps = [["put", ["data", "put", str(source), key]], ["get", ["data", "get", key, str(back)]],
             ["control", str(source)]]
    child = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(steps)], env=env, capture_output=True,
                           text=True, timeout=600)
    try:
        line = next((l for l in child.stdout.splitlines() if l.startswith("MEASURED ")), None)
        assert line, (child.returncode, child.stdout[-2000:], child.stderr[-2000:])
        measured = json.loads(line.split(" ", 1)[1])
        assert measured["codes"] == {"put": 0, "get": 0, "control": SIZE}, child.stderr[-2000:]
        # the progress bar (plain lines: stderr is a pipe here) climbs in tenths to the whole file, both ways
        up = re.findall(r"upload .*big\.bin:\s+(\d+)% ([\d.]+) MiB of 200\.0 MiB", child.stderr)
        down = re.findall(r"download .*big\.bin:\s+(\d+)% ([\d.]+) MiB of 200\.0 MiB", child.stderr)
        for bar in (up, down):
            percents = [int(p) for p, _ in bar]
            assert len(bar) >= 10 and percents == sorted(percents) and bar[-1] == ("100", "200.0"), bar
        assert sha256(back) == expected and back.stat().st_size == SIZE
        growth = measured["growth"]
        print(f"resident memory growth moving 200 MiB: upload {growth['put']:.1f} MiB, download {growth['get']:.1f} "
              f"MiB; reading the file whole (control): {growth['control']:.0f} MiB")
        assert growth["put"] < MAX_GROWTH_MB and growth["get"] < MAX_GROWTH_MB, growth
        assert growth["control"] > 150, growth  # the meter does see a client that holds the file
        listing = login.data.ls(f"sdk-tests/{os.getpid()}/")
        assert [(o.key, o.size) for o in listing.objects] == [(key, SIZE)]
    finally:
        login.data.delete(f"sdk-tests/{os.getpid()}/")
