"""Data management: per-user and per-organization S3 spaces (see ``service`` for the rules).

``build(settings)`` wires the domain for one app; the API keeps it on ``app.state.data``.
"""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from urllib.parse import urlsplit

from .iam import GatewayAdmin
from .names import Naming
from .service import DataService, QuotaPolicy
from .storage import Storage


def s3_keys(settings) -> tuple[str, str]:
    """The service's S3 keys: settings first, else the credentials file (the embedded stack's root keys)."""
    if settings.s3_access_key and settings.s3_secret_key.get_secret_value():
        return settings.s3_access_key, settings.s3_secret_key.get_secret_value()
    path = Path(settings.s3_credentials_file or Path(settings.state_dir) / "etc" / "s3" / "root-credentials.json")
    try:
        data = json.loads(path.read_text())
        return data["access_key"], data["secret_key"]
    except (OSError, ValueError, KeyError):
        return "", ""  # every S3 call then fails with a clear 503/502; the service still starts


def _return_big_buffers_to_the_os() -> None:
    """Make glibc serve buffers >= 4 MiB with mmap, so freed transfer parts leave the process.

    Why: glibc raises its mmap threshold after the first large free (up to 32 MiB), after which the
    8 MiB parts of every transfer are carved from per-thread arenas that keep the freed memory: the
    service's RSS then grows by tens of MiB per worker thread. A fixed threshold keeps it flat.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_MMAP_THRESHOLD = -3
        libc.mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def sign_payload(endpoint: str, mode: str) -> bool:
    """Whether uploads carry a SHA-256 of their body in the signature.

    ``auto`` signs only where nothing else protects the body in transit: over https (TLS) or to a loopback
    server an on-path change is not possible, and hashing every byte twice (here and on the server) is the
    largest CPU cost of an upload.
    """
    if mode in ("always", "never"):
        return mode == "always"
    parts = urlsplit(endpoint)
    if parts.scheme == "https":
        return False
    try:
        return not ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        return parts.hostname != "localhost"


def build(settings) -> DataService:
    _return_big_buffers_to_the_os()
    access, secret = s3_keys(settings)
    storage = Storage(settings.s3_endpoint, access, secret, region=settings.s3_region,
                      part_size=settings.data_part_bytes, max_inflight=settings.data_parts_in_flight,
                      sign_payload=sign_payload(settings.s3_endpoint, settings.s3_sign_payload))
    admin = (GatewayAdmin(settings.s3_endpoint, access, secret, settings.s3_region,
                         namespace=settings.data_bucket_base) if settings.s3_user_accounts else None)
    return DataService(storage, Naming(settings.data_bucket_base),
                       QuotaPolicy(settings.data_quota_bytes, dict(settings.data_org_quotas)),
                       readonly_group=settings.data_readonly_group, presign_ttl=settings.data_presign_ttl_s,
                       admin=admin)


__all__ = ["DataService", "Naming", "QuotaPolicy", "Storage", "GatewayAdmin", "build", "s3_keys"]
