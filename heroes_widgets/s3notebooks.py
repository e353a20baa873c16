"""Notebooks of a single-user server kept in the user's own S3 bucket (s3contents).

The hub's pre-spawn hook (hub_config/heroes_data.py) asks the data domain for keys that reach only the
user's personal bucket and passes them in the server's environment (``HEROES_S3_*``): environment, not
argv, because argv is visible to every account on the gateway in ``ps``. This class reads them as trait
defaults, so the server needs only ``--ServerApp.contents_manager_class=heroes_widgets.s3notebooks.
HeroesS3ContentsManager`` on its command line. Importing s3contents lazily keeps heroes_widgets usable in
environments without it.
"""
from __future__ import annotations

import os

from s3contents import S3ContentsManager
from traitlets import default

ENV_PREFIX = "HEROES_S3_"


def _env(name: str, fallback: str = "") -> str:
    return os.environ.get(ENV_PREFIX + name, fallback)


class HeroesS3ContentsManager(S3ContentsManager):
    """S3ContentsManager configured from ``HEROES_S3_*`` (bucket, prefix, endpoint, region, keys)."""

    @default("access_key_id")
    def _default_access_key_id(self):
        return _env("ACCESS_KEY_ID")

    @default("secret_access_key")
    def _default_secret_access_key(self):
        return _env("SECRET_ACCESS_KEY")

    @default("endpoint_url")
    def _default_endpoint_url(self):
        return _env("ENDPOINT_URL", "http://127.0.0.1:9000")

    @default("region_name")
    def _default_region_name(self):
        return _env("REGION", "us-east-1")

    @default("bucket")
    def _default_bucket(self):
        return _env("BUCKET", "notebooks")

    @default("prefix")
    def _default_prefix(self):
        return _env("PREFIX", "notebooks")

    @default("signature_version")
    def _default_signature_version(self):
        return "s3v4"
