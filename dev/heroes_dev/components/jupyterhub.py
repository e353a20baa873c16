"""JupyterHub 6 for the embedded stack: the gateway's front door.

``jupyterhub -f hub_config/jupyterhub_config.py`` runs in the foreground; the hub itself starts
configurable-http-proxy (from npm, installed into the machine-wide cache) and the hub-managed ``heroes``
service, so all three are children of the one recorded pid and ``down`` ends them together.

The stack's values (ports, Keycloak URLs, the OAuth client secret, the auth-state crypt key) reach the
hub through its environment only: the secrets are read from 0600 files in the state dir and are never
written to the command line (which the process log records), the config files or git.

Single-user servers run as per-user ``jh-<name>`` accounts (extensions/heroes_spawner/local.py) from a
separate venv in the machine-wide cache built from Debian's python3: the stack's own venv links to an
interpreter under /root, which those accounts cannot execute. Layout of ``<state>/data/jupyterhub``:
``hub/`` (0700: sqlite, cookie secret, crypt key, stack-admin token) and ``homes/`` (0711: users' homes).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from heroes_service.workflows.config import STAGED_COLLECTOR_COMMAND

from ..install import InstallError, run, which, write_secret_once
from ..output import say
from .base import Component, Health

#: the single-user servers' environment: built from Debian's python3 (not the stack's venv, whose interpreter
#: lives under /root where the gateway accounts cannot reach it), pinned to the hub's versions
#: repo folders that users' kernels import, published read-only to the gateway accounts at every start
#: a nested folder (energy/heroes_energy) is published under its last name (heroes_energy)
USER_SIDE_PACKAGES = ("heroes_widgets", "energy/heroes_energy", "sdk/heroes_sdk")

SINGLEUSER_REQUIREMENTS = (
    "jupyterhub==6.1.1",
    "jupyterlab==4.6.6",
    "voila==0.5.13",
    "ipywidgets==8.1.9",
    "ipykernel",
    "s3contents==0.11.2",  # notebooks in the user's S3 bucket (hub_config/heroes_data.py)
    "plotly==7.1.0",  # the Energy app's figures (heroes_energy.plots), pinned to the stack's
    "anywidget",  # plotly's FigureWidget is an anywidget
    "tqdm==4.70.1",  # heroes_sdk's progress bars (a widget in notebooks)
    "pandas==3.1.1",  # heroes_sdk reads outputs and decisions into DataFrames
    "ipydatagrid==1.4.0",  # every app's tables (heroes_widgets/grid.py): sort, filter, resize
    "jupyter-server-proxy==4.6.0",  # the JupyterLab launcher's cards for the apps (heroes_widgets/launcher.py)
    # the launcher's "Desktop": TigerVNC on a 0600 Unix socket in the server's own job, noVNC through the
    # server's authenticated proxy (needs jupyter-server-proxy >= 4.1.1, CVE-2024-28179; raw_socket_proxy)
    "jupyter-remote-desktop-proxy==3.0.1",
)
SINGLEUSER_PYTHON = "/usr/bin/python3"
CHP_PACKAGE = "configurable-http-proxy"
CHP_VERSION = "5.3.0"
REALM = "heroes"
#: the file the hub reads its auth-state encryption key from (via JUPYTERHUB_CRYPT_KEY)
CRYPT_KEY_FILE = "crypt-key"
#: token of the token-only service ``stack-admin`` (hub admin API for the stack's tooling and tests)
ADMIN_TOKEN_FILE = "stack-admin-token"


def hub_url(settings) -> str:
    return f"http://{settings.host}:{settings.ports.hub}"


def admin_token(settings) -> str:
    """Token of the hub's ``stack-admin`` service: may manage users, servers and groups (tests, tooling)."""
    path = settings.data("jupyterhub") / "hub" / ADMIN_TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist yet; start the hub first: heroes dev up jupyterhub") from None


