"""The embedded stack's S3 object store: Versity Gateway (``versitygw``) on a POSIX directory.

Why Versity Gateway: it is a real S3 server (SigV4, multipart, bucket policies, an internal IAM store for
per-user accounts) that installs by package name with ``go install`` and keeps objects as plain files, so
the data survives ``heroes dev down``/``up`` and can be inspected on disk.

Layout:

* binary: ``<cache>/s3/bin/<tag>/versitygw``, built once per machine (GOPATH and GOCACHE under
  ``<cache>/s3/go`` so a rebuild, e.g. after a tag bump, reuses the module downloads);
* objects: ``<state>/data/s3/buckets`` (one directory per bucket);
* IAM accounts: ``<state>/data/s3/iam`` (the gateway's internal IAM store, ``users.json``);
* root credentials: ``<state>/etc/s3/root-credentials.json``, mode 0600, generated once and kept.

The root secret reaches the gateway through its environment (``ROOT_SECRET_ACCESS_KEY``), never through
argv: argv is written to the log and the pid record and is visible to every user in ``ps``.

Other code imports ``s3_endpoint``, ``root_credentials`` and ``client`` from here.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from ..install import InstallError, run
from ..output import say
from ..settings import StackSettings
from .base import Component, Health

#: the Versity Gateway release we build (newest tag on the Go module proxy when this was written)
VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.8.0"
#: the only region the embedded stack uses; clients must sign for the same one
REGION = "us-east-1"
CREDENTIALS_FILE = "root-credentials.json"


# --- helpers other code imports ---------------------------------------------------------------------
def s3_endpoint(settings: StackSettings) -> str:
    """The URL boto3 / s3fs / s3contents use to reach the embedded S3 server."""
    return f"http://{settings.host}:{settings.ports.s3}"


def credentials_path(settings: StackSettings) -> Path:
    return settings.etc("s3") / CREDENTIALS_FILE


def root_credentials(settings: StackSettings) -> tuple[str, str]:
    """(access key, secret key) of the gateway's root account; created by the first ``heroes dev up s3``."""
    path = credentials_path(settings)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no S3 root credentials at {path}; start the store with: heroes dev up s3") from None
    return data["access_key"], data["secret_key"]


def client(settings: StackSettings, access_key: str | None = None, secret_key: str | None = None,
           *, timeout: float = 30.0):
    """A boto3 S3 client for the embedded server (root account unless other keys are given).

    Path-style addressing because the gateway serves every bucket on one host name (127.0.0.1 cannot carry
    bucket sub-domains); SigV4 in ``us-east-1`` because that is the region the gateway is started with.
    """
    import boto3
    from botocore.config import Config

    if access_key is None or secret_key is None:
        access_key, secret_key = root_credentials(settings)
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=min(timeout, 5.0),
        read_timeout=timeout,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint(settings),
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=config,
    )


