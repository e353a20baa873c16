"""Tenant isolation of every data route: anonymous, another organization, another user, read-only member.

Real service process, real Keycloak tokens, real S3. The matrix is checked against the access table
(api/access.py): a data route added without a row here fails ``test_every_data_route_is_covered``.
"""
from __future__ import annotations

import pytest

from heroes_service.api.access import ACCESS
from data_support import apis, data_stack, readonly_member, spaces  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

COVERED: set[tuple[str, str]] = set()


def covers(method: str, path: str):
    COVERED.add((method, "/organization/data" + path))


@pytest.fixture(scope="module")
def seeded(apis, spaces):
    """bob's file, an acme shared file, an extra shared bucket of acme and an extra personal bucket of bob."""
    assert apis["bob"].upload(spaces["bob"], "iso/file.txt", b"bob's secret").status_code == 201
    assert apis["alice"].upload(spaces["acme"], "iso/shared.txt", b"acme shared").status_code == 201
    r = apis["alice"].post("/bucket", json={"name": "iso", "scope": "organization"})
    assert r.status_code == 201, r.text
    acme_extra = r.json()["bucket"]
    r = apis["bob"].post("/bucket", json={"name": "iso", "scope": "user"})
    assert r.status_code == 201, r.text
    return {**spaces, "acme_extra": acme_extra, "bob_extra": r.json()["bucket"]}


def no_leak(response, *names: str) -> None:
    """The body names none of another tenant's buckets/organizations."""
    for name in names:
        assert name not in response.text, f"{name!r} leaked in {response.request.method} {response.request.url}"


def test_list(apis, seeded):
    covers("GET", "/list")
    assert apis["anon"].get("/list").status_code == 401
    carol = apis["carol"].get("/list")
    assert carol.status_code == 200
    no_leak(carol, seeded["acme"], seeded["bob"], seeded["acme_extra"], "acme")
    alice = apis["alice"].get("/list").json()["buckets"]
    assert seeded["bob"] not in {b["bucket"] for b in alice}
    assert seeded["bob_extra"] not in {b["bucket"] for b in alice}
    dana = {b["bucket"]: b for b in apis["dana"].get("/list").json()["buckets"]}
    assert dana[seeded["acme"]]["access"] == "read" and seeded["bob"] not in dana
    bob = {b["bucket"]: b for b in apis["bob"].get("/list").json()["buckets"]}
    assert bob[seeded["bob"]]["access"] == "write" and bob[seeded["acme"]]["access"] == "write"
    assert seeded["acme_extra"] in bob and seeded["bob_extra"] in bob


@pytest.mark.parametrize("who,bucket,expected", [
    ("anon", "bob", 401), ("carol", "bob", 404), ("alice", "bob", 404), ("dana", "bob", 404),
    ("carol", "acme", 404), ("dana", "acme", 200), ("bob", "bob", 200), ("root", "bob", 404),
])
def test_size(apis, seeded, who, bucket, expected):
    covers("GET", "/size")
    r = apis[who].get("/size", params={"bucket": seeded[bucket]})
    assert r.status_code == expected, r.text
    if who == "carol":
        r = apis["carol"].get("/size")
        assert r.status_code == 200
        no_leak(r, seeded["acme"], seeded["bob"], "acme")


@pytest.mark.parametrize("who,scope,expected", [
    ("anon", "user", 401), ("dana", "organization", 403), ("bob", "organization", 403),
])
def test_create_bucket_refused(apis, seeded, who, scope, expected):
    covers("POST", "/bucket")
    r = apis[who].post("/bucket", json={"name": "nope", "scope": scope})
    assert r.status_code == expected, r.text


def test_create_bucket_lands_in_own_space(apis, seeded):
    covers("POST", "/bucket")
    r = apis["carol"].post("/bucket", json={"name": "iso", "scope": "user"})
    assert r.status_code == 201
    assert r.json()["bucket"] not in (seeded["bob_extra"], seeded["acme_extra"])
    no_leak(r, "acme", seeded["bob"])
    assert apis["carol"].delete("/bucket", params={"bucket": r.json()["bucket"]}).status_code == 200


