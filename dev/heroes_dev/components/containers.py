"""The container runtime of the embedded clusters: Charliecloud and one small image with python3.

Production sites run jobs in Apptainer images (``PRODUCTION_RUNTIME``); the embedded stack uses
Charliecloud because Debian packages it, it needs no setuid helper (unprivileged user namespaces only)
and a directory image is enough. The image is built here, locally, with ``debootstrap`` from the Debian
mirror that apt already uses, so nothing is pulled from a container registry.

The tarball is built once per machine into ``settings.cache`` (shared by every checkout) and unpacked
into ``settings.data("image")/python3`` of this checkout's stack, readable by every Unix account so that
Slurm jobs of alice, bob and carol can ``ch-run`` it.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..install import InstallError, ensure_debs, run
from ..output import say
from ..settings import StackSettings
from .base import Component, Health

#: what production deployments configure; the embedded stack stands in with Charliecloud
PRODUCTION_RUNTIME = "apptainer"
DEV_RUNTIME = "charliecloud"

#: Debian release and packages of the demo image: python3 with scikit-learn, so every example template
#: (the scikit-learn training one included) runs inside the container
IMAGE_SUITE = "bookworm"
IMAGE_PACKAGES = ("python3-minimal", "python3-sklearn")
IMAGE_NAME = "python3"
#: bump when the build recipe changes: the cached tarball's name carries it, so old caches are not reused
IMAGE_REVISION = 3
TARBALL_NAME = f"{IMAGE_NAME}-{IMAGE_SUITE}-minbase-r{IMAGE_REVISION}.tar.gz"
#: a file that exists only inside the image: tests read it to prove a step ran in the container
IMAGE_MARKER = "/etc/heroes-image"
IMAGE_LABEL = f"heroes {IMAGE_NAME} image r{IMAGE_REVISION} (debootstrap {IMAGE_SUITE} minbase)"

#: printed from inside the container by the health probe: proves python3 of the *image* ran
#: (python3-minimal has no json module, hence the plain separator)
PROBE = (
    "import os, sys; "
    "pretty = [l.split('=', 1)[1].strip().strip('\"') for l in open('/etc/os-release') "
    "if l.startswith('PRETTY_NAME=')]; "
    "print(os.getuid(), sys.version.split()[0], pretty[0] if pretty else '', sep='|')"
)


def image_path(settings: StackSettings) -> Path:
    """Directory image that ``ch-run <image_path> -- python3 ...`` runs (same path on every node)."""
    return settings.data("image") / IMAGE_NAME


def tarball_path(settings: StackSettings) -> Path:
    return settings.cache / "images" / TARBALL_NAME


def debian_mirror(suite: str = IMAGE_SUITE) -> str:
    """The Debian mirror apt is configured with for ``suite`` (asked from apt itself, never hard-coded)."""
    result = run(["apt-get", "indextargets", "--format", "$(SITE)|$(RELEASE)|$(COMPONENT)",
                  "Identifier: Packages"])
    for line in result.stdout.splitlines():
        site, _, rest = line.partition("|")
        release, _, component = rest.partition("|")
        if release == suite and component == "main" and site:
            return site
    raise InstallError(f"no apt source for Debian {suite}/main is configured (see apt-get indextargets); "
                       "add one to /etc/apt/sources.list.d/ so the container image can be built")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    """Serialise builds of the machine-wide cache (two checkouts may run ``up`` at once)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def probe(image: Path, user: str | None = None, timeout: float = 30.0) -> dict:
    """Run python3 inside the image (as ``user`` through runuser, else as the caller) and parse its output."""
    argv = ["ch-run", str(image), "--", "python3", "-c", PROBE]
    env = dict(os.environ)
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    else:
        env.setdefault("USER", "root")  # ch-run refuses to start without $USER
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"ch-run as {user or 'caller'} exited {result.returncode}: "
                           f"{(result.stderr or result.stdout).strip()[-500:]}")
    uid, python, pretty = result.stdout.strip().splitlines()[-1].split("|", 2)
    return {"uid": int(uid), "python": python, "os": pretty}


def _unprivileged_user() -> str:
    """bob once the login nodes created him (the account jobs run as), else ``nobody``."""
    try:
        pwd.getpwnam("bob")
        return "bob"
    except KeyError:
        return "nobody"


