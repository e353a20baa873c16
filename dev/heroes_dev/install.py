"""Idempotent installers shared by the components: each skips what is present and says what it does."""
from __future__ import annotations

import contextlib
import os
import secrets
import pwd
import grp
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Sequence

from .output import say

_apt_updated = False


class InstallError(RuntimeError):
    """An install step failed; the message carries the command's own output."""


def run(argv: Sequence[str], *, env: dict | None = None, cwd: Path | None = None, check: bool = True,
        input: str | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a short command as an argument list (never through a shell) and capture its output."""
    merged = None if env is None else {**os.environ, **env}
    result = subprocess.run(list(argv), capture_output=True, text=True, env=merged, cwd=cwd, input=input,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise InstallError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result


def missing_debs(packages: Sequence[str]) -> list[str]:
    missing = []
    for name in packages:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
        if result.returncode != 0 or "install ok installed" not in result.stdout:
            missing.append(name)
    return missing


def ensure_debs(component: str, packages: Sequence[str]) -> None:
    """Install Debian packages that are not installed yet (``apt-get update`` once per process)."""
    global _apt_updated
    missing = missing_debs(packages)
    if not missing:
        say(component, f"Debian packages present: {' '.join(packages)}")
        return
    say(component, f"installing Debian packages: {' '.join(missing)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        run(["apt-get", "update"], env=env, timeout=900)
        _apt_updated = True
    with services_not_started_by_apt():
        run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env, timeout=1800)


POLICY_RC = Path("/usr/sbin/policy-rc.d")


@contextlib.contextmanager
def services_not_started_by_apt():
    """Keep package scripts from starting system daemons (MariaDB, munge, sshd) on our ports.

    The stack starts its own instances; a system MariaDB started by the package's postinst would hold
    port 3306 with a process we did not start and must not stop. Debian's ``policy-rc.d`` hook answers
    "101: not allowed" for the duration of the install; a policy file that was already there is kept.
    """
    if POLICY_RC.exists():
        yield
        return
    POLICY_RC.write_text("#!/bin/sh\n# written by heroes dev for the duration of an install\nexit 101\n")
    POLICY_RC.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC.unlink(missing_ok=True)


def ensure_group(component: str, name: str, gid: int | None = None) -> None:
    try:
        grp.getgrnam(name)
        return
    except KeyError:
        pass
    say(component, f"creating group {name}")
    run(["groupadd", *([] if gid is None else ["-g", str(gid)]), name])


def ensure_user(component: str, name: str, *, uid: int | None = None, home: Path | None = None,
                shell: str = "/bin/bash", system: bool = False) -> pwd.struct_passwd:
    """Create a Unix account if it does not exist (the demo users of the embedded "clusters")."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    say(component, f"creating Unix account {name}")
    argv = ["useradd", "--shell", shell, "--user-group"]
    if system:
        argv.append("--system")
    if uid is not None:
        argv += ["--uid", str(uid)]
    if home is not None:
        argv += ["--home-dir", str(home)]
    argv += ["--create-home", name]
    run(argv)
    return pwd.getpwnam(name)


def which(name: str) -> str | None:
    return shutil.which(name)


def write_secret_once(path: Path, value_factory: Callable[[], str] = lambda: secrets.token_urlsafe(32),
                      private_dir: bool = True) -> str:
    """Return the secret in ``path``, creating it with mode 0600 if missing; an existing one is never rewritten.

    O_EXCL with 0600 from the first byte: no moment at which another user could read it, and two processes
    never both write it. Rewriting would orphan what already holds the old value (Keycloak's database, the
    hub's encrypted auth_state, slurmdbd's MariaDB account). An empty file left by a crash is replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if private_dir:
        path.parent.chmod(0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        value = path.read_text().strip()
        if value:
            return value
        path.unlink()
        return write_secret_once(path, value_factory, private_dir)
    value = value_factory()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value
