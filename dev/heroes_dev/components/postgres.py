"""PostgreSQL for the embedded stack: the HEROES service's production database, used by its tests.

Debian's ``postgresql`` package provides the binaries only; the stack runs its own cluster (never the
package's ``main`` cluster): data in ``<state>/data/postgres/pgdata`` (owned by the ``postgres`` account,
0700), its socket in ``<state>/data/postgres/socket``, ``postgres -D`` in the foreground as ``postgres``
on 127.0.0.1 (port ``HEROES_PORT_POSTGRES``, default 5432).

``configure`` creates the role ``heroes`` (LOGIN, CREATEDB and pg_signal_backend so tests can make and drop
throwaway databases) and the database ``heroes``. The role's password is generated at first start into ``<state>/etc/postgres/password``
(0600) and reaches PostgreSQL through psql's standard input, never through argv or a log.

Other code imports ``database_url`` (SQLAlchemy URL, psycopg 3 driver) and ``password`` from here.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
from pathlib import Path

from ..install import InstallError, ensure_debs, run
from ..output import say
from ..settings import StackSettings
from .base import Component, Health
from .keycloak import ensure_secret_file

ROLE = "heroes"
DATABASE = "heroes"
OS_USER = "postgres"
PASSWORD_FILE = "password"


def port(settings: StackSettings) -> int:
    """The port (``settings.ports.postgres``, moved with ``HEROES_PORT_POSTGRES``)."""
    return settings.ports.postgres


def password(settings: StackSettings) -> str:
    path = settings.etc("postgres") / PASSWORD_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist yet; start PostgreSQL first: heroes dev up postgres") from None


def database_url(settings: StackSettings, database: str = DATABASE) -> str:
    """SQLAlchemy URL of a database of the embedded PostgreSQL as the ``heroes`` role."""
    return f"postgresql+psycopg://{ROLE}:{password(settings)}@{settings.host}:{port(settings)}/{database}"


def bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with a ``postgres`` binary."""
    found = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    return found[0] if found else None


class PostgreSQL(Component):
    name = "postgres"
    start_timeout = 60.0

    @property
    def root(self) -> Path:
        return self.settings.data("postgres")

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def bin(self) -> Path:
        found = bin_dir()
        if found is None:
            raise InstallError("no PostgreSQL binaries under /usr/lib/postgresql (Debian package postgresql)")
        return found

    def ports(self) -> dict[str, int]:
        return {"postgres": port(self.settings)}

    def ensure(self) -> None:
        ensure_debs(self.name, ["postgresql"])
        account = pwd.getpwnam(OS_USER)
        for folder in (self.root, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
        os.chown(self.socket_dir, account.pw_uid, account.pw_gid)
        self.socket_dir.chmod(0o700)
        ensure_secret_file(self.settings.etc("postgres") / PASSWORD_FILE)
        if (self.pgdata / "PG_VERSION").exists():
            say(self.name, f"cluster present in {self.pgdata}")
            return
        if self.pgdata.exists():  # an interrupted initdb: start over
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(mode=0o700)
        os.chown(self.pgdata, account.pw_uid, account.pw_gid)
        say(self.name, f"initdb {self.pgdata} (PostgreSQL {self.bin.parent.name})")
        run(["runuser", "-u", OS_USER, "--", str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", OS_USER,
             "-E", "UTF8", "--locale=C", "--auth-local=peer", "--auth-host=scram-sha-256"], cwd=Path("/"),
            timeout=300)

    def start(self) -> None:
        argv = [str(self.bin / "postgres"), "-D", str(self.pgdata), "-h", self.settings.host, "-p", str(port(self.settings)),
                "-k", str(self.socket_dir), "-c", "shared_buffers=32MB", "-c", "max_connections=100",
                "-c", "logging_collector=off"]
        self.spawn("postgres", argv, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, cwd=self.pgdata, user=OS_USER)

    def health(self) -> Health:
        try:
            with socket.create_connection((self.settings.host, port(self.settings)), timeout=2):
                pass
        except OSError:
            return Health(False, f"nothing listens on {self.settings.host}:{port(self.settings)}")
        result = run([str(self.bin / "pg_isready"), "-h", self.settings.host, "-p", str(port(self.settings)), "-d", "postgres",
                      "-U", OS_USER], check=False, timeout=10)
        if result.returncode != 0:
            return Health(False, f"pg_isready: {result.stdout.strip() or result.returncode}")
        return Health(True, f"PostgreSQL {self.bin.parent.name} on {self.settings.host}:{port(self.settings)}, database {DATABASE}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the ``postgres`` superuser over the private socket (peer auth); SQL goes through stdin."""
        result = run(["runuser", "-u", OS_USER, "--", str(self.bin / "psql"), "-h", str(self.socket_dir),
                      "-p", str(port(self.settings)), "-d", database, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-t", "-A"],
                     input=sql, cwd=Path("/"), timeout=60)
        return result.stdout.strip()

    def configure(self) -> None:
        secret = password(self.settings)
        if not secret.replace("-", "").replace("_", "").isalnum():  # token_urlsafe: safe inside a SQL literal
            raise InstallError("the PostgreSQL password file holds unexpected characters; remove it to regenerate")
        exists = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}';")
        verb = "ALTER" if exists == "1" else "CREATE"
        self.psql(f"{verb} ROLE {ROLE} WITH LOGIN CREATEDB PASSWORD '{secret}';")
        # DROP DATABASE ... WITH (FORCE) of a throwaway database must also end an autovacuum worker busy
        # on it (after a bulk load); those run under no role, so only pg_signal_backend may end them
        self.psql(f"GRANT pg_signal_backend TO {ROLE};")
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';") != "1":
            self.psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE};")
            say(self.name, f"database {DATABASE} created (owner {ROLE})")


__all__ = ["PostgreSQL", "database_url", "password", "port", "ROLE", "DATABASE"]