class ContainerImage(Component):
    name = "image"
    has_processes = False
    start_timeout = 60.0

    def __init__(self, settings: StackSettings):
        super().__init__(settings)
        self.image = image_path(settings)
        self.tarball = tarball_path(settings)
        self.stamp = self.image.parent / f"{IMAGE_NAME}.sha256"

    # --- install ------------------------------------------------------------------------------------
    def ensure(self) -> None:
        ensure_debs(self.name, ["charliecloud", "debootstrap"])
        self._check_userns()
        with _locked(self.tarball.parent / ".build.lock"):
            if self.tarball.exists():
                say(self.name, f"image tarball present: {self.tarball}")
            else:
                self._build_tarball()
        self._unpack()

    def _check_userns(self) -> None:
        """Charliecloud needs unprivileged user namespaces; say clearly when the kernel forbids them."""
        result = run(["runuser", "-u", "nobody", "--", "ch-checkns"], check=False, timeout=60)
        if result.returncode != 0:
            raise InstallError(
                "unprivileged user namespaces do not work here, so ch-run cannot start containers "
                "(try: sysctl -w user.max_user_namespaces=15000 kernel.unprivileged_userns_clone=1):\n"
                + (result.stdout + result.stderr)[-1500:])
        say(self.name, "unprivileged user namespaces work (ch-checkns ok)")

    def _build_tarball(self) -> None:
        """debootstrap a minbase Debian with python3-minimal and pack it (the slow, once-per-machine step)."""
        mirror = debian_mirror()
        say(self.name, f"building image {TARBALL_NAME} with debootstrap from {mirror} (once per machine)")
        began = time.monotonic()
        self.tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.tarball.parent, prefix=".build-") as tmp:
            root = Path(tmp) / "root"
            run(["debootstrap", "--variant=minbase", "--components=main",
                 f"--include={','.join(IMAGE_PACKAGES)}", IMAGE_SUITE, str(root), mirror], timeout=1800)
            self._trim(root)
            partial = Path(tmp) / TARBALL_NAME
            # device nodes stay out: ch-run bind-mounts the host's /dev
            run(["tar", "-C", str(root), "--numeric-owner", "--exclude=./dev/*", "-czf", str(partial), "."],
                timeout=600)
            digest = _sha256(partial)
            (Path(tmp) / "sha256").write_text(digest + "\n")
            os.replace(partial, self.tarball)
            os.replace(Path(tmp) / "sha256", self.tarball.with_name(TARBALL_NAME + ".sha256"))
        size = self.tarball.stat().st_size / 1e6
        say(self.name, f"built {self.tarball} ({size:.1f} MB) in {time.monotonic() - began:.0f}s")

    @staticmethod
    def _trim(root: Path) -> None:
        """Drop apt caches, label the image and make sure the files ch-run binds onto exist in it."""
        (root / IMAGE_MARKER.lstrip("/")).write_text(IMAGE_LABEL + "\n")
        for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*"):
            for path in root.glob(pattern):
                if path.is_file():
                    path.unlink()
        for name in ("etc/hosts", "etc/resolv.conf"):
            target = root / name
            if target.is_symlink():
                target.unlink()
            target.touch(exist_ok=True)

    def _tarball_digest(self) -> str:
        sums = self.tarball.with_name(TARBALL_NAME + ".sha256")
        return sums.read_text().strip() if sums.exists() else _sha256(self.tarball)

    def _stamp(self) -> str:
        """``<tarball name> <sha256>`` of what is unpacked at ``self.image`` ("" when nothing is)."""
        return self.stamp.read_text().strip() if self.stamp.exists() else ""

    def _unpack(self) -> None:
        """Unpack the cached tarball into this stack's data dir unless that exact tarball is unpacked."""
        digest = f"{TARBALL_NAME} {self._tarball_digest()}"
        if self.image.is_dir() and self._stamp() == digest:
            say(self.name, f"image unpacked: {self.image}")
            return
        say(self.name, f"unpacking {self.tarball.name} into {self.image}")
        self.image.parent.mkdir(parents=True, exist_ok=True)
        for parent in [self.image.parent, *self.image.parent.parents]:
            if parent == self.settings.state.parent:
                break
            parent.chmod(stat.S_IMODE(parent.stat().st_mode) | 0o055)  # every account must traverse to the image
        staging = Path(tempfile.mkdtemp(dir=self.image.parent, prefix=f".{IMAGE_NAME}-"))
        try:
            run(["tar", "-C", str(staging), "--numeric-owner", "-xzf", str(self.tarball)], timeout=600)
            run(["chmod", "-R", "a+rX,go-w", str(staging)])
            staging.chmod(0o755)
            if self.image.exists():
                shutil.rmtree(self.image)
            os.replace(staging, self.image)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.stamp.write_text(digest + "\n")

    # --- run ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Nothing to run: the image is used by ``ch-run`` inside Slurm jobs."""

    def health(self) -> Health:
        if not shutil.which("ch-run"):
            return Health(False, "ch-run is not installed")
        if not (self.image / "usr" / "bin").is_dir():
            return Health(False, f"no image at {self.image}")
        if not self._stamp().startswith(TARBALL_NAME + " "):
            return Health(False, f"{self.image} is not unpacked from {TARBALL_NAME} (older recipe?)")
        try:
            as_root = probe(self.image)
            user = _unprivileged_user()
            as_user = probe(self.image, user=user)
        except Exception as exc:
            return Health(False, str(exc))
        return Health(True, f"ch-run {self.image}: python {as_root['python']} on {as_root['os']}; "
                            f"also as {user} (uid {as_user['uid']})")