@pytest.mark.parametrize("who,bucket,expected", [
    ("anon", "acme_extra", 401), ("carol", "acme_extra", 404), ("bob", "acme_extra", 403),
    ("dana", "acme_extra", 403), ("alice", "bob_extra", 404), ("carol", "bob_extra", 404),
    ("dana", "bob_extra", 404), ("alice", "acme", 409),
])
def test_delete_bucket_refused(apis, seeded, who, bucket, expected):
    covers("DELETE", "/bucket")
    r = apis[who].delete("/bucket", params={"bucket": seeded[bucket], "force": "true"})
    assert r.status_code == expected, r.text
    assert apis["alice" if "acme" in bucket else "bob"].get(f"/bucket/{seeded[bucket]}/list").status_code == 200


@pytest.mark.parametrize("who,bucket,expected", [
    ("anon", "bob", 401), ("carol", "bob", 404), ("alice", "bob", 404), ("dana", "bob", 404),
    ("carol", "acme", 404), ("dana", "acme", 403),
])
def test_create_folder_refused(apis, seeded, who, bucket, expected):
    covers("POST", "/bucket/{bucket}/")
    r = apis[who].post(f"/bucket/{seeded[bucket]}/", json={"folder": f"by-{who}/"})
    assert r.status_code == expected, r.text
    owner = "bob" if bucket == "bob" else "alice"
    listing = apis[owner].get(f"/bucket/{seeded[bucket]}/list").json()
    assert f"by-{who}/" not in listing["folders"]


@pytest.mark.parametrize("who,bucket,expected", [
    ("anon", "bob", 401), ("carol", "bob", 404), ("alice", "bob", 404), ("dana", "bob", 404),
    ("carol", "acme", 404), ("dana", "acme", 200), ("bob", "bob", 200),
])
def test_list_objects(apis, seeded, who, bucket, expected):
    covers("GET", "/bucket/{bucket}/list")
    r = apis[who].get(f"/bucket/{seeded[bucket]}/list", params={"prefix": "iso/"})
    assert r.status_code == expected, r.text
    if expected != 200:
        assert "iso/" not in r.text


@pytest.mark.parametrize("who,bucket,key,expected", [
    ("anon", "bob", "iso/file.txt", 401), ("carol", "bob", "iso/file.txt", 404),
    ("alice", "bob", "iso/file.txt", 404), ("dana", "bob", "iso/file.txt", 404),
    ("carol", "acme", "iso/shared.txt", 404), ("dana", "acme", "iso/shared.txt", 403),
    ("dana", "acme", "iso/", 403),
])
def test_delete_object_refused(apis, seeded, who, bucket, key, expected):
    covers("DELETE", "/bucket/{bucket}")
    r = apis[who].delete(f"/bucket/{seeded[bucket]}", params={"key": key})
    assert r.status_code == expected, r.text
    owner = "bob" if bucket == "bob" else "alice"
    still = "iso/file.txt" if bucket == "bob" else "iso/shared.txt"
    assert apis[owner].download(seeded[bucket], still).status_code == 200


@pytest.mark.parametrize("who,bucket,key,expected", [
    ("anon", "bob", "iso/file.txt", 401), ("carol", "bob", "iso/file.txt", 404),
    ("alice", "bob", "iso/file.txt", 404), ("dana", "bob", "iso/file.txt", 404),
    ("carol", "acme", "iso/shared.txt", 404), ("dana", "acme", "iso/shared.txt", 200),
    ("bob", "bob", "iso/file.txt", 200),
])
def test_download(apis, seeded, who, bucket, key, expected):
    covers("GET", "/download")
    r = apis[who].download(seeded[bucket], key)
    assert r.status_code == expected, r.text
    if expected != 200:
        assert b"secret" not in r.content and b"acme shared" not in r.content
    presigned = apis[who].get("/download", params={"bucket": seeded[bucket], "key": key, "presigned": "true"})
    assert presigned.status_code == expected
    if expected != 200:
        assert "X-Amz-Signature" not in presigned.text


@pytest.mark.parametrize("who,bucket,expected", [
    ("anon", "bob", 401), ("carol", "bob", 404), ("alice", "bob", 404), ("dana", "bob", 404),
    ("carol", "acme", 404), ("dana", "acme", 403),
])
def test_upload_refused(apis, seeded, who, bucket, expected):
    covers("POST", "/upload")
    key = f"iso/from-{who}.txt"
    r = apis[who].upload(seeded[bucket], key, b"intruder")
    assert r.status_code == expected, r.text
    owner = "bob" if bucket == "bob" else "alice"
    assert apis[owner].download(seeded[bucket], key).status_code == 404
    presigned = apis[who].post("/upload", params={"bucket": seeded[bucket], "key": key, "presigned": "true"})
    assert presigned.status_code == expected


