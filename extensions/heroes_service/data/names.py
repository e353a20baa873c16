"""Bucket names derived from user and organization names, and object keys checked before they reach S3.

Why derived names: S3 bucket names are global, 3-63 characters of ``[a-z0-9.-]``, while user and
organization names come from Keycloak and may hold capitals, underscores, unicode or be long. A name
that is already S3-safe is used verbatim (``heroes-u-bob``); any other one is slugged and gets a digest
of the exact original (``heroes-u-jo-smith--3f2a9c1d0b``). Verbatim names never contain ``--``, so the
two forms can never collide, and two different originals only collide on a 40-bit digest collision.

Layout of a physical bucket name::

    <base>-u-<user>[.<extra>]     personal space of a user (and extra personal buckets)
    <base>-o-<org>[.<extra>]      shared space of an organization (and extra shared buckets)

The dot separates the owner part from an extra bucket's own name; neither part may contain a dot,
so ``parse_bucket`` recovers kind, owner and extra from a name without any lookup.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
import unicodedata
from dataclasses import dataclass

USER = "user"
ORG = "organization"
_KIND_TAG = {USER: "u", ORG: "o"}
_TAG_KIND = {v: k for k, v in _KIND_TAG.items()}

#: verbatim-safe identity part: lower-case alphanumerics with single hyphens inside
_VERBATIM = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")
_IDENTITY_MAX = 30
_DIGEST_LEN = 10
#: an extra bucket's own name as a caller gives it
_EXTRA = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")
_BUCKET_RULES = (
    "3-63 characters of lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, "
    "no '..', '.-' or '-.', not an IP address"
)


class NameError_(ValueError):
    """A bucket or key name that breaks a rule; ``rule`` says which (the API answers 422 with it)."""

    def __init__(self, message: str, rule: str):
        super().__init__(message)
        self.rule = rule


def identity_part(name: str) -> str:
    """The S3-safe form of a user or organization name (verbatim when already safe, else slug--digest)."""
    if not name:
        raise NameError_("an empty user or organization name has no storage space", "name-empty")
    if len(name) <= _IDENTITY_MAX and _VERBATIM.match(name):
        return name
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)[: _IDENTITY_MAX - _DIGEST_LEN - 2].strip("-") or "x"
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_DIGEST_LEN]
    return f"{slug}--{digest}"


def check_bucket_name(name: str) -> str:
    """Raise ``NameError_`` unless ``name`` follows S3's bucket naming rules; return it."""
    ok = (
        3 <= len(name) <= 63
        and re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", name) is not None
        and ".." not in name and ".-" not in name and "-." not in name
        and not name.startswith(("xn--", "sthree-"))
        and not name.endswith(("-s3alias", "--ol-s3"))
    )
    if ok:
        try:
            ipaddress.ip_address(name)
            ok = False
        except ValueError:
            pass
    if not ok:
        raise NameError_(f"{name!r} is not a valid bucket name ({_BUCKET_RULES})", "s3-bucket-name")
    return name


def check_extra_name(extra: str, room: int) -> str:
    """An extra bucket's own name: lower-case letters, digits, single inner hyphens, at most ``room`` long."""
    if not extra or len(extra) > room or not _EXTRA.match(extra):
        raise NameError_(
            f"bucket name {extra!r} must be 1-{room} characters of lower-case letters, digits and single "
            "inner hyphens", "bucket-extra-name")
    return extra


@dataclass(frozen=True)
class BucketRef:
    """What a physical bucket name means: whose space it is, and the extra name if not the default one."""

    name: str
    kind: str  # USER or ORG
    owner: str  # identity part (derived user or organization name)
    extra: str = ""


