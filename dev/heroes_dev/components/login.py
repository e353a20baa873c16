"""SSH login nodes of the embedded Slurm clusters: one private ``sshd`` per cluster.

Each login node is what the gateway (and a person) reaches a cluster through: ``ssh -p 2221 bob@127.0.0.1``
lands on ``alpha``, port 2222 on ``beta``. The node's sshd sets ``SLURM_CONF`` for every session, so a plain
``sbatch``/``sacct`` over SSH talks to that cluster's controller.

Security shape, the same as a real site's login node:

* its own ed25519 host key, generated once into ``settings.data("login-<cluster>")`` and kept across
  restarts so clients can pin it (``known_hosts_line``); the two clusters never share a host key;
* public-key authentication only (no passwords, no keyboard-interactive, no root), keys read from a
  per-cluster directory managed by the stack (``authorized_keys/<user>``), never from users' homes;
* ``TrustedUserCAKeys`` points at a per-cluster CA file (empty at first): once the gateway's user CA is
  written there, certificates it signs are accepted without touching authorized keys — but only where
  ``AuthorizedPrincipalsFile`` lets them in: ``principals/<account>`` lists the gateway principals
  (``<user>@<organization>``, the gateway service's ``heroes:service``) that may act as that account. This
  mapping is the cluster owner's decision (``CLUSTER_PRINCIPALS`` here); an account without a file (root,
  system accounts, the gateway's ``jh-*`` accounts) accepts no certificate at all, whatever it names.
  A real site does the same with ``AuthorizedPrincipalsFile /etc/ssh/principals/%u`` (root-owned files
  it writes from its own user directory) or ``AuthorizedPrincipalsCommand`` (a lookup in that directory).

The demo accounts alice, bob, carol and the ``heroes`` service account get one keypair each (in
``settings.etc("login")/keys``), authorized on both clusters, so tests and the gateway can log in.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import tempfile
from pathlib import Path

from ..install import InstallError, ensure_debs, ensure_user, run
from ..output import say
from ..settings import StackSettings
from .base import Component, Health
from .slurm import CLUSTER_USERS, slurm_conf_path

SSHD = "/usr/sbin/sshd"
CLUSTERS = ("alpha", "beta")
#: sshd refuses to start without its privilege-separation directory
PRIVSEP_DIR = Path("/run/sshd")
#: who may act as each account, as the clusters' owner publishes it: gateway principals <user>@<organization>
#: (the demo realm's users) and the gateway service's own principal for its service account
CLUSTER_PRINCIPALS = {
    "alice": ("alice@acme",),
    "bob": ("bob@acme",),
    "carol": ("carol@globex",),
    "heroes": ("heroes:service",),
}


# --- paths and facts other components rely on -------------------------------------------------------
def ssh_port(settings: StackSettings, cluster: str) -> int:
    """The TCP port of ``cluster``'s login node on 127.0.0.1."""
    return getattr(settings.ports, f"{cluster}_ssh")


def host_key_path(settings: StackSettings, cluster: str) -> Path:
    """Private host key of ``cluster``'s login node (``.pub`` next to it)."""
    return settings.data(f"login-{cluster}") / "ssh_host_ed25519_key"


def trusted_ca_path(settings: StackSettings, cluster: str) -> Path:
    """CA public keys whose user certificates ``cluster`` accepts (write the gateway's CA here)."""
    return settings.data(f"login-{cluster}") / "trusted_user_ca_keys"


def principals_dir(settings: StackSettings, cluster: str) -> Path:
    """``<dir>/<account>`` lists the certificate principals that may log in as ``account`` on ``cluster``."""
    return settings.data(f"login-{cluster}") / "principals"


def descriptors_dir(settings: StackSettings) -> Path:
    """Where each login node describes itself to the gateway service (``<cluster>.json``); the service's
    default ``clusters.embedded_login_nodes_dir`` (``<state_dir>/etc/embedded-login-nodes``)."""
    return settings.etc("embedded-login-nodes")


def write_descriptor(settings: StackSettings, cluster: str) -> Path:
    """Tell the service, by a file in the state dir, that ``cluster``'s login node is this stack's: its
    address, the TrustedUserCAKeys file it reads and its principals folder (the published accounts).

    The service reads this file instead of importing the dev stack (production never imports
    ``heroes_dev``); a real site has no such file, so nothing of this applies there."""
    hosts = [settings.host, "localhost"] if settings.host == "127.0.0.1" else [settings.host]
    body = {"cluster": cluster, "hosts": hosts, "port": ssh_port(settings, cluster),
            "trusted_ca_file": str(trusted_ca_path(settings, cluster)),
            "principals_dir": str(principals_dir(settings, cluster))}
    folder = descriptors_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cluster}.json"
    partial = folder / f".{cluster}.json.tmp"
    partial.write_text(json.dumps(body, indent=1) + "\n")
    partial.chmod(0o644)
    os.replace(partial, path)  # a reader sees the old file or the new one, never half of one
    return path


