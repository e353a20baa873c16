"""Port checks that name the culprit: "port 8080 is taken by java (pid 1234)" beats "address in use"."""
from __future__ import annotations

import socket
import time

import psutil


def holder_of(port: int) -> str | None:
    """Describe the process listening on ``port`` (any address), or None if nobody listens there."""
    try:
        connections = psutil.net_connections(kind="inet")
    except psutil.Error:
        connections = []
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return "an unknown process"
            try:
                proc = psutil.Process(conn.pid)
                return f"{proc.name()} (pid {conn.pid}: {' '.join(proc.cmdline())[:120]})"
            except psutil.Error:
                return f"pid {conn.pid}"
    if tcp_open("127.0.0.1", port):
        return "an unknown process"
    return None


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tcp_open(host, port):
            return True
        time.sleep(0.25)
    return False
