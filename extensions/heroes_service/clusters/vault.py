"""Encryption at rest for cluster secrets (service-account private keys, the user-CA key).

One Fernet key (AES-128-CBC + HMAC-SHA256, authenticated) lives in ``<secrets_dir>/clusters.fernet``,
created once with mode 0600 in a 0700 directory; the database only ever holds Fernet tokens. A stolen
database without the key file reveals nothing; the key file is never logged or returned.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .errors import ClusterError

KEY_FILE = "clusters.fernet"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700 (and tighten it if it exists)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private_file(path: Path, data: bytes) -> bool:
    """Create ``path`` 0600 with ``data`` unless it exists (O_EXCL: two processes never both write it)."""
    ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return True


class Vault:
    """Encrypt/decrypt small secrets with the service's at-rest key."""

    def __init__(self, secrets_dir: Path):
        self.secrets_dir = Path(secrets_dir)
        self._fernet: Fernet | None = None
        self._lock = threading.Lock()

    def _key(self) -> Fernet:
        with self._lock:
            if self._fernet is None:
                path = self.secrets_dir / KEY_FILE
                write_private_file(path, Fernet.generate_key())
                self._fernet = Fernet(path.read_bytes().strip())
            return self._fernet

    def encrypt(self, plaintext: str) -> str:
        return self._key().encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._key().decrypt(token.encode("ascii")).decode()
        except InvalidToken as exc:
            # why: a replaced key file must not look like a wrong SSH key on the cluster
            raise ClusterError("a stored cluster secret cannot be decrypted with the service's key file "
                               f"({self.secrets_dir / KEY_FILE}); was the key replaced?") from exc
