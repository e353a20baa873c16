"""Benchmark (not a test): 1 GiB up and down through the data API vs boto3 straight to S3, same run.

    .venv/bin/python tests/bench/bench_data.py [--size-mib 1024] [--rounds 2]

Starts its own service process (as the hub runs it) on a fresh bucket base against the running stack's
Keycloak and S3, uploads/downloads a generated file both ways, prints MiB/s, the API/boto3 ratios (goal
>= 0.8) and the service's resident-memory growth during the transfers (goal < 100 MiB), then removes its
buckets. Needs ``heroes dev up keycloak s3``.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import httpx  # noqa: E402
import psutil  # noqa: E402
import requests  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402

from heroes_dev import settings as settings_module  # noqa: E402
from heroes_dev.components.s3 import client as s3_client  # noqa: E402
from data_support import (DATA, MiB, ServiceProcess, cleanup_base, password_token,  # noqa: E402
                               service_env)


class RssSampler(threading.Thread):
    """Samples a process's RSS every 50 ms; ``peak`` is the maximum seen."""

    def __init__(self, service: ServiceProcess):
        super().__init__(daemon=True)
        self.service, self.peak, self.running = service, service.rss(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.service.rss())
            time.sleep(0.05)


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 8 * MiB)
            fh.write(os.urandom(n))
            left -= n


def file_chunks(path: Path, chunk: int = 4 * MiB):
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            yield block


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3, help="best of N for each measurement")
    args = parser.parse_args()
    size = args.size_mib * MiB
    settings = settings_module.load()
    base = f"b{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    source = work / "source.bin"
    make_file(source, size)
    service = ServiceProcess(service_env(settings, base, HEROES_SERVICE_DATABASE_URL=f"sqlite:///{work / 's.db'}",
                                         HEROES_SERVICE_DATA_QUOTA_BYTES="0"), work)
    try:
        token = password_token(settings, "bob", "bob-pass")
        api = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"},
                           timeout=httpx.Timeout(600, connect=10))
        bucket = next(b["bucket"] for b in api.get(DATA + "/list").json()["buckets"] if b["kind"] == "user")
        s3 = s3_client(settings, timeout=600)
        transfer = TransferConfig()  # boto3's defaults: 8 MiB parts, 10 threads

        # the API's clients use requests (urllib3), as the widgets do; httpx's pure-Python reader tops out
        # near 290 MiB/s on this machine, which would measure the client rather than the service
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"

        def api_up():
            # 4 MiB blocks (chunked encoding): requests sends a file object in 8-16 KiB writes, which would
            # measure per-message overhead rather than the transfer
            r = http.post(service.url + DATA + "/upload", params={"bucket": bucket, "key": "bench/api.bin"},
                          data=file_chunks(source), timeout=600)
            assert r.status_code == 201, r.text

        def api_down():
            got = 0
            with http.get(service.url + DATA + "/download", params={"bucket": bucket, "key": "bench/api.bin"},
                          stream=True, timeout=600) as r:
                assert r.status_code == 200
                for chunk in r.iter_content(4 * MiB):
                    got += len(chunk)
            assert got == size

        def boto_up():
            s3.upload_file(str(source), bucket, "bench/boto.bin", Config=transfer)

        class Sink:
            def __init__(self):
                self.n = 0

            def write(self, data):
                self.n += len(data)

        def boto_down():
            sink = Sink()
            s3.download_fileobj(bucket, "bench/boto.bin", sink, Config=transfer)
            assert sink.n == size

        rss_start = service.rss()
        sampler = RssSampler(service)
        sampler.start()
        proc = psutil.Process(service.proc.pid)
        # rounds interleave the two paths, so both see the same background load (a shared machine's load
        # drifts within seconds); each path's best round is reported
        times: dict[str, list[float]] = {}
        cpu: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, fn in (("api_up", api_up), ("boto3_up", boto_up), ("api_down", api_down),
                             ("boto3_down", boto_down)):
                cpu0 = sum(proc.cpu_times()[:2])
                times.setdefault(name, []).append(timed(fn))
                cpu[name] = cpu.get(name, 0.0) + sum(proc.cpu_times()[:2]) - cpu0
        results = {name: min(values) for name, values in times.items()}
        service_cpu = {name: round(total / args.rounds, 2) for name, total in cpu.items()}
        sampler.running = False
        sampler.join()
        mibs = {k: args.size_mib / v for k, v in results.items()}
        report = {
            "size_mib": args.size_mib,
            "rounds": args.rounds,
            "seconds": {k: round(v, 2) for k, v in results.items()},
            "seconds_every_round": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "load_average_1min": round(os.getloadavg()[0], 2),
            "mib_per_s": {k: round(v, 1) for k, v in mibs.items()},
            "ratio_up_api_over_boto3": round(mibs["api_up"] / mibs["boto3_up"], 2),
            "ratio_down_api_over_boto3": round(mibs["api_down"] / mibs["boto3_down"], 2),
            "service_rss_start_mib": round(rss_start / MiB, 1),
            "service_rss_peak_mib": round(sampler.peak / MiB, 1),
            "service_rss_growth_mib": round((sampler.peak - rss_start) / MiB, 1),
            "service_cpu_s_per_transfer": service_cpu,
            "cpus": os.cpu_count(),
        }
        print(json.dumps(report, indent=2))
    finally:
        service.stop()
        cleanup_base(settings, base)
        source.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
