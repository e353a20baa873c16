"""Notebooks of a single-user server kept in the user's own S3 bucket (s3contents).

The hub's pre-spawn hook (hub_config/heroes_data.py) asks the HEROES service for keys of this one server,
limited to the user's personal bucket, and passes them in the server's environment (``HEROES_S3_*``):
environment, not argv, because argv is visible to every account on the gateway in ``ps``. This class reads
them as trait defaults, so the server needs only ``--ServerApp.contents_manager_class=heroes_widgets.
contents_s3.HeroesS3ContentsManager`` on its command line. (A Jupyter ContentsManager, not a widget: it sits in
heroes_widgets because that is the package the stack copies onto the single-user servers' PYTHONPATH.)

When the S3 server refuses the keys (revoked, or replaced by an older gateway that rotated them), s3fs
reports every file as missing, and the apps answered a bare "404: Not Found". Here a "not found" is checked
against the store once: if the keys are refused, the answer is a 503 that says what happened and how to
recover (restart the server: it gets new keys; the notebooks are safe in the bucket).
"""
from __future__ import annotations

import os
import time

from s3contents import S3ContentsManager
from tornado.web import HTTPError
from traitlets import default

ENV_PREFIX = "HEROES_S3_"
#: S3 error codes that mean "these keys are not (or no longer) accepted"
REFUSED_CODES = frozenset({"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken",
                           "ExpiredToken", "403"})
#: the status line's reason: Voila's error page shows only this (JupyterLab's dialogs show RECOVER whole), so it
#: carries the way out too; one plain line
REFUSED_REASON = ("Notebook storage refused this server's keys. Your files are safe: stop and start your server "
                  "(File > Hub Control Panel: Stop My Server, then Start My Server)")
RECOVER = ("Your notebook storage (S3 bucket {bucket}) refused this server's keys ({code}): they were revoked or "
           "replaced. Your files are safe in the bucket. To recover, stop this server and start it again: in "
           "JupyterLab use File > Hub Control Panel, then 'Stop My Server' and 'Start My Server' (or open "
           "/hub/home). The restarted server gets new keys.")
#: seconds a verdict of the store is reused (a page load asks for many paths)
PROBE_TTL_S = 5.0


def _env(name: str, fallback: str = "") -> str:
    return os.environ.get(ENV_PREFIX + name, fallback)


class HeroesS3ContentsManager(S3ContentsManager):
    """S3ContentsManager configured from ``HEROES_S3_*`` (bucket, prefix, endpoint, region, keys)."""

    _probe: tuple[float, str] = (0.0, "")

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

    # --- keys refused: say so instead of "not found" ------------------------------------------------
    def refused_code(self) -> str:
        """The S3 error code when the store refuses this server's keys, else "" (cached a few seconds)."""
        checked_at, code = self._probe
        if time.monotonic() - checked_at < PROBE_TTL_S:
            return code
        import botocore.session
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region_name,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
            config=Config(signature_version="s3v4", retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10))
        try:
            client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
            code = ""
        except ClientError as exc:
            found = str(exc.response.get("Error", {}).get("Code", ""))
            code = found if found in REFUSED_CODES else ""
        except BotoCoreError:
            code = ""  # unreachable store: not a key problem, the original error stands
        self._probe = (time.monotonic(), code)
        return code

    def _raise_if_refused(self) -> None:
        code = self.refused_code()
        if code:
            self.log.error("S3 refused this server's keys (%s) for bucket %s", code, self.bucket)
            raise HTTPError(503, RECOVER.format(bucket=self.bucket, code=code), reason=REFUSED_REASON)

    def file_exists(self, path):
        found = super().file_exists(path)
        if not found:
            self._raise_if_refused()
        return found

    def dir_exists(self, path):
        found = super().dir_exists(path)
        if not found:
            self._raise_if_refused()
        return found

    def get(self, path, content=True, type=None, format=None):
        try:
            return super().get(path, content=content, type=type, format=format)
        except HTTPError as exc:
            if exc.status_code == 404:
                self._raise_if_refused()
            raise
        except OSError:  # s3fs turns a refused write or read into PermissionError/OSError
            self._raise_if_refused()
            raise

    def save(self, model, path):
        try:
            return super().save(model, path)
        except (HTTPError, OSError):
            self._raise_if_refused()
            raise