# --- the component ----------------------------------------------------------------------------------
class S3Server(Component):
    name = "s3"
    start_timeout = 30.0

    # paths -------------------------------------------------------------------------------------------
    @property
    def build_root(self) -> Path:
        return self.settings.cache / "s3"

    @property
    def binary(self) -> Path:
        return self.build_root / "bin" / VERSITYGW_VERSION / "versitygw"

    @property
    def buckets_dir(self) -> Path:
        return self.settings.data("s3") / "buckets"

    @property
    def iam_dir(self) -> Path:
        return self.settings.data("s3") / "iam"

    @property
    def sidecar_dir(self) -> Path:
        return self.settings.data("s3") / "meta"

    # contract ----------------------------------------------------------------------------------------
    def ports(self) -> dict[str, int]:
        return {"s3": self.settings.ports.s3}

    def ensure(self) -> None:
        self._ensure_binary()
        for path in (self.buckets_dir, self.iam_dir):
            path.mkdir(parents=True, exist_ok=True)
        # the IAM store holds every account's secret; the object tree is served only through the gateway
        self.iam_dir.chmod(0o700)
        self.settings.data("s3").chmod(0o700)
        self._ensure_credentials()

    def start(self) -> None:
        access, secret = root_credentials(self.settings)
        env = self.base_env(ROOT_ACCESS_KEY_ID=access, ROOT_SECRET_ACCESS_KEY=secret)
        self.spawn("s3", self._argv(), env=env)

    def health(self) -> Health:
        """Healthy when a request signed with the root keys is answered (ListBuckets)."""
        try:
            s3 = client(self.settings, timeout=3.0)
            buckets = s3.list_buckets().get("Buckets", [])
        except FileNotFoundError as exc:
            return Health(False, str(exc))
        except Exception as exc:  # connection refused, signature errors, timeouts: all mean "not usable"
            return Health(False, f"signed ListBuckets on {s3_endpoint(self.settings)} failed: {exc}")
        return Health(True, f"versitygw {VERSITYGW_VERSION} at {s3_endpoint(self.settings)}, {len(buckets)} bucket(s)")

    # details -----------------------------------------------------------------------------------------
    def _argv(self) -> list[str]:
        """Foreground gateway on loopback; global flags first, then the ``posix`` backend and its root."""
        argv = [
            str(self.binary),
            "--port", f"{self.settings.host}:{self.settings.ports.s3}",
            "--region", REGION,
            "--iam-dir", str(self.iam_dir),
            # accounts created through the admin API must work (or stop working) at once, not after a TTL
            "--iam-cache-disable",
            # no per-request lines: they would carry presigned-URL query strings into the log
            "--quiet",
            "posix",
        ]
        if not _supports_user_xattrs(self.settings.data("s3")):
            # the POSIX backend keeps ETags and metadata in user xattrs; without them, in a sidecar tree
            self.sidecar_dir.mkdir(parents=True, exist_ok=True)
            argv += ["--sidecar", str(self.sidecar_dir)]
        argv.append(str(self.buckets_dir))
        return argv

    def _ensure_binary(self) -> None:
        if _is_executable(self.binary):
            say(self.name, f"versitygw {VERSITYGW_VERSION} present at {self.binary}")
            return
        go = shutil.which("go")
        if go is None:
            raise InstallError("building the S3 server needs Go (go install); put a Go >= 1.24 toolchain on PATH")
        self.build_root.mkdir(parents=True, exist_ok=True)
        # one build per machine even when two checkouts run `heroes dev up` at once
        with open(self.build_root / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _is_executable(self.binary):
                say(self.name, f"versitygw {VERSITYGW_VERSION} was built meanwhile at {self.binary}")
                return
            self._go_install(go)

    def _go_install(self, go: str) -> None:
        """``go install <module>@<tag>`` into a temporary GOBIN, then move the binary into place.

        The move is atomic, so an interrupted build never leaves a half-written binary that the next run
        would take for a finished one.
        """
        say(self.name, f"building versitygw {VERSITYGW_VERSION} with go install (first time only; takes minutes)")
        gopath = self.build_root / "go" / "gopath"
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.binary.parent, prefix=".gobin-") as gobin:
            env = {
                "GOPATH": str(gopath),
                "GOMODCACHE": str(gopath / "pkg" / "mod"),
                "GOCACHE": str(self.build_root / "go" / "gocache"),
                "GOBIN": gobin,
                "GOFLAGS": "-modcacherw",  # lets a later `rm -rf` of the cache work without chmod
            }
            run([go, "install", f"{VERSITYGW_MODULE}@{VERSITYGW_VERSION}"], env=env, timeout=3600)
            os.replace(Path(gobin) / "versitygw", self.binary)
        say(self.name, f"built {self.binary} in {time.monotonic() - began:.0f}s")

    def _ensure_credentials(self) -> None:
        """Generate the root keys once (0600, exclusive create); later starts reuse them unchanged."""
        path = credentials_path(self.settings)
        if path.exists():
            path.chmod(0o600)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "access_key": "heroes" + secrets.token_hex(7).upper(),
            "secret_key": secrets.token_urlsafe(30),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        say(self.name, f"generated root credentials in {path} (mode 0600)")


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _supports_user_xattrs(directory: Path) -> bool:
    """Whether the filesystem under ``directory`` stores ``user.*`` extended attributes."""
    probe = directory / ".xattr-probe"
    try:
        probe.touch()
        os.setxattr(probe, "user.heroes-probe", b"1")
        return os.getxattr(probe, "user.heroes-probe") == b"1"
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
