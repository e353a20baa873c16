"""Helpers for the clusters tests against the embedded stack (real sshd, real Slurm).

Not used by the service itself. They give each test session its own secrets directory (its own user CA,
removed again from the login nodes' TrustedUserCAKeys at the end), cluster records for the embedded
login nodes, and a second, throw-away sshd with a different host key (the shared login nodes' keys are
never touched).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from heroes_service.clusters import embedded, identity
from heroes_service.clusters.config import get_clusters_settings
from heroes_service.clusters.connector import HostKey, close_pools
from heroes_service.clusters.models import Cluster


@contextmanager
def isolated_secrets(**overrides) -> Iterator[Path]:
    """A fresh secrets dir (and settings overrides, e.g. cert_validity_minutes=1) for the duration.

    The in-process clusters code also finds the embedded stack's login nodes (the descriptor files the stack
    writes into its state dir) even where the process names no state dir (benchmarks run outside pytest)."""
    from heroes_dev import settings as stack_settings_module
    from heroes_dev.components.login import descriptors_dir

    folder = Path(tempfile.mkdtemp(prefix="heroes-clusters-test-"))
    nodes_var = "HEROES_SERVICE_CLUSTERS_EMBEDDED_LOGIN_NODES_DIR"
    saved = {k: os.environ.get(k) for k in ["HEROES_SERVICE_CLUSTERS_SECRETS_DIR", nodes_var,
                                            *[f"HEROES_SERVICE_CLUSTERS_{k.upper()}" for k in overrides]]}
    os.environ["HEROES_SERVICE_CLUSTERS_SECRETS_DIR"] = str(folder / "secrets")
    os.environ.setdefault(nodes_var, str(descriptors_dir(stack_settings_module.load())))
    for key, value in overrides.items():
        os.environ[f"HEROES_SERVICE_CLUSTERS_{key.upper()}"] = str(value)
    get_clusters_settings.cache_clear()
    identity.forget_secrets()
    try:
        yield folder / "secrets"
    finally:
        try:
            ca_line = identity.get_ca().public_key_line() if (folder / "secrets").exists() else None
        except Exception:  # noqa: BLE001 - no CA was ever made
            ca_line = None
        if ca_line:
            for path in set(embedded.embedded_login_nodes().values()):
                embedded.remove_ca(path, ca_line)
        close_pools()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_clusters_settings.cache_clear()
        identity.forget_secrets()
        shutil.rmtree(folder, ignore_errors=True)


def embedded_cluster(stack_settings, name: str, *, organization: str = "acme", mode: str = identity.PER_USER,
                     service_key: str | None = None, port: int | None = None,
                     host_key: HostKey | None = None, runtime: str = "charliecloud") -> Cluster:
    """A transient (not stored) ``Cluster`` for embedded login node ``name`` (alpha or beta)."""
    from heroes_dev.components.login import known_hosts_line, ssh_port

    pinned = host_key or HostKey.parse(known_hosts_line(stack_settings, name))
    return Cluster(
        id=str(uuid.uuid4()), organization=organization, name=name, description="", host=stack_settings.host,
        port=port or ssh_port(stack_settings, name), work_dir="heroes-work", container_runtime=runtime,
        identity_mode=mode, service_login="heroes",
        service_key_enc=identity.get_vault().encrypt(service_key) if service_key else None,
        host_key_type=pinned.key_type, host_key_b64=pinned.blob_b64, host_key_fingerprint=pinned.fingerprint,
        partitions=[], default_partition="", price_model={}, energy_profile={}, relative_speed=1.0,
    )


def trust_ca(stack_settings) -> str:
    """Install this session's CA on both embedded login nodes (what enrollment does); return its line."""
    from heroes_dev.components.login import CLUSTERS, trusted_ca_path

    line = identity.get_ca().public_key_line()
    for cluster in CLUSTERS:
        embedded.install_ca(trusted_ca_path(stack_settings, cluster), line)
    return line


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def impostor_sshd(stack_settings, cluster: str = "alpha", *, port: int | None = None,
                  key_dir: Path | None = None) -> Iterator[tuple[int, HostKey]]:
    """A second sshd on a free port with a NEW host key, otherwise like ``cluster``'s login node
    (same trusted CA file, same Slurm): what a man-in-the-middle or a re-installed node looks like.
    ``port`` + ``key_dir`` restart one with the same address and key (an outage and recovery)."""
    from heroes_dev.components.login import authorized_keys_dir, principals_dir, trusted_ca_path

    folder = Path(tempfile.mkdtemp(prefix="heroes-impostor-"))
    key = (key_dir or folder) / "host_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "impostor", "-f", str(key)], check=True)
    port = port or free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {key}", f"PidFile {folder / 'sshd.pid'}",
        "AuthenticationMethods publickey", "PubkeyAuthentication yes",
        f'AuthorizedKeysFile "{authorized_keys_dir(stack_settings, cluster)}/%u"',
        f'TrustedUserCAKeys "{trusted_ca_path(stack_settings, cluster)}"',
        f'AuthorizedPrincipalsFile "{principals_dir(stack_settings, cluster)}/%u"',
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin no", "UsePAM yes",  # PAM: the demo accounts have locked passwords
        "LogLevel VERBOSE", "Subsystem sftp internal-sftp", "",
    ]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = open(folder / "sshd.log", "w")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"impostor sshd exited: {(folder / 'sshd.log').read_text()[-500:]}")
                time.sleep(0.1)
        embedded.register_node("127.0.0.1", port, cluster)  # same accounts and principals as the cluster's node
        yield port, HostKey.parse(Path(str(key) + ".pub").read_text())
    finally:
        embedded.register_node("127.0.0.1", port, None)
        proc.terminate()  # only the process this helper started, by its own handle
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
