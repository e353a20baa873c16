"""The gateway's own SSH user CA and the short-lived certificates it signs (pure Python).

Why not ``ssh-keygen -s``: it needs the CA key as a plaintext file; here the CA key stays encrypted at
rest (``Vault``) and is decrypted in memory only. The certificate layout follows OpenSSH's
PROTOCOL.certkeys for ``ssh-ed25519-cert-v01@openssh.com``; sshd checks it against the CA public key
listed in its ``TrustedUserCAKeys`` file, the principal against the login name, and the validity window.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import secrets
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .vault import Vault, write_private_file

CA_KEY_FILE = "user_ca_ed25519.enc"
CA_PUB_FILE = "user_ca_ed25519.pub"
CERT_TYPE = b"ssh-ed25519-cert-v01@openssh.com"
KEY_TYPE = b"ssh-ed25519"
SSH_CERT_TYPE_USER = 1
#: sign certificates valid from slightly in the past, so a cluster clock a little behind still accepts them
CLOCK_SKEW_S = 60


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed25519_blob(raw_public: bytes) -> bytes:
    """The SSH wire form of an ed25519 public key."""
    return _string(KEY_TYPE) + _string(raw_public)


def fingerprint(blob: bytes) -> str:
    """``SHA256:...`` as OpenSSH prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def paramiko_key(private: Ed25519PrivateKey) -> paramiko.Ed25519Key:
    """A paramiko key object for a cryptography ed25519 key (via OpenSSH's private key format)."""
    text = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                 serialization.NoEncryption()).decode()
    return paramiko.Ed25519Key.from_private_key(io.StringIO(text))


@dataclass(frozen=True)
class SignedKey:
    """An ephemeral keypair and its certificate; ``pkey`` carries the certificate for authentication."""

    pkey: paramiko.PKey
    certificate: str           # one line, "ssh-ed25519-cert-v01@openssh.com AAAA... key_id" (public)
    key_id: str
    serial: int
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int


class UserCA:
    """The CA key (created once, encrypted at rest) and certificate signing."""

    def __init__(self, vault: Vault):
        self.vault = vault
        self._key: Ed25519PrivateKey | None = None
        self._lock = threading.Lock()

    @property
    def _key_path(self) -> Path:
        return self.vault.secrets_dir / CA_KEY_FILE

    def _private(self) -> Ed25519PrivateKey:
        with self._lock:
            if self._key is None:
                if not self._key_path.exists():
                    fresh = Ed25519PrivateKey.generate()
                    pem = fresh.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode()
                    if write_private_file(self._key_path, self.vault.encrypt(pem).encode()):
                        pub = f"{KEY_TYPE.decode()} {base64.b64encode(ed25519_blob(_raw_public(fresh))).decode()}"
                        pub_path = self.vault.secrets_dir / CA_PUB_FILE
                        pub_path.write_text(pub + " heroes-gateway-user-ca\n")
                        os.chmod(pub_path, 0o644)
                pem = self.vault.decrypt(self._key_path.read_text().strip())
                key = serialization.load_pem_private_key(pem.encode(), password=None)
                assert isinstance(key, Ed25519PrivateKey)
                self._key = key
            return self._key

    def public_key_line(self) -> str:
        """``ssh-ed25519 AAAA... heroes-gateway-user-ca``: what a cluster puts in ``TrustedUserCAKeys``."""
        blob = ed25519_blob(_raw_public(self._private()))
        return f"{KEY_TYPE.decode()} {base64.b64encode(blob).decode()} heroes-gateway-user-ca"

    def fingerprint(self) -> str:
        return fingerprint(ed25519_blob(_raw_public(self._private())))

    def sign(self, principals: list[str] | tuple[str, ...], *, key_id: str, validity_s: int,
             valid_after: int | None = None, valid_before: int | None = None,
             extensions: tuple[str, ...] = ()) -> SignedKey:
        """A fresh ed25519 keypair plus a user certificate for ``principals``.

        ``valid_after``/``valid_before`` (epoch seconds) override the window; tests use them to make an
        already expired certificate. No ``permit-pty`` etc. by default: the gateway only runs commands.
        """
        ca = self._private()
        user_key = Ed25519PrivateKey.generate()
        now = int(time.time())
        after = now - CLOCK_SKEW_S if valid_after is None else valid_after
        before = now + validity_s if valid_before is None else valid_before
        serial = secrets.randbits(63)
        body = b"".join([
            _string(CERT_TYPE),
            _string(secrets.token_bytes(32)),
            _string(_raw_public(user_key)),
            struct.pack(">Q", serial),
            struct.pack(">I", SSH_CERT_TYPE_USER),
            _string(key_id.encode()),
            _string(b"".join(_string(p.encode()) for p in principals)),
            struct.pack(">Q", max(after, 0)),
            struct.pack(">Q", before),
            _string(b""),  # critical options: none
            _string(b"".join(_string(e.encode()) + _string(b"") for e in sorted(extensions))),
            _string(b""),  # reserved
            _string(ed25519_blob(_raw_public(ca))),
        ])
        signature = _string(_string(KEY_TYPE) + _string(ca.sign(body)))
        cert_blob = body + signature
        line = f"{CERT_TYPE.decode()} {base64.b64encode(cert_blob).decode()} {key_id}"
        pkey = paramiko_key(user_key)
        pkey.load_certificate(line)
        return SignedKey(pkey=pkey, certificate=line, key_id=key_id, serial=serial,
                         principals=tuple(principals), valid_after=after, valid_before=before)
