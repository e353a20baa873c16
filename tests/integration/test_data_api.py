"""Data API behaviour against a real service process, Keycloak and S3: big streamed transfers, concurrent
writes, quotas, traversal and odd names, folders, copy/move, ranges, presigned URLs, scoped S3 keys."""
from __future__ import annotations

import hashlib
import os
import threading

import boto3
import httpx
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from heroes_dev.components.s3 import client as s3_client
from data_support import DATA, GiB, MiB, apis, data_stack, readonly_member, spaces  # noqa: F401

pytestmark = pytest.mark.integration


def generated(size: int, seed: bytes, digest, chunk: int = 4 * MiB):
    """``size`` pseudo-random bytes in chunks (never all in memory), fed into ``digest`` as they go."""
    counter = 0
    block = hashlib.sha256(seed).digest() * (chunk // 32)
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        # vary every chunk so that no two parts are equal (a dedup or a misplaced part would show)
        piece = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest() + block[32:n]
        counter += 1
        digest.update(piece[:n])
        sent += n
        yield piece[:n]


def stream_sha256(api, bucket, key) -> tuple[int, str, int]:
    """(status, sha256, size) of a download read in chunks."""
    h = hashlib.sha256()
    size = 0
    with api.http.stream("GET", DATA + "/download", params={"bucket": bucket, "key": key}) as r:
        for chunk in r.iter_bytes(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
        return r.status_code, h.hexdigest(), size


def test_one_gib_round_trip_streams_with_identical_sha256(apis, spaces, data_stack):
    """1 GiB generated on the fly up through the API and back: same sha256, bounded service memory."""
    _, service, _ = data_stack
    bob = apis["bob"]
    rss_before = service.rss()
    up_digest = hashlib.sha256()
    r = bob.http.post(DATA + "/upload", params={"bucket": spaces["bob"], "key": "big/one-gib.bin"},
                      content=generated(GiB, b"one-gib", up_digest), headers={"Content-Length": str(GiB)})
    assert r.status_code == 201, r.text
    assert r.json()["size"] == GiB and r.json()["parts"] > 1
    rss_after_up = service.rss()
    status, digest, size = stream_sha256(bob, spaces["bob"], "big/one-gib.bin")
    assert (status, size) == (200, GiB)
    assert digest == up_digest.hexdigest()
    # the whole file never sat in the service's memory
    assert max(rss_after_up, service.rss()) - rss_before < 300 * MiB
    assert bob.delete(f"/bucket/{spaces['bob']}", params={"key": "big/one-gib.bin"}).status_code == 200


def test_range_requests(apis, spaces):
    bob = apis["bob"]
    body = os.urandom(3 * MiB + 5)
    assert bob.upload(spaces["bob"], "range.bin", body).status_code == 201
    r = bob.download(spaces["bob"], "range.bin", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == body[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(body)}"
    r = bob.download(spaces["bob"], "range.bin", headers={"Range": f"bytes={3 * MiB}-"})
    assert r.status_code == 206 and r.content == body[3 * MiB:]
    r = bob.download(spaces["bob"], "range.bin", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == body[-10:]
    assert bob.download(spaces["bob"], "range.bin", headers={"Range": f"bytes={len(body) + 10}-"}).status_code == 416
    assert bob.download(spaces["bob"], "range.bin", headers={"Range": "bytes=0-1,5-6"}).status_code == 416


def test_concurrent_uploads_to_one_key_leave_one_complete_object(apis, spaces, data_stack):
    settings = data_stack[0]
    bodies = [bytes([i]) * (20 * MiB + i) for i in range(1, 5)]  # multipart, all different
    results = []

    def put(body):
        with httpx.Client(base_url=apis["bob"].http.base_url, headers=apis["bob"].http.headers, timeout=300) as c:
            results.append(c.post(DATA + "/upload", params={"bucket": spaces["bob"], "key": "race.bin"},
                                  content=body).status_code)

    threads = [threading.Thread(target=put, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201] * 4
    r = apis["bob"].download(spaces["bob"], "race.bin")
    assert r.status_code == 200
    assert r.content in bodies  # exactly one whole body, not a mix of parts
    listing = apis["bob"].get(f"/bucket/{spaces['bob']}/list").json()
    assert [o["key"] for o in listing["objects"]].count("race.bin") == 1
    uploads = s3_client(settings).list_multipart_uploads(Bucket=spaces["bob"]).get("Uploads", [])
    assert [u for u in uploads if u["Key"] == "race.bin"] == []  # nothing left half-written


def test_quota_exceeded_is_413_and_stores_nothing(apis, spaces, data_stack):
    carol = apis["carol"]  # globex: 8 MiB quota in this service
    used = carol.get("/size").json()["organization"]["used_bytes"]
    assert carol.upload(spaces["carol"], "fits.bin", os.urandom(MiB)).status_code == 201
    # declared too big: refused before reading the body
    r = carol.upload(spaces["carol"], "too-big.bin", os.urandom(9 * MiB))
    assert r.status_code == 413, r.text
    assert "quota" in r.json()["detail"] and "globex" in r.json()["detail"]
    assert r.json()["rule"] == "organization-quota"
    # streamed without a length (chunked): aborted when it passes the room left
    r = carol.http.post(DATA + "/upload", params={"bucket": spaces["globex"], "key": "stream-too-big.bin"},
                        content=(os.urandom(MiB) for _ in range(12)))
    assert r.status_code == 413, r.text
    for bucket, key in ((spaces["carol"], "too-big.bin"), (spaces["globex"], "stream-too-big.bin")):
        assert carol.download(bucket, key).status_code == 404
        uploads = s3_client(data_stack[0]).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert [u for u in uploads if u["Key"] == key] == []
    assert carol.get("/size").json()["organization"]["used_bytes"] == used + MiB
    # a copy that would pass the quota is refused too
    big = carol.upload(spaces["carol"], "six.bin", os.urandom(6 * MiB))
    assert big.status_code == 201
    r = carol.post("/copy", json={"source_bucket": spaces["carol"], "source_key": "six.bin",
                                  "bucket": spaces["globex"], "key": "six-copy.bin"})
    assert r.status_code == 413 and carol.download(spaces["globex"], "six-copy.bin").status_code == 404
    for key in ("fits.bin", "six.bin"):
        carol.delete(f"/bucket/{spaces['carol']}", params={"key": key})


@pytest.mark.parametrize("key,rule", [
    ("../escape.txt", "key-traversal"), ("a/../../b.txt", "key-traversal"), ("a/./b.txt", "key-traversal"),
    ("/etc/passwd", "key-absolute"), ("a//b.txt", "key-traversal"), ("a\\..\\b.txt", "key-backslash"),
    ("bad\x00name", "key-control-chars"), ("line\nbreak", "key-control-chars"), ("tab\there", "key-control-chars"),
    ("del\x7f", "key-control-chars"), ("x" * 256, "key-segment-too-long"), ("/".join(["y" * 200] * 6), "key-too-long"),
    ("   /a.txt", "key-blank-segment"), ("..", "key-traversal"),
])
def test_bad_keys_are_refused_everywhere(apis, spaces, key, rule):
    bob, b = apis["bob"], spaces["bob"]
    answers = [
        bob.upload(b, key, b"x"),
        bob.download(b, key),
        bob.delete(f"/bucket/{b}", params={"key": key}),
        bob.post(f"/bucket/{b}/", json={"folder": key}),
        bob.post("/copy", json={"source_bucket": b, "source_key": "range.bin", "bucket": b, "key": key}),
        bob.post("/move", json={"source_bucket": b, "source_key": key, "bucket": b, "key": "ok.txt"}),
    ]
    for r in answers:
        assert r.status_code == 422, (r.request.method, r.request.url, r.status_code, r.text)
        assert r.json()["rule"] == rule
    listing = bob.get(f"/bucket/{b}/list", params={"recursive": "true"}).json()
    assert not any("escape" in o["key"] or "passwd" in o["key"] for o in listing["objects"])


def test_bad_bucket_names_are_not_found(apis):
    for bucket in ("../heroes-u-bob", "heroes-u-bob/../x", "HEROES", "a", "x" * 70):
        r = apis["bob"].get(f"/bucket/{bucket}/list")
        assert r.status_code == 404, (bucket, r.status_code)


@pytest.mark.parametrize("key", [
    "données/été ü.csv", "with space/and more spaces .txt", "日本語/ファイル.txt", "emoji 🎉/x.bin",
    "a" * 255, "/".join(["z" * 200] * 5), "plus+and=equals&amp;?.txt", "percent%20literal.txt",
    "dots...in.name", "trailing-dot.", "NFD-cafe\u0301.txt",
])
def test_odd_names_are_stored_exactly(apis, spaces, key):
    bob, b = apis["bob"], spaces["bob"]
    body = key.encode("utf-8") + os.urandom(32)
    r = bob.upload(b, key, body)
    assert r.status_code == 201, r.text
    assert r.json()["key"] == key
    assert bob.download(b, key).content == body
    listing = bob.get(f"/bucket/{b}/list", params={"recursive": "true"}).json()
    assert key in [o["key"] for o in listing["objects"]]
    # NFC and NFD spellings are two different keys: nothing is normalized behind the caller's back
    if key.startswith("NFD"):
        assert bob.download(b, "NFD-caf\u00e9.txt").status_code == 404
    assert bob.delete(f"/bucket/{b}", params={"key": key}).status_code == 200


def test_folders_copy_move_and_delete(apis, spaces):
    alice, bob = apis["alice"], apis["bob"]
    mine, shared = spaces["bob"], spaces["acme"]
    assert bob.post(f"/bucket/{mine}/", json={"folder": "proj/inputs"}).status_code == 201
    for name in ("a.csv", "b.csv", "sub/c.csv"):
        assert bob.upload(mine, f"proj/inputs/{name}", name.encode()).status_code == 201
    top = bob.get(f"/bucket/{mine}/list", params={"prefix": "proj/inputs/"}).json()
    assert [o["key"] for o in top["objects"]] == ["proj/inputs/a.csv", "proj/inputs/b.csv"]
    assert top["folders"] == ["proj/inputs/sub/"]
    r = bob.post("/copy", json={"source_bucket": mine, "source_key": "proj/inputs/", "bucket": shared,
                                "key": "from-bob/"})
    assert r.status_code == 201, r.text
    assert sorted(r.json()["keys"]) == ["from-bob/", "from-bob/a.csv", "from-bob/b.csv", "from-bob/sub/c.csv"]
    assert alice.download(shared, "from-bob/sub/c.csv").content == b"sub/c.csv"  # shared with the org
    r = bob.post("/move", json={"source_bucket": mine, "source_key": "proj/inputs/a.csv", "bucket": mine,
                                "key": "proj/moved.csv"})
    assert r.status_code == 200
    assert bob.download(mine, "proj/moved.csv").content == b"a.csv"
    assert bob.download(mine, "proj/inputs/a.csv").status_code == 404
    r = bob.post("/copy", json={"source_bucket": mine, "source_key": "proj/", "bucket": mine, "key": "proj/x/"})
    assert r.status_code == 409  # into itself
    r = bob.delete(f"/bucket/{mine}", params={"key": "proj/"})
    assert r.status_code == 200 and r.json()["deleted"] == 4  # inputs/, b.csv, sub/c.csv, moved.csv
    assert bob.get(f"/bucket/{mine}/list", params={"prefix": "proj/"}).json()["objects"] == []
    assert alice.delete(f"/bucket/{shared}", params={"key": "from-bob/"}).status_code == 200
    assert bob.delete(f"/bucket/{mine}", params={"key": "proj/"}).status_code == 404


def test_size_counts_bytes(apis, spaces):
    bob, b = apis["bob"], spaces["bob"]
    bob.upload(b, "sz/one.bin", b"1" * 1000)
    bob.upload(b, "sz/two.bin", b"2" * 24)
    r = bob.get("/size", params={"bucket": b, "prefix": "sz/"}).json()
    assert (r["bytes"], r["objects"]) == (1024, 2)
    whole = bob.get("/size").json()
    assert whole["organization"]["name"] == "acme" and whole["organization"]["quota_bytes"] == 6 * GiB
    bob.delete(f"/bucket/{b}", params={"key": "sz/"})


def test_presigned_download_and_upload(apis, spaces):
    bob, b = apis["bob"], spaces["bob"]
    bob.upload(b, "pre/get.txt", b"presigned body")
    r = bob.get("/download", params={"bucket": b, "key": "pre/get.txt", "presigned": "true"})
    assert r.status_code == 200 and r.json()["expires_in"] > 0
    assert requests.get(r.json()["url"], timeout=10).content == b"presigned body"
    form = bob.post("/upload", params={"bucket": b, "key": "pre/put.txt", "presigned": "true"}).json()
    up = requests.post(form["url"], data=form["fields"], files={"file": ("put.txt", b"posted")}, timeout=10)
    assert up.status_code in (200, 201, 204), up.text
    assert bob.download(b, "pre/put.txt").content == b"posted"
    # the form is bound to its key: another key is refused by S3 itself
    fields = dict(form["fields"], key="pre/elsewhere.txt")
    bad = requests.post(form["url"], data=fields, files={"file": ("x", b"x")}, timeout=10)
    assert bad.status_code == 403
    bob.delete(f"/bucket/{b}", params={"key": "pre/"})


def test_no_overwrite_and_missing_objects(apis, spaces):
    bob, b = apis["bob"], spaces["bob"]
    assert bob.upload(b, "once.txt", b"1").status_code == 201
    r = bob.upload(b, "once.txt", b"2", overwrite="false")
    assert r.status_code == 409 and bob.download(b, "once.txt").content == b"1"
    assert bob.download(b, "never.txt").status_code == 404
    assert bob.delete(f"/bucket/{b}", params={"key": "never.txt"}).status_code == 404
    bob.delete(f"/bucket/{b}", params={"key": "once.txt"})


def test_scoped_credentials_reach_only_the_own_bucket(apis, spaces, data_stack):
    """The keys s3contents gets: the user's own bucket only; no other bucket, no policy changes."""
    creds = apis["bob"].get("/credentials").json()
    s3 = boto3.client("s3", endpoint_url=creds["endpoint_url"], aws_access_key_id=creds["access_key_id"],
                      aws_secret_access_key=creds["secret_access_key"], region_name=creds["region"],
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    s3.put_object(Bucket=spaces["bob"], Key="notebooks/n.ipynb", Body=b"{}")
    assert s3.get_object(Bucket=spaces["bob"], Key="notebooks/n.ipynb")["Body"].read() == b"{}"

    def denied(call):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] in (403, 404)

    denied(lambda: s3.list_objects_v2(Bucket=spaces["carol"]))
    denied(lambda: s3.get_object(Bucket=spaces["carol"], Key="x.txt"))
    denied(lambda: s3.put_object(Bucket=spaces["acme"], Key="x", Body=b"x"))
    denied(lambda: s3.list_objects_v2(Bucket=spaces["acme"]))
    denied(lambda: s3.put_bucket_policy(Bucket=spaces["bob"], Policy='{"Version":"2012-10-17","Statement":[]}'))
    denied(lambda: s3.put_bucket_acl(Bucket=spaces["bob"], ACL="public-read"))
    denied(lambda: s3.create_bucket(Bucket=spaces["bob"] + ".mine"))
    denied(lambda: s3.delete_bucket(Bucket=spaces["bob"]))
    assert [b["Name"] for b in s3.list_buckets().get("Buckets", [])] == []
    # asking again returns the same keys (a running server keeps working) ...
    assert apis["bob"].get("/credentials").json() == creds
    # ... and rotate=true issues a new secret: the old keys stop working at once
    again = apis["bob"].get("/credentials", params={"rotate": "true"}).json()
    assert again["access_key_id"] == creds["access_key_id"] and again["secret_access_key"] != creds["secret_access_key"]
    denied(lambda: s3.get_object(Bucket=spaces["bob"], Key="notebooks/n.ipynb"))
    apis["bob"].delete(f"/bucket/{spaces['bob']}", params={"key": "notebooks/"})


def test_read_only_member_reads_shared_space(apis, spaces):
    assert apis["alice"].upload(spaces["acme"], "ro/readme.txt", b"hello").status_code == 201
    assert apis["dana"].download(spaces["acme"], "ro/readme.txt").content == b"hello"
    r = apis["dana"].upload(spaces["acme"], "ro/dana.txt", b"x")
    assert r.status_code == 403 and r.json()["rule"] == "data-read-only"
    apis["alice"].delete(f"/bucket/{spaces['acme']}", params={"key": "ro/"})


def test_organization_lifecycle_creates_and_removes_its_storage(apis, data_stack):
    """Creating an organization (platform admin) creates its shared bucket; deleting it removes the bucket."""
    import secrets

    settings, _, base = data_stack
    name = f"dt{secrets.token_hex(3)}"
    root = apis["root"].http
    r = root.post("/services/heroes/api/v1/heroes/admin/organizations/", json={"name": name})
    assert r.status_code == 201, r.text
    org_id = r.json()["id"]
    s3 = s3_client(settings)
    bucket = f"{base}-o-{name}"
    try:
        assert bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}
        s3.put_object(Bucket=bucket, Key="left/over.txt", Body=b"x")
    finally:
        r = root.delete(f"/services/heroes/api/v1/heroes/admin/organizations/{org_id}", params={"force": "true"})
    assert r.status_code == 204, r.text
    assert bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
