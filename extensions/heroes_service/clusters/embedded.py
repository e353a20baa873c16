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
