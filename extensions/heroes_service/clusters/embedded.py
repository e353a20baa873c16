"""Installing the gateway's user CA on the embedded stack's login nodes (same machine only).

On a real site the cluster's administrators add the CA public key (``GET /organization/admin/cluster/ca``)
to sshd's ``TrustedUserCAKeys``. The embedded stack's login nodes read that file from this machine, so at
enrollment the service appends its CA line there itself — only for a host:port that IS one of this
stack's login nodes (known from the stack's own settings), and only to a file the stack already created.
An org admin can therefore never make the service write anywhere else.
"""
from __future__ import annotations

import fcntl
import logging
import threading
import time
from pathlib import Path

log = logging.getLogger("heroes_service.clusters")


def embedded_login_nodes() -> dict[tuple[str, int], Path]:
    """(host, port) of each embedded login node -> its trusted-CA file; empty outside a dev stack."""
    try:
        from heroes_dev.components.login import CLUSTERS, ssh_port, trusted_ca_path
        from heroes_dev.settings import StackSettings
    except ImportError:
        return {}
    settings = StackSettings()
    nodes = {}
    for cluster in CLUSTERS:
        path = trusted_ca_path(settings, cluster)
        if path.exists():
            nodes[(settings.host, ssh_port(settings, cluster))] = path
            if settings.host == "127.0.0.1":
                nodes[("localhost", ssh_port(settings, cluster))] = path
    return nodes


#: extra (host, port) -> embedded cluster name: test sshds that serve a cluster's accounts on another port
_EXTRA_NODES: dict[tuple[str, int], str] = {}
_PUBLISHED_TTL_S = 5.0
_published: dict[str, tuple[float, dict[str, str]]] = {}
_published_lock = threading.Lock()


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
    try:
        from heroes_dev.components.login import CLUSTERS, ssh_port
        from heroes_dev.settings import StackSettings
    except ImportError:
        return None
    settings = StackSettings()
    hosts = {settings.host, "localhost"} if settings.host == "127.0.0.1" else {settings.host}
    for cluster in CLUSTERS:
        if host in hosts and int(port) == ssh_port(settings, cluster):
            return cluster
    return None


def _read_principals(cluster: str) -> dict[str, str]:
    """principal -> account, from the principals files the embedded login node of ``cluster`` reads."""
    try:
        from heroes_dev.components.login import principals_dir
        from heroes_dev.settings import StackSettings
    except ImportError:
        return {}
    folder = principals_dir(StackSettings(), cluster)
    mapping: dict[str, str] = {}
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        for line in path.read_text().splitlines():
            fields = line.split()
            if fields and not fields[0].startswith("#"):
                mapping.setdefault(fields[-1], path.name)
    return mapping


def published_logins(host: str, port: int) -> dict[str, str] | None:
    """What the embedded login node at ``host:port`` publishes: gateway principal -> Unix account.

    None when ``host:port`` is not one of this stack's login nodes (a real site: the gateway cannot read
    its files and learns logins elsewhere). Read from the same files sshd reads, cached a few seconds.
    """
    cluster = _cluster_at(host, port)
    if cluster is None:
        return None
    now = time.monotonic()
    with _published_lock:
        hit = _published.get(cluster)
        if hit and hit[0] > now:
            return hit[1]
    mapping = _read_principals(cluster)
    with _published_lock:
        _published[cluster] = (now + _PUBLISHED_TTL_S, mapping)
    return mapping


def published_login_anywhere(principal: str) -> str | None:
    """The account ``principal`` may act as on the embedded login nodes, when they all agree (None otherwise)."""
    try:
        from heroes_dev.components.login import CLUSTERS
    except ImportError:
        return None
    found = {_read_principals(cluster).get(principal) for cluster in CLUSTERS}
    return found.pop() if len(found) == 1 else None


def published_accounts() -> set[str]:
    """Every account an embedded login node lets a gateway user act as (cluster accounts, not the
    gateway host's own, although both live on this machine in the embedded stack)."""
    try:
        from heroes_dev.components.login import CLUSTERS
    except ImportError:
        return set()
    from .logins import SERVICE_PRINCIPAL

    now = time.monotonic()
    with _published_lock:
        hit = _published.get("*accounts*")
        if hit and hit[0] > now:
            return set(hit[1])
    accounts = set()
    for cluster in CLUSTERS:
        mapping = _read_principals(cluster)
        accounts |= {account for principal, account in mapping.items() if principal != SERVICE_PRINCIPAL}
    with _published_lock:
        _published["*accounts*"] = (now + _PUBLISHED_TTL_S, dict.fromkeys(accounts, ""))
    return accounts


def forget_published() -> None:
    with _published_lock:
        _published.clear()


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
