"""Local TCP ports on the gateway host (the service's loopback) forwarded to a port on a cluster node through the login node's SSH
connection (one relay channel per TCP connection on the user's pooled SSH connection, as ``ssh -L`` would).

Used for remote kernels (the five ZMQ ports of a kernel on a compute node become five ports on the
gateway's loopback, so the user's server talks to the kernel without any route to the node) and for
cluster JupyterLab servers where the proxy cannot reach the nodes. The service owns them: it holds the
cluster credentials; the hub only learns the local port numbers. Each
accepted connection gets its own channel; a broken transport just closes that connection (ZMQ reconnects,
and the next channel opens on a fresh pooled connection).
"""
from __future__ import annotations

import logging
import select
import socket
import threading

log = logging.getLogger("heroes_service.clusterjobs.tunnels")


#: runs on the login node (stdlib python3): relays the SSH channel's stdin/stdout to host:port, like ``ssh -W``
RELAY = r"""
import os, select, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.settimeout(None)
i, o = sys.stdin.fileno(), sys.stdout.fileno()
while True:
    ready, _, _ = select.select([s, i], [], [])
    if s in ready:
        data = s.recv(65536)
        if not data:
            break
        view = memoryview(data)
        while view:
            view = view[os.write(o, view):]
    if i in ready:
        data = os.read(i, 65536)
        if not data:
            break
        s.sendall(data)
"""


def _open_channel(connector, host: str, port: int, timeout: float = 20):
    """An SSH channel on a pooled connection of ``connector`` whose bytes reach host:port.

    Not a ``direct-tcpip`` channel: the gateway's per-user certificates carry no ``permit-port-forwarding``
    extension (least privilege), so the channel runs a tiny relay on the login node instead (``ssh -W``
    semantics over an exec channel; the relay is argv-quoted like every command)."""
    return connector.open_exec(["python3", "-c", RELAY, host, str(port)], timeout=timeout)


def _pump(sock: socket.socket, channel) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        while True:
            ready, _, _ = select.select([sock, channel], [], [], 60)
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    break
                channel.sendall(data)
            if channel in ready:
                data = channel.recv(65536)
                if not data:
                    break
                sock.sendall(data)
    except (OSError, EOFError):
        pass
    finally:
        channel.close()
        sock.close()


class Forward:
    """127.0.0.1:<local_port> -> <host>:<port> via the cluster's login node, until ``close()``."""

    def __init__(self, connector, host: str, port: int, local_port: int = 0):
        """``local_port`` 0: any free port; else that port again (re-opened after a hub restart)."""
        self.connector, self.host, self.port = connector, host, port
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", local_port))
        self._server.listen(16)
        self.local_port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name=f"tunnel-{self.local_port}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                channel = _open_channel(self.connector, self.host, self.port)
            except Exception as exc:  # noqa: BLE001 - the client sees a closed connection and retries
                log.warning("tunnel to %s:%d: %s", self.host, self.port, type(exc).__name__)
                client.close()
                continue
            threading.Thread(target=_pump, args=(client, channel), daemon=True).start()

    @property
    def alive(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept() (Linux)
        except OSError:
            pass
        try:
            self._server.close()
        except OSError:
            pass