@pytest.mark.parametrize("route", ["/copy", "/move"])
@pytest.mark.parametrize("who,src,src_key,dst,expected", [
    ("anon", "bob", "iso/file.txt", "bob", 401),
    ("carol", "bob", "iso/file.txt", "carol", 404),  # read another org's user's file
    ("carol", "carol", "x.txt", "acme", 404),  # write into another org
    ("alice", "bob", "iso/file.txt", "acme", 404),  # another user of the same org
    ("dana", "acme", "iso/shared.txt", "acme", 403),  # read-only member writes the shared space
])
def test_copy_move_refused(apis, seeded, route, who, src, src_key, dst, expected):
    covers("POST", route)
    if src == "carol":
        apis["carol"].upload(seeded["carol"], "x.txt", b"carol")
    r = apis[who].post(route, json={"source_bucket": seeded[src], "source_key": src_key,
                                     "bucket": seeded[dst], "key": f"stolen-{who}.txt"})
    assert r.status_code == expected, r.text
    owner = {"bob": "bob", "acme": "alice", "carol": "carol"}[dst]
    assert apis[owner].download(seeded[dst], f"stolen-{who}.txt").status_code == 404
    src_owner = {"bob": "bob", "acme": "alice", "carol": "carol"}[src]
    assert apis[src_owner].download(seeded[src], src_key).status_code == 200  # a refused move deletes nothing


def test_read_only_member_may_copy_out(apis, seeded, readonly_member):
    covers("POST", "/copy")
    own = next(b["bucket"] for b in apis["dana"].get("/list").json()["buckets"] if b["kind"] == "user")
    r = apis["dana"].post("/copy", json={"source_bucket": seeded["acme"], "source_key": "iso/shared.txt",
                                         "bucket": own, "key": "mine.txt"})
    assert r.status_code == 201, r.text
    assert apis["dana"].download(own, "mine.txt").content == b"acme shared"
    r = apis["dana"].post("/move", json={"source_bucket": seeded["acme"], "source_key": "iso/shared.txt",
                                         "bucket": own, "key": "moved.txt"})
    assert r.status_code == 403  # a move deletes from the shared space


@pytest.mark.parametrize("who,expected", [("anon", 401), ("bob", 200), ("carol", 200)])
def test_credentials_are_own(apis, seeded, who, expected):
    covers("GET", "/credentials")
    r = apis[who].get("/credentials")
    assert r.status_code == expected, r.text
    if expected == 200:
        assert r.json()["bucket"] == seeded[who]
    if who == "carol":
        no_leak(r, seeded["bob"], "acme")


@pytest.mark.parametrize("who,expected", [("anon", 401), ("bob", 403), ("alice", 403), ("carol", 403), ("root", 403),
                                          ("forged", 401)])
def test_server_credentials_are_for_the_hub_only(apis, seeded, who, expected):
    """A person (platform admin included) never gets a server's keys, neither their own nor bob's."""
    covers("POST", "/server-credentials")
    covers("DELETE", "/server-credentials")
    api = apis[who] if who != "forged" else apis["anon"]
    headers = {"Authorization": "token not-a-hub-token"} if who == "forged" else {}
    r = api.post("/server-credentials", json={"user": "bob", "server": ""}, headers=headers)
    assert r.status_code == expected, r.text
    assert "secret_access_key" not in r.text
    r = api.delete("/server-credentials", params={"user": "bob", "server": ""}, headers=headers)
    assert r.status_code == expected, r.text


def test_extra_buckets_deleted_by_their_managers(apis, seeded):
    covers("DELETE", "/bucket")
    assert apis["alice"].delete("/bucket", params={"bucket": seeded["acme_extra"]}).status_code == 200
    assert apis["bob"].delete("/bucket", params={"bucket": seeded["bob_extra"]}).status_code == 200
    names = {b["bucket"] for b in apis["bob"].get("/list").json()["buckets"]}
    assert not names & {seeded["acme_extra"], seeded["bob_extra"]}


def test_every_data_route_is_covered():
    """Runs last in this module: every data row of the access table was exercised above."""
    rows = {(m, p) for (m, p) in ACCESS if p.startswith("/organization/data")}
    assert rows, "no data rows in the access table"
    assert rows - COVERED == set(), f"data routes without an isolation test: {sorted(rows - COVERED)}"
