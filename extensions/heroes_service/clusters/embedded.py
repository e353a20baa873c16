"""Installing the gateway's user CA on the embedded stack's login nodes (same machine only).

On a real site the cluster's administrators add the CA public key (``GET /organization/admin/cluster/ca``)
to sshd's ``TrustedUserCAKeys``. The embedded stack's login nodes read that file from this machine, so at
enrollment the service appends its CA line there itself — only for a host:port that IS one of this
stack's login nodes, and only to a file the stack already created. An org admin can therefore never make
the service write anywhere else.

Which login nodes are this stack's, and which accounts they publish, the service learns from descriptor
files the dev stack writes into the state dir (``embedded_login_nodes_dir``; ``heroes_dev`` is never
imported here: production code does not depend on the dev stack). A real site has no such files.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .config import get_clusters_settings

log = logging.getLogger("heroes_service.clusters")


@dataclass(frozen=True)
class LoginNode:
    """One embedded login node as the dev stack describes it (``<embedded_login_nodes_dir>/<cluster>.json``)."""

    cluster: str
    hosts: tuple[str, ...]
    port: int
    trusted_ca_file: Path
    principals_dir: Path


class _ByMtime:
    """Values computed from files, recomputed only when a file's (mtime, size) or the folder's list changed.

    On the submit path every connector consults the published accounts; re-reading the files each time
    cost milliseconds, while a ``stat`` per file costs microseconds and still sees a changed mapping at once."""

    def __init__(self):
        self._seen: dict[object, tuple[tuple, object]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def signature(folder: Path) -> tuple:
        try:
            with os.scandir(folder) as entries:
                return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                                    for e in entries if e.is_file() and not e.name.startswith(".")))
        except OSError:
            return ()

    def get(self, key: object, folder: Path, compute):
        signature = (str(folder), self.signature(folder))
        with self._lock:
            hit = self._seen.get(key)
            if hit and hit[0] == signature:
                return hit[1]
        value = compute(folder, signature[1])
        with self._lock:
            self._seen[key] = (signature, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


_CACHE = _ByMtime()
#: extra (host, port) -> embedded cluster name: test sshds that serve a cluster's accounts on another port
_EXTRA_NODES: dict[tuple[str, int], str] = {}


def _parse_node(path: Path) -> LoginNode | None:
    try:
        body = json.loads(path.read_text())
        return LoginNode(cluster=str(body["cluster"]), hosts=tuple(str(h) for h in body["hosts"]),
                         port=int(body["port"]), trusted_ca_file=Path(body["trusted_ca_file"]),
                         principals_dir=Path(body["principals_dir"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the embedded login node descriptor %s: %s", path, type(exc).__name__)
        return None


def login_nodes() -> dict[str, LoginNode]:
    """cluster -> the embedded login node the dev stack described; empty outside a dev stack (a real site)."""
    def read(folder: Path, files: tuple) -> dict[str, LoginNode]:
        nodes = (_parse_node(folder / name) for name, _, _ in files if name.endswith(".json"))
        return {node.cluster: node for node in nodes if node is not None}

    return _CACHE.get("nodes", get_clusters_settings().embedded_login_nodes_dir, read)


def embedded_login_nodes() -> dict[tuple[str, int], Path]:
    """(host, port) of each embedded login node -> its trusted-CA file (only files the stack created)."""
    return {(host, node.port): node.trusted_ca_file for node in login_nodes().values()
            if node.trusted_ca_file.exists() for host in node.hosts}


def register_node(host: str, port: int, cluster: str | None) -> None:
    """Treat ``host:port`` as another door to embedded ``cluster``'s accounts (None: forget it). Tests only."""
    if cluster is None:
        _EXTRA_NODES.pop((host, int(port)), None)
    else:
        _EXTRA_NODES[(host, int(port))] = cluster


def _cluster_at(host: str, port: int) -> str | None:
    """The embedded cluster whose login node is ``host:port`` (None: not this stack's)."""
    if (host, int(port)) in _EXTRA_NODES:
        return _EXTRA_NODES[(host, int(port))]
    for node in login_nodes().values():
        if host in node.hosts and int(port) == node.port:
            return node.cluster
    return None


def _read_principals(cluster: str, node: LoginNode | None = None) -> dict[str, str]:
    """principal -> account, from the principals files the embedded login node of ``cluster`` reads
    (cached until one of them changes)."""
    node = node or login_nodes().get(cluster)
    if node is None:
        return {}

    def read(folder: Path, files: tuple) -> dict[str, str]:
        mapping: dict[str, str] = {}
        for name, _, _ in files:
            try:
                lines = (folder / name).read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if fields and not fields[0].startswith("#"):
                    mapping.setdefault(fields[-1], name)
        return mapping

    return _CACHE.get(("principals", cluster), node.principals_dir, read)


def published_logins(host: str, port: int) -> dict[str, str] | None:
    """What the embedded login node at ``host:port`` publishes: gateway principal -> Unix account.

    None when ``host:port`` is not one of this stack's login nodes (a real site: the gateway cannot read
    its files and learns logins elsewhere). Read from the same files sshd reads.
    """
    cluster = _cluster_at(host, port)
    return None if cluster is None else _read_principals(cluster)


def published_login_anywhere(principal: str) -> str | None:
    """The account ``principal`` may act as on the embedded login nodes, when they all agree (None otherwise)."""
    nodes = login_nodes()
    if not nodes:
        return None
    found = {_read_principals(cluster, node).get(principal) for cluster, node in nodes.items()}
    return found.pop() if len(found) == 1 else None


def published_accounts() -> set[str]:
    """Every account an embedded login node lets a gateway user act as (cluster accounts, not the
    gateway host's own, although both live on this machine in the embedded stack)."""
    from .logins import SERVICE_PRINCIPAL

    accounts: set[str] = set()
    for cluster, node in login_nodes().items():
        mapping = _read_principals(cluster, node)
        accounts |= {account for principal, account in mapping.items() if principal != SERVICE_PRINCIPAL}
    return accounts


def forget_published() -> None:
    """Drop what was read (a test that rewrote a file within the same mtime tick)."""
    _CACHE.clear()


def _key_part(line: str) -> str:
    return " ".join(line.split()[:2])


def install_ca(path: Path, ca_line: str) -> bool:
    """Append ``ca_line`` to a TrustedUserCAKeys file unless its key is there (other lines kept)."""
    with open(path, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        text = fh.read()
        if any(_key_part(line) == _key_part(ca_line) for line in text.splitlines()):
            return False
        fh.seek(0, 2)
        if text and not text.endswith("\n"):
            fh.write("\n")
        fh.write(ca_line.strip() + "\n")
    log.info("installed the gateway user CA into %s", path)
    return True


def remove_ca(path: Path, ca_line: str) -> bool:
    """Remove ``ca_line``'s key from a TrustedUserCAKeys file (tests clean up after themselves)."""
    with open(path, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        lines = fh.read().splitlines()
        kept = [line for line in lines if _key_part(line) != _key_part(ca_line)]
        if len(kept) == len(lines):
            return False
        fh.seek(0)
        fh.truncate()
        fh.write("".join(line + "\n" for line in kept))
    return True


def install_ca_if_embedded(host: str, port: int, ca_line: str) -> Path | None:
    """Install the CA when (host, port) is an embedded login node; return the file written (or None)."""
    path = embedded_login_nodes().get((host, int(port)))
    if path is None:
        return None
    install_ca(path, ca_line)
    return path