class JupyterHub(Component):
    name = "jupyterhub"
    depends = ("keycloak", "s3")  # the pre-spawn hook gives each user S3 keys
    #: a cold hub creates its database and waits for the proxy and the managed service
    start_timeout = 90.0

    # paths -------------------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """The component's data: ``hub/`` (private) and ``homes/`` (the gateway users' homes)."""
        return self.settings.data("jupyterhub")

    @property
    def hub_dir(self) -> Path:
        """The hub's cwd, mode 0700: sqlite database, cookie secret, crypt key, admin token, proxy pid."""
        return self.data_dir / "hub"

    @property
    def homes_dir(self) -> Path:
        return self.data_dir / "homes"

    @property
    def chp_prefix(self) -> Path:
        return self.settings.cache / "npm" / f"chp-{CHP_VERSION}"

    @property
    def chp_bin(self) -> Path:
        return self.chp_prefix / "node_modules" / ".bin"

    @property
    def singleuser_env(self) -> Path:
        """The single-user venv in the machine-wide cache, named by a digest of its requirements."""
        digest = hashlib.sha256("\n".join(SINGLEUSER_REQUIREMENTS).encode()).hexdigest()[:12]
        return self.settings.cache / "singleuser" / f"venv-{digest}"

    @property
    def config_file(self) -> Path:
        return self.settings.repo / "hub_config" / "jupyterhub_config.py"

    # contract ----------------------------------------------------------------------------------------
    def ports(self) -> dict[str, int]:
        p = self.settings.ports
        return {"hub": p.hub, "hub_api": p.hub_api, "proxy_api": p.proxy_api, "heroes_service": p.heroes_service}

    def ensure(self) -> None:
        self._ensure_chp()
        self._ensure_singleuser_env()
        self._configure_singleuser_env()
        # 0711: gateway users (jh-*) traverse to their homes but cannot list them; hub/ is root's alone
        for path, mode in ((self.data_dir, 0o711), (self.hub_dir, 0o700), (self.homes_dir, 0o711)):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
        write_secret_once(self.hub_dir / CRYPT_KEY_FILE, lambda: secrets.token_hex(32))
        write_secret_once(self.hub_dir / ADMIN_TOKEN_FILE, lambda: secrets.token_hex(32))

    @property
    def user_pythonpath(self) -> Path:
        return self.data_dir / "pylib"

    def _publish_user_packages(self) -> None:
        """Copy the packages users' kernels import (heroes_widgets) where the gateway accounts can read them.

        A copy, not a path into the checkout: the checkout may sit under a folder the gateway accounts cannot
        enter (root's home), and the venv in the machine-wide cache must not point at one checkout.
        """
        target = self.user_pythonpath
        staging = target.with_name("pylib.new")
        shutil.rmtree(staging, ignore_errors=True)
        for package in USER_SIDE_PACKAGES:
            shutil.copytree(self.settings.repo / package, staging / Path(package).name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)

    def start(self) -> None:
        self._publish_user_packages()
        argv = [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(self.config_file)]
        self.spawn("jupyterhub", argv, env=self._env(), cwd=self.hub_dir)

    def health(self) -> Health:
        base = hub_url(self.settings)
        hub = _get_status(f"{base}/hub/health")
        if hub != 200:
            return Health(False, f"{base}/hub/health answered {hub}")
        service = _get_status(f"{base}/services/heroes/api/v1/health")
        if service != 200:
            return Health(False, f"heroes service health through the proxy answered {service}")
        return Health(True, f"hub {base}/hub/ and service {base}/services/heroes/ answer")

    # helpers -----------------------------------------------------------------------------------------
    def _ensure_chp(self) -> None:
        if (self.chp_bin / CHP_PACKAGE).exists():
            say(self.name, f"{CHP_PACKAGE} {CHP_VERSION} present in {self.chp_prefix}")
            return
        if not which("npm"):
            raise InstallError("npm is not installed; it is needed for configurable-http-proxy (apt-get install npm)")
        say(self.name, f"installing {CHP_PACKAGE}@{CHP_VERSION} into {self.chp_prefix} (npm)")
        self.chp_prefix.mkdir(parents=True, exist_ok=True)
        run(["npm", "install", "--prefix", str(self.chp_prefix), "--no-audit", "--no-fund",
             f"{CHP_PACKAGE}@{CHP_VERSION}"], timeout=900)

    def _ensure_singleuser_env(self) -> None:
        """Build the venv the gateway accounts run JupyterLab + Voila from (readable by everyone)."""
        venv = self.singleuser_env
        marker = venv / ".heroes-complete"
        if marker.exists():
            say(self.name, f"single-user environment present in {venv}")
            return
        if venv.exists():  # a half-built venv from an interrupted install: start over
            shutil.rmtree(venv)
        say(self.name, f"building the single-user environment in {venv} ({', '.join(SINGLEUSER_REQUIREMENTS)})")
        venv.parent.mkdir(parents=True, exist_ok=True)
        run([SINGLEUSER_PYTHON, "-m", "venv", str(venv)], timeout=300)
        run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
             *SINGLEUSER_REQUIREMENTS], timeout=1200)
        marker.write_text("\n".join(SINGLEUSER_REQUIREMENTS) + "\n")

    def _configure_singleuser_env(self) -> None:
        """The venv's own Jupyter config (rewritten at every ensure): launcher cards for the gateway's apps
        (heroes_widgets/launcher.py), the session the launcher's Desktop starts (openbox and a terminal, in
        ``bin/``: the hub points JUPYTER_REMOTE_DESKTOP_PROXY_XSTARTUP at it), and no "Render with Voila"
        preview button: Voila renders the dashboards folder, not the S3 files JupyterLab shows, so its
        preview of those was a broken page."""
        from heroes_widgets.launcher import (  # late: the widgets package is user-side
            DESKTOP_SESSION, desktop_session_script, server_proxy_config)

        etc = self.singleuser_env / "etc" / "jupyter"
        (etc / "labconfig").mkdir(parents=True, exist_ok=True)
        python = str(self.singleuser_env / "bin" / "python")
        # jupyter_server_config.json, not a file in jupyter_server_config.d/: that folder is read for
        # extension switches only, so the launcher's servers went unseen there
        server_config, page_config = etc / "jupyter_server_config.json", etc / "labconfig" / "page_config.json"
        server_config.write_text(json.dumps(server_proxy_config(python), indent=1) + "\n")
        page_config.write_text(json.dumps(
            {"disabledExtensions": {"@voila-dashboards/jupyterlab-preview": True}}, indent=1) + "\n")
        for path in (server_config, page_config):
            path.chmod(0o644)
        session = self.singleuser_env / "bin" / DESKTOP_SESSION
        session.write_text(desktop_session_script())
        session.chmod(0o755)
        (etc / "jupyter_server_config.d" / "heroes-apps.json").unlink(missing_ok=True)  # where it was first put

    def _env(self) -> dict[str, str]:
        """The hub's environment: everything the config reads from the stack, secrets from 0600 files."""
        from . import keycloak, s3  # imported late: sibling components

        s = self.settings
        venv_bin = str(Path(sys.executable).parent)
        path = os.pathsep.join([str(self.chp_bin), venv_bin, os.environ.get("PATH", "/usr/bin:/bin")])
        return self.base_env(
            PATH=path,
            HEROES_HUB_PUBLIC_URL=hub_url(s),
            HEROES_HUB_IP=s.host,
            HEROES_HUB_PORT=str(s.ports.hub),
            HEROES_HUB_API_PORT=str(s.ports.hub_api),
            HEROES_PROXY_API_PORT=str(s.ports.proxy_api),
            HEROES_SERVICE_PORT=str(s.ports.heroes_service),
            HEROES_HUB_DATA_DIR=str(self.hub_dir),
            HEROES_HUB_HOMES_DIR=str(self.homes_dir),
            HEROES_SINGLEUSER_ENV=str(self.singleuser_env),
            HEROES_SINGLEUSER_PYTHONPATH=str(self.user_pythonpath),
            HEROES_STATE_DIR=str(s.state),
            HEROES_KEYCLOAK_URL=keycloak.base_url(s),
            HEROES_KEYCLOAK_REALM=REALM,
            HEROES_OAUTH_CLIENT_ID="jupyterhub",
            HEROES_OAUTH_CLIENT_SECRET=keycloak.client_secret(s),
            JUPYTERHUB_CRYPT_KEY=(self.hub_dir / CRYPT_KEY_FILE).read_text().strip(),
            HEROES_HUB_ADMIN_TOKEN=admin_token(s),
            HEROES_S3_ENDPOINT=s3.s3_endpoint(s),
            # the service's energy hook: steps with energy: true run under the EAR-lite collector, which the
            # engine stages into the instance dir (python3 is in the clusters' container image and on the host)
            HEROES_SERVICE_WORKFLOWS_ENERGY_COMMAND=json.dumps(list(STAGED_COLLECTOR_COMMAND)),
        )


def _get_status(url: str, timeout: float = 3.0) -> int | str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"no answer ({exc})"


__all__ = ["JupyterHub", "admin_token", "hub_url"]