class Naming:
    """Builds and parses bucket names for one deployment (``base`` separates deployments sharing a server)."""

    def __init__(self, base: str = "heroes"):
        if not _VERBATIM.match(base) or len(base) > 12 or "--" in base:
            raise ValueError(f"bucket base {base!r}: 1-12 lower-case letters/digits/single hyphens")
        self.base = base

    def bucket(self, kind: str, owner_name: str, extra: str = "") -> str:
        """The physical bucket of ``owner_name``'s space (``extra`` names an additional bucket)."""
        head = f"{self.base}-{_KIND_TAG[kind]}-{identity_part(owner_name)}"
        if extra:
            check_extra_name(extra, self.extra_room(kind, owner_name))
            head = f"{head}.{extra}"
        return check_bucket_name(head)

    def extra_room(self, kind: str, owner_name: str) -> int:
        """How long an extra bucket's own name may be for this owner (63 minus the owner part and the dot)."""
        return 63 - len(f"{self.base}-{_KIND_TAG[kind]}-{identity_part(owner_name)}") - 1

    def parse(self, name: str) -> BucketRef | None:
        """The meaning of a physical bucket name, or None when it is not one of this deployment's buckets."""
        m = re.fullmatch(rf"{re.escape(self.base)}-([uo])-([a-z0-9-]+)(?:\.([a-z0-9-]+))?", name)
        if m is None:
            return None
        return BucketRef(name=name, kind=_TAG_KIND[m.group(1)], owner=m.group(2), extra=m.group(3) or "")


# --- object keys ---------------------------------------------------------------------------------------
KEY_MAX_BYTES = 1024  # S3's limit on a key
SEGMENT_MAX_BYTES = 255  # the POSIX backend stores each segment as a file name (NAME_MAX)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
#: bidirectional overrides, embeddings and isolates: they make a key display differently from what it is
#: ("invoice\u202efdp.exe" shows as "invoiceexe.pdf")
_BIDI = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def check_key(key: str, *, folder: bool = False) -> str:
    """Return ``key`` unchanged if it is a safe object key, else raise ``NameError_`` saying why.

    Refused: empty keys, a leading ``/`` (absolute), ``.`` or ``..`` segments (traversal, and ambiguity
    on filesystem-backed servers), empty segments (``a//b``), backslashes (Windows separators),
    control characters, segments over 255 bytes and keys over 1024 bytes. Unicode and spaces are
    allowed and stored exactly (no normalization: what the caller sends is what lands).
    ``folder=True`` accepts one trailing ``/`` (a folder marker or a prefix).
    """
    if not isinstance(key, str) or key == "":
        raise NameError_("the object key is empty", "key-empty")
    if _CONTROL.search(key):
        raise NameError_("the object key contains control characters", "key-control-chars")
    if _BIDI.search(key):
        raise NameError_("the object key contains bidirectional control characters (they disguise what it "
                         "says)", "key-bidi-chars")
    if key.startswith("/"):
        raise NameError_("the object key is absolute (starts with '/'); give it relative to the bucket",
                         "key-absolute")
    if "\\" in key:
        raise NameError_("the object key contains a backslash; use '/' between folders", "key-backslash")
    body = key[:-1] if folder and key.endswith("/") else key
    if not folder and key.endswith("/"):
        raise NameError_("an object key cannot end with '/' (that names a folder)", "key-trailing-slash")
    for segment in body.split("/"):
        if segment in ("", ".", ".."):
            raise NameError_(f"the object key has a {segment or 'empty'!r} path segment "
                             "('.', '..' and '//' are refused)", "key-traversal")
        if len(segment.encode("utf-8")) > SEGMENT_MAX_BYTES:
            raise NameError_(f"a path segment of the key is longer than {SEGMENT_MAX_BYTES} bytes",
                             "key-segment-too-long")
        if segment.strip(" ") == "":
            raise NameError_("a path segment of the key is only spaces", "key-blank-segment")
    if len(key.encode("utf-8")) > KEY_MAX_BYTES:
        raise NameError_(f"the object key is longer than {KEY_MAX_BYTES} bytes (UTF-8)", "key-too-long")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty (the bucket's root) or a folder key ending with '/'."""
    if prefix == "":
        return prefix
    if not prefix.endswith("/"):
        prefix += "/"
    return check_key(prefix, folder=True)
