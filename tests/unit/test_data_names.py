"""Bucket names derived from user/organization names, and object key validation (no S3 needed)."""
from __future__ import annotations

import pytest

from heroes_service.data.names import (ORG, USER, NameError_, Naming, check_bucket_name, check_key, check_prefix,
                                       identity_part)


@pytest.mark.parametrize("name", ["bob", "acme", "team-7", "a"])
def test_safe_names_are_verbatim(name):
    assert identity_part(name) == name


@pytest.mark.parametrize("name", ["Bob", "jo_smith", "jo--smith", "-lead", "trail-", "été", "x" * 31, "a.b",
                                  "日本", "ALL CAPS", "../../etc"])
def test_other_names_get_slug_and_digest(name):
    part = identity_part(name)
    assert "--" in part and len(part) <= 30
    assert check_bucket_name(f"heroes-u-{part}")


def test_no_collisions_between_similar_names():
    names = ["bob", "Bob", "BOB", "bob_", "bo-b", "bo_b", "b.ob", "jo-smith", "jo_smith", "jo smith", "Jo-Smith"]
    parts = [identity_part(n) for n in names]
    assert len(set(parts)) == len(parts)


def test_naming_round_trip():
    n = Naming("heroes")
    assert n.bucket(USER, "bob") == "heroes-u-bob"
    assert n.bucket(ORG, "acme") == "heroes-o-acme"
    assert n.bucket(ORG, "acme", "results") == "heroes-o-acme.results"
    ref = n.parse("heroes-o-acme.results")
    assert (ref.kind, ref.owner, ref.extra) == (ORG, "acme", "results")
    odd = n.bucket(USER, "Jo_Smith")
    assert n.parse(odd).owner == identity_part("Jo_Smith")
    assert n.parse("other-u-bob") is None and n.parse("heroes-x-bob") is None
    assert n.parse("heroes-u-bob/../x") is None and n.parse("heroes-u-bob.a.b") is None


def test_extra_names_respect_length_and_charset():
    n = Naming("heroes")
    room = n.extra_room(USER, "bob")
    assert len(n.bucket(USER, "bob", "x" * room)) == 63
    for bad in ("x" * (room + 1), "Caps", "a.b", "-x", "x-", "a_b", ""):
        if bad == "":
            continue
        with pytest.raises(NameError_):
            n.bucket(USER, "bob", bad)


@pytest.mark.parametrize("name", ["ab", "a" * 64, "Abc", "-abc", "abc-", "a..b", "a.-b", "192.168.1.1",
                                  "xn--abc", "abc-s3alias", "sthree-x", "a_b"])
def test_invalid_bucket_names(name):
    with pytest.raises(NameError_) as err:
        check_bucket_name(name)
    assert err.value.rule == "s3-bucket-name"


@pytest.mark.parametrize("key,rule", [
    ("", "key-empty"), ("/abs", "key-absolute"), ("..", "key-traversal"), ("a/../b", "key-traversal"),
    ("a/./b", "key-traversal"), ("a//b", "key-traversal"), ("a\\b", "key-backslash"), ("a\x00", "key-control-chars"),
    ("a\nb", "key-control-chars"), ("a\x85b", "key-control-chars"), ("a\u2028b", "key-control-chars"),
    ("x" * 256, "key-segment-too-long"), ("/".join(["y" * 250] * 5), "key-too-long"), ("dir/", "key-trailing-slash"),
    ("  /a", "key-blank-segment"), ("é" * 128, "key-segment-too-long"),
])
def test_bad_keys(key, rule):
    with pytest.raises(NameError_) as err:
        check_key(key)
    assert err.value.rule == rule


@pytest.mark.parametrize("key", ["a.csv", "données/été.csv", "with space.txt", "x" * 255, "a/b/c.d", "...x",
                                 "name.", "emoji 🎉", "/".join(["z" * 200] * 5)])
def test_good_keys_unchanged(key):
    assert check_key(key) == key


def test_folder_keys_and_prefixes():
    assert check_key("dir/", folder=True) == "dir/"
    assert check_prefix("") == "" and check_prefix("a/b") == "a/b/"
    with pytest.raises(NameError_):
        check_prefix("../")
