"""Notebooks in S3: the hub's spawn hooks that point each single-user server at its user's own bucket.

Before a server starts, the pre-spawn hook

1. asks the HEROES service for keys of *this server* (``POST /organization/data/server-credentials`` with the
   hub's own token-only service ``hub-server-keys``): one Versity Gateway account per server, granted object
   actions on the user's personal bucket only. A start re-keys only that server, so a second server of the
   same user (or a restart) never invalidates the keys another running server holds. The keys reach the
   server through its environment (``HEROES_S3_*``), never argv;
2. copies the dashboards (``notebooks/*.ipynb``) into ``<bucket>/notebooks/`` with those same keys, so Voila
   and JupyterLab, whose contents now live in S3, still find them (overwritten at every spawn);
3. sets ``ServerApp.contents_manager_class`` to ``heroes_widgets.contents_s3.HeroesS3ContentsManager``.

After a server stops, the post-stop hook revokes that server's account.

The hub holds no S3 admin keys: the service is the only component that does (issue 15). If the service or
the S3 server cannot be reached the spawn fails with a message saying so: a server that silently saved
notebooks somewhere else would lose them from the user's point of view.

Remaining risk (documented in docs): the keys sit in the server's environment, readable by the user's own
processes (which may use them: it is their bucket) and by root; they last until that server stops.
"""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CONTENTS_CLASS = "heroes_widgets.contents_s3.HeroesS3ContentsManager"
_ARG = "--ServerApp.contents_manager_class="
#: the hub's token-only service that alone may ask the service for servers' keys (ServiceSettings.server_keys_service)
SERVICE_NAME = "hub-server-keys"
ROUTE = "/organization/data/server-credentials"


class KeysUnavailable(RuntimeError):
    """The service did not hand out the server's keys; ``detail`` is meant for the user's spawn page."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def _call(method: str, url: str, token: str, body: dict | None = None, timeout: float = 30.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", "")
        except ValueError:
            detail = ""
        raise KeysUnavailable(f"the HEROES service answered {exc.code}: {detail or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise KeysUnavailable(f"the HEROES service is unreachable ({getattr(exc, 'reason', exc)})") from None


def _upload_dashboards(dashboards_dir: str, creds: dict) -> None:
    """Copy the dashboards into the bucket with the server's own keys (they may write their bucket only)."""
    sources = sorted(Path(dashboards_dir).glob("*.ipynb")) if dashboards_dir else []
    if not sources:
        return
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=creds["endpoint_url"], region_name=creds["region"],
                          aws_access_key_id=creds["access_key_id"], aws_secret_access_key=creds["secret_access_key"],
                          config=Config(signature_version="s3v4", retries={"max_attempts": 3}))
    for source in sources:
        client.upload_file(str(source), creds["bucket"], f"notebooks/{source.name}")
    _upload_tutorials(client, creds["bucket"], Path(dashboards_dir) / "tutorials")


def _upload_tutorials(client, bucket: str, tutorials_dir: Path) -> None:
    """Copy the tutorials a user does not have yet: unlike the dashboards, a tutorial is the user's to run
    and edit, so a copy they already have is never overwritten."""
    from botocore.exceptions import ClientError

    for source in sorted(tutorials_dir.glob("*.ipynb")):
        key = f"notebooks/tutorials/{source.name}"
        try:
            client.head_object(Bucket=bucket, Key=key)
            continue
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
        client.upload_file(str(source), bucket, key)


def prepare(username: str, server: str, dashboards_dir: str, api_url: str, token: str) -> dict[str, str]:
    """Keys and bucket for one server of ``username`` (blocking; the hook runs it in a thread)."""
    creds = _call("POST", api_url.rstrip("/") + ROUTE, token, {"user": username, "server": server})
    try:
        _upload_dashboards(dashboards_dir, creds)
    except Exception as exc:  # noqa: BLE001 (botocore's errors name the S3 code; the keys never appear)
        raise KeysUnavailable(f"copying the dashboards into your bucket failed: {type(exc).__name__}") from None
    return {
        "HEROES_S3_ENDPOINT_URL": creds["endpoint_url"],
        "HEROES_S3_REGION": creds["region"],
        "HEROES_S3_BUCKET": creds["bucket"],
        "HEROES_S3_PREFIX": "notebooks",
        "HEROES_S3_ACCESS_KEY_ID": creds["access_key_id"],
        "HEROES_S3_SECRET_ACCESS_KEY": creds["secret_access_key"],
    }


def revoke(username: str, server: str, api_url: str, token: str) -> bool:
    query = urllib.parse.urlencode({"user": username, "server": server})
    return bool(_call("DELETE", f"{api_url.rstrip('/')}{ROUTE}?{query}", token).get("revoked"))


def make_hook(dashboards_dir: str, api_url: str, token: str):
    """The ``Spawner.pre_spawn_hook`` for a hub whose single-user servers keep notebooks in S3."""

    async def s3_notebooks(spawner):
        try:
            env = await asyncio.get_running_loop().run_in_executor(
                None, prepare, spawner.user.name, spawner.name or "", dashboards_dir, api_url, token)
        except KeysUnavailable as exc:  # the message reaches the user's spawn page
            spawner.log.error("S3 notebooks for %s: %s", spawner.user.name, exc.detail)
            raise RuntimeError(f"your notebooks live in object storage, which is not usable now: {exc.detail}. "
                               "Try starting the server again in a minute; if it keeps failing, tell your "
                               "administrator.") from None
        spawner.environment = {**spawner.environment, **env}
        spawner.args = [a for a in spawner.args if not a.startswith(_ARG)] + [_ARG + CONTENTS_CLASS]

    return s3_notebooks


def make_stop_hook(api_url: str, token: str):
    """The ``Spawner.post_stop_hook``: a stopped server's keys stop working (the user's others keep theirs)."""

    async def revoke_keys(spawner):
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, revoke, spawner.user.name, spawner.name or "", api_url, token)
        except KeysUnavailable as exc:  # the keys then live until the server's next start re-keys them
            spawner.log.warning("could not revoke the S3 keys of %s's server %r: %s",
                                spawner.user.name, spawner.name, exc.detail)

    return revoke_keys
