"""When the data service signs upload bodies (SHA-256 in the signature) and when it does not."""
from __future__ import annotations

import pytest
from botocore.awsrequest import AWSResponse

from heroes_service.data import sign_payload
from heroes_service.data.storage import Storage


@pytest.mark.parametrize("endpoint, mode, signed", [
    ("http://127.0.0.1:9000", "auto", False),      # loopback: nothing on the path to protect against
    ("http://[::1]:9000", "auto", False),
    ("http://localhost:9000", "auto", False),
    ("https://s3.example.org", "auto", False),     # TLS protects the body
    ("http://10.1.2.3:9000", "auto", True),        # plain http over a network: sign
    ("http://s3.internal:9000", "auto", True),
    ("http://127.0.0.1:9000", "always", True),
    ("http://10.1.2.3:9000", "never", False),
])
def test_sign_payload_modes(endpoint, mode, signed):
    assert sign_payload(endpoint, mode) is signed


class _Raw:
    """The smallest raw body botocore reads a canned response from."""

    def stream(self):
        return iter([b""])


def _sent_content_sha256(storage: Storage) -> str:
    """Send one UploadPart with ``storage``'s client and return the X-Amz-Content-SHA256 it signed."""
    seen = {}

    def capture(request, **_):
        seen["sha"] = request.headers["X-Amz-Content-SHA256"]
        return AWSResponse(request.url, 200, {"ETag": '"e"'}, _Raw())

    storage.client.meta.events.register("before-send.s3.UploadPart", capture)
    storage.client.upload_part(Bucket="b", Key="k", UploadId="u", PartNumber=1, Body=bytearray(b"x" * 1024))
    storage.close()
    return seen["sha"].decode() if isinstance(seen["sha"], bytes) else seen["sha"]


def test_unsigned_upload_part_carries_no_body_hash():
    storage = Storage("http://127.0.0.1:9", "AKIAEXAMPLE", "secret", sign_payload=False)
    assert _sent_content_sha256(storage) == "UNSIGNED-PAYLOAD"


def test_signed_upload_part_carries_the_body_hash():
    import hashlib

    storage = Storage("http://10.0.0.9:9", "AKIAEXAMPLE", "secret", sign_payload=True)
    assert _sent_content_sha256(storage) == hashlib.sha256(b"x" * 1024).hexdigest()
