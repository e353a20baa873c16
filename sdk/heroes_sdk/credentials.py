"""Where the SDK's credential comes from, and the one file ``heroes login`` keeps it in.

First match wins:

1. what the caller passes (``token=`` a JupyterHub token, ``bearer=`` a Keycloak access token, or
   ``username=`` + ``password=`` for a Keycloak login through the service);
2. ``JUPYTERHUB_API_TOKEN`` (inside a single-user server: the hub gives every server a token that reaches
   the ``heroes`` service), with ``HEROES_API_URL`` the hub sets beside it;
3. ``HEROES_ACCESS_TOKEN`` (a Keycloak access token, e.g. from a CI secret) with ``HEROES_API_URL``;
4. the credentials file written by ``heroes login``: ``$HEROES_CONFIG_DIR/credentials.json``, else
   ``~/.config/heroes/credentials.json``.

The file holds the API URL, the user name and the Keycloak tokens, never the password. It is created with
mode 0600 in a 0700 folder (written to a temporary file first, then renamed, so a crash never leaves half a
file), and refreshed tokens are written back, so a login lasts as long as Keycloak's session does.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import AuthenticationError, HeroesError
from .session import Credential, Session, api_url

FILE_NAME = "credentials.json"


def config_dir(env: dict | None = None) -> Path:
    """The folder of the credentials file: ``HEROES_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/heroes``, else
    ``~/.config/heroes``."""
    env = os.environ if env is None else env
    explicit = env.get("HEROES_CONFIG_DIR", "").strip()
    if explicit:
        return Path(explicit)
    base = env.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
    return Path(base) / "heroes"


def credentials_path(env: dict | None = None) -> Path:
    """Where ``heroes login`` keeps your tokens (mode 0600)."""
    return config_dir(env) / FILE_NAME


def save(record: dict[str, Any], path: Path | None = None) -> Path:
    """Write the credentials file (0600 in a 0700 folder), atomically."""
    path = path or credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(record, out, indent=2)
        os.chmod(temp, 0o600)  # the umask may have narrowed it; never wider than 0600
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def load(path: Path | None = None) -> dict[str, Any] | None:
    """The stored record, or None when there is none. A file others may read is refused, not used."""
    path = path or credentials_path()
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return None
    if mode & 0o077:
        raise AuthenticationError(f"{path} is readable by others (mode {mode:04o}); run 'chmod 600 {path}' "
                                  "or log in again")
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise AuthenticationError(f"{path} is not valid JSON; log in again with 'heroes login'") from None


def forget(path: Path | None = None) -> bool:
    """Delete the credentials file (``heroes logout``); whether there was one."""
    path = path or credentials_path()
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def token_record(url: str, username: str, answer: dict, now: float | None = None) -> dict[str, Any]:
    """The file's record for the service's login/refresh answer (times made absolute)."""
    now = time.time() if now is None else now
    return {"url": api_url(url), "username": username, "access_token": answer["access_token"],
            "refresh_token": answer.get("refresh_token", ""),
            "expires_at": now + float(answer.get("expires_in") or 0),
            "refresh_expires_at": now + float(answer.get("refresh_expires_in") or 0)}


def keycloak_login(url: str, username: str, password: str, transport=None) -> dict[str, Any]:
    """Log in through the service (Keycloak's password grant); the record to keep. 401 for a bad password."""
    session = Session(url, transport=transport)
    answer = session.call("POST", "/organization/auth/login", json={"username": username, "password": password},
                          retry=False)
    return token_record(url, username, answer)


def refreshing_credential(record: dict[str, Any], transport=None, path: Path | None = None) -> Credential:
    """A bearer credential that renews itself with the record's refresh token (and, when ``path`` is
    given, writes the renewed tokens back to the file)."""

    def renew() -> tuple[str, float]:
        if not record.get("refresh_token") or (record.get("refresh_expires_at") or 0) < time.time():
            raise AuthenticationError("your HEROES login expired; log in again (heroes login)", status=401)
        plain = Session(record["url"], transport=transport)
        answer = plain.call("GET", "/organization/auth/refresh_token",
                            headers={"X-Refresh-Token": record["refresh_token"]})
        record.update(token_record(record["url"], record.get("username", ""), answer))
        if path is not None:
            save(record, path)
        return record["access_token"], record["expires_at"]

    return Credential("Bearer", record["access_token"], float(record.get("expires_at") or 0), renew)


def resolve(url: str | None = None, *, token: str | None = None, bearer: str | None = None,
            username: str | None = None, password: str | None = None, env: dict | None = None,
            transport=None) -> tuple[str, Credential]:
    """(API base URL, credential) by the order of the module docstring; AuthenticationError if none."""
    env = os.environ if env is None else env
    env_url = env.get("HEROES_API_URL", "").strip()
    if token or bearer:
        return _url(url or env_url), Credential("token" if token else "Bearer", token or bearer)
    if username:
        if password is None:
            raise AuthenticationError("a password is needed with username=")
        record = keycloak_login(_url(url or env_url), username, password, transport)
        return record["url"], refreshing_credential(record, transport)
    hub_token = env.get("JUPYTERHUB_API_TOKEN", "").strip()
    if hub_token and (url or env_url):
        return _url(url or env_url), Credential("token", hub_token)
    access = env.get("HEROES_ACCESS_TOKEN", "").strip()
    if access:
        return _url(url or env_url), Credential("Bearer", access)
    path = credentials_path(env)
    record = load(path)
    if record is not None and (not url or api_url(url) == record.get("url")):
        return record["url"], refreshing_credential(record, transport, path)
    raise AuthenticationError("no HEROES credential: run 'heroes login', pass token=/bearer=/username=, or use "
                              "the SDK inside a JupyterHub server of the gateway", status=401)


def _url(url: str) -> str:
    """The API URL, or an error that says where it could come from."""
    if not url:
        raise HeroesError("no HEROES API address: pass url= or set HEROES_API_URL (the hub sets it in servers)")
    return api_url(url)