def authorized_keys_dir(settings: StackSettings, cluster: str) -> Path:
    """``<dir>/<user>`` holds the keys that may log in as ``user`` on ``cluster``."""
    return settings.data(f"login-{cluster}") / "authorized_keys"


def user_key_path(settings: StackSettings, user: str) -> Path:
    """The demo private key of ``user`` (0600, root-owned; ``.pub`` next to it)."""
    return settings.etc("login") / "keys" / user


def _pub(path: Path) -> Path:
    """The public half of a private key file, as ssh-keygen names it."""
    return path.with_name(path.name + ".pub")


def _host_public_key(settings: StackSettings, cluster: str) -> tuple[str, str]:
    """(key type, base64 blob) of the pinned host key."""
    fields = _pub(host_key_path(settings, cluster)).read_text().split()
    return fields[0], fields[1]


def host_key_fingerprint(settings: StackSettings, cluster: str) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` and ``ssh`` print it."""
    _, blob = _host_public_key(settings, cluster)
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_line(settings: StackSettings, cluster: str) -> str:
    """One ``known_hosts`` line that pins ``cluster``'s login node (``[host]:port`` form)."""
    keytype, blob = _host_public_key(settings, cluster)
    return f"[{settings.host}]:{ssh_port(settings, cluster)} {keytype} {blob}"


# --- key material ------------------------------------------------------------------------------------
def _generate_key(path: Path, comment: str) -> None:
    """An ed25519 keypair at ``path`` (+``.pub``), created once: an existing key is never replaced."""
    if path.exists() and _pub(path).exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".keygen-") as tmp:
        partial = Path(tmp) / "key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(partial)])
        partial.chmod(0o600)
        # public half first: a present private key always has its public key next to it
        os.replace(_pub(partial), _pub(path))
        os.replace(partial, path)


def _authorize(path: Path, public_key: str) -> bool:
    """Add ``public_key`` to an authorized-keys file unless present; lines others added are kept."""
    wanted = " ".join(public_key.split()[:2])
    lines = path.read_text().splitlines() if path.exists() else []
    if any(" ".join(line.split()[:2]) == wanted for line in lines):
        return False
    path.write_text("\n".join([*lines, public_key.strip()]) + "\n")
    path.chmod(0o644)  # sshd reads it as the user; root-owned, so the user cannot edit it
    return True


class LoginNode(Component):
    """``sshd -D`` on 127.0.0.1:<cluster>_ssh, the login node of one Slurm cluster."""

    start_timeout = 30.0

    def __init__(self, settings: StackSettings, cluster: str):
        self.cluster = cluster
        self.name = f"login-{cluster}"
        self.depends = (f"slurm-{cluster}",)
        super().__init__(settings)

    # paths
    @property
    def port(self) -> int:
        return ssh_port(self.settings, self.cluster)

    @property
    def config_path(self) -> Path:
        return self.settings.etc(self.name) / "sshd_config"

    @property
    def pid_file(self) -> Path:
        return self.settings.run / f"{self.name}-sshd.pid"

    def ports(self) -> dict[str, int]:
        return {"ssh": self.port}

    # install
    def ensure(self) -> None:
        ensure_debs(self.name, ["openssh-server", "openssh-client"])
        for user in CLUSTER_USERS:
            ensure_user(self.name, user)
        if not PRIVSEP_DIR.is_dir():
            say(self.name, f"creating sshd privilege separation directory {PRIVSEP_DIR}")
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._ensure_host_key()
        self._ensure_user_keys()
        self._ensure_trusted_ca()
        self._ensure_principals()

    def _ensure_host_key(self) -> None:
        key = host_key_path(self.settings, self.cluster)
        if key.exists():
            say(self.name, f"host key present ({host_key_fingerprint(self.settings, self.cluster)})")
            return
        key.parent.mkdir(parents=True, exist_ok=True)
        key.parent.chmod(0o755)  # users traverse it to their authorized keys
        _generate_key(key, f"{self.name} host key")
        say(self.name, f"generated host key {host_key_fingerprint(self.settings, self.cluster)}")

    def _ensure_user_keys(self) -> None:
        """Demo keypairs (shared by both login nodes) and their authorization on this cluster."""
        keys_dir = user_key_path(self.settings, "x").parent
        keys_dir.mkdir(parents=True, exist_ok=True)
        keys_dir.chmod(0o700)
        auth_dir = authorized_keys_dir(self.settings, self.cluster)
        auth_dir.mkdir(parents=True, exist_ok=True)
        auth_dir.chmod(0o755)
        for user in CLUSTER_USERS:
            key = user_key_path(self.settings, user)
            if not key.exists():
                _generate_key(key, f"{user}@heroes-demo")
                say(self.name, f"generated demo SSH key for {user}: {key}")
            if _authorize(auth_dir / user, _pub(key).read_text()):
                say(self.name, f"authorized {user}'s demo key on {self.cluster}")

    def _ensure_trusted_ca(self) -> None:
        """The CA file exists (empty until the gateway's user CA is installed) so sshd's config is valid."""
        path = trusted_ca_path(self.settings, self.cluster)
        if not path.exists():
            path.touch(mode=0o644)
            say(self.name, f"created empty trusted user CA file {path}")

    def _ensure_principals(self) -> None:
        """One root-owned principals file per mapped account (rewritten from ``CLUSTER_PRINCIPALS``); files of
        accounts no longer mapped are removed, so nothing else can log in by certificate."""
        folder = principals_dir(self.settings, self.cluster)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        for stale in folder.iterdir():
            if stale.name not in CLUSTER_PRINCIPALS:
                stale.unlink()
        for account, principals in CLUSTER_PRINCIPALS.items():
            path = folder / account
            text = "".join(p + "\n" for p in principals)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                say(self.name, f"certificates naming {', '.join(principals)} may act as {account} on {self.cluster}")
            path.chmod(0o644)

    # run
    def config_text(self) -> str:
        s = self.settings
        slurm_conf = slurm_conf_path(s, self.cluster)
        lines = [
            f"# login node of cluster {self.cluster}: generated by heroes dev (login.py); rewritten at every start",
            f"ListenAddress {s.host}",
            f"Port {self.port}",
            f"HostKey {host_key_path(s, self.cluster)}",
            f'PidFile "{self.pid_file}"',
            # only keys: from the stack's directory, or certificates of the trusted CA
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            f'AuthorizedKeysFile "{authorized_keys_dir(s, self.cluster)}/%u"',
            f'TrustedUserCAKeys "{trusted_ca_path(s, self.cluster)}"',
            # a certificate logs in only as an account whose file lists one of its principals
            f'AuthorizedPrincipalsFile "{principals_dir(s, self.cluster)}/%u"',
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "PermitEmptyPasswords no",
            "PermitRootLogin no",
            "StrictModes yes",
            # PAM for account and session only (limits, environment); it can never ask for a password here
            "UsePAM yes",
            # every session on this node talks to this cluster's controller
            f'SetEnv "SLURM_CONF={slurm_conf}"',
            "PermitUserEnvironment no",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "LogLevel VERBOSE",
            # the gateway keeps a pool of connections and opens many channels on each
            "MaxStartups 50:30:200",
            "MaxSessions 64",
            "ClientAliveInterval 30",
            "ClientAliveCountMax 4",
            "Subsystem sftp internal-sftp",
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        self._ensure_principals()
        write_descriptor(self.settings, self.cluster)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        check = run([SSHD, "-t", "-f", str(self.config_path)], check=False)
        if check.returncode != 0:
            raise InstallError(f"sshd rejects {self.config_path}: {(check.stderr or check.stdout).strip()}")
        # -D: stay in the foreground so the recorded pid is sshd's; -e: log to stderr (our log file)
        self.spawn(f"sshd-{self.cluster}", [SSHD, "-D", "-e", "-f", str(self.config_path)], env=self.base_env())

    def health(self) -> Health:
        """TCP connect plus an SSH handshake whose host key must be the pinned one."""
        import paramiko  # imported here: the CLI starts faster without it

        expected_type, expected_blob = _host_public_key(self.settings, self.cluster)
        try:
            sock = socket.create_connection((self.settings.host, self.port), timeout=5)
        except OSError as exc:
            return Health(False, f"no TCP on {self.settings.host}:{self.port}: {exc}")
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            key = transport.get_remote_server_key()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            return Health(False, f"SSH handshake on port {self.port} failed: {exc}")
        finally:
            transport.close()
        if key.get_name() != expected_type or key.get_base64() != expected_blob:
            return Health(False, f"port {self.port} answers with host key {key.get_name()} "
                                 f"{key.get_fingerprint().hex()}, not the pinned "
                                 f"{host_key_fingerprint(self.settings, self.cluster)}")
        return Health(True, f"sshd on {self.settings.host}:{self.port}, host key "
                            f"{host_key_fingerprint(self.settings, self.cluster)}")
