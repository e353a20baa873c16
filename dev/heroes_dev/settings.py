"""Where the embedded stack lives and which ports it binds.

Every value can be overridden by a ``HEROES_*`` environment variable so that a second checkout (or CI
next to a developer's running demo) can move the whole stack without touching code.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env_path(name: str, default: Path) -> Path:
    return Path(os.environ.get(name, str(default))).resolve()


def shared_data_dir() -> Path:
    """The project's read-only reference data (traces, price catalogs) beside the checkout, as CI lays it.

    ``HEROES_SHARED_DIR`` points elsewhere; tests and benchmarks read from it and never write there.
    """
    return Path(os.environ.get("HEROES_SHARED_DIR", REPO_ROOT.parent / "shared")) / "data"


def others_can_traverse(path: Path) -> bool:
    """True when every folder from / down to ``path`` lets other users pass (o+x)."""
    for folder in [path, *path.parents]:
        try:
            if not folder.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def writable_by_others(path: Path) -> Path | None:
    """The first existing folder from ``path`` up to / that group or others may write, if any.

    sshd's StrictModes refuses authorized-keys files below such a folder (``/tmp`` included), and munge
    refuses sockets there: the stack's state must not live below one.
    """
    for folder in [path, *path.parents]:
        try:
            if folder.exists() and folder.stat().st_mode & 0o022:
                return folder
        except OSError:
            return folder
    return None


def suitable_state_parent(path: Path) -> bool:
    return others_can_traverse(path) and writable_by_others(path) is None


def default_state_dir(repo: Path = REPO_ROOT) -> Path:
    """``<repo>/.stack`` when it suits the stack, else a folder of its own in /var/lib.

    Slurm jobs and sshd sessions run as the demo users and read the stack's slurm.conf, munge socket and
    container image, so a checkout under a private folder (root's home) would lock them out; and one below
    a folder others may write (``/tmp``) would make sshd refuse every key.
    """
    if suitable_state_parent(repo):
        return repo / ".stack"
    digest = hashlib.sha256(str(repo).encode()).hexdigest()[:10]
    return Path("/var/lib/heroes-dev") / f"stack-{digest}"


def _env_port(name: str, default: int) -> int:
    return int(os.environ.get(f"HEROES_PORT_{name.upper()}", default))


@dataclass(frozen=True)
class Ports:
    """One place for every port the embedded stack binds (see DESIGN.md's table)."""

    keycloak: int = field(default_factory=lambda: _env_port("keycloak", 8080))
    keycloak_mgmt: int = field(default_factory=lambda: _env_port("keycloak_mgmt", 9080))
    s3: int = field(default_factory=lambda: _env_port("s3", 9000))
    postgres: int = field(default_factory=lambda: _env_port("postgres", 5432))
    mariadb: int = field(default_factory=lambda: _env_port("mariadb", 3306))
    slurmdbd: int = field(default_factory=lambda: _env_port("slurmdbd", 6819))
    alpha_ctld: int = field(default_factory=lambda: _env_port("alpha_ctld", 6817))
    alpha_slurmd: int = field(default_factory=lambda: _env_port("alpha_slurmd", 6830))  # n1; n2 is +1
    alpha_ssh: int = field(default_factory=lambda: _env_port("alpha_ssh", 2221))
    beta_ctld: int = field(default_factory=lambda: _env_port("beta_ctld", 6837))
    beta_slurmd: int = field(default_factory=lambda: _env_port("beta_slurmd", 6840))  # n1; n2 is +1
    beta_ssh: int = field(default_factory=lambda: _env_port("beta_ssh", 2222))
    hub: int = field(default_factory=lambda: _env_port("hub", 8000))
    proxy_api: int = field(default_factory=lambda: _env_port("proxy_api", 8001))
    hub_api: int = field(default_factory=lambda: _env_port("hub_api", 8081))
    heroes_service: int = field(default_factory=lambda: _env_port("heroes_service", 10101))


@dataclass(frozen=True)
class StackSettings:
    """Paths of the embedded stack.

    ``state`` holds what belongs to this checkout's stack (data, logs, pid records, generated config);
    ``cache`` holds downloads and built artefacts that are the same for every checkout on the machine
    (Keycloak's zip, the S3 server binary, the container image), so a second ``make demo`` is fast.
    """

    repo: Path = REPO_ROOT
    state: Path = field(default_factory=lambda: _env_path("HEROES_STATE_DIR", default_state_dir()))
    cache: Path = field(default_factory=lambda: _env_path("HEROES_CACHE_DIR", Path("/var/cache/heroes-dev")))
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def run(self) -> Path:
        return self.state / "run"

    def data(self, component: str) -> Path:
        """A component's persistent data directory (kept across ``down``/``up``)."""
        return self.state / "data" / component

    def etc(self, component: str) -> Path:
        """A component's generated configuration (rewritten at every start)."""
        return self.state / "etc" / component


def load() -> StackSettings:
    settings = StackSettings()
    for path in (settings.state, settings.logs, settings.run, settings.cache):
        path.mkdir(parents=True, exist_ok=True)
    # Unix accounts of the demo "clusters" must be able to traverse to their config and sockets.
    settings.state.chmod(0o755)
    if not others_can_traverse(settings.state):
        raise SystemExit(f"the stack's state folder {settings.state} is not reachable by other users (a parent "
                         "folder lacks o+x); the demo's Unix accounts need it: set HEROES_STATE_DIR elsewhere")
    loose = writable_by_others(settings.state)
    if loose is not None:
        raise SystemExit(f"the stack's state folder {settings.state} lies below {loose}, which others may write; "
                         "sshd would refuse the demo keys there: set HEROES_STATE_DIR elsewhere")
    return settings
