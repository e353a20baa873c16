"""Notebooks in S3: the hub's pre-spawn hook that points a user's server at their own bucket.

Before a single-user server starts, the hook

1. gets keys for the user's gateway account from the data domain (Versity Gateway IAM account of role
   ``user``, granted object actions on the user's personal bucket only by a root-owned bucket policy; each
   spawn rotates the secret), and passes them in the server's environment (``HEROES_S3_*``), never argv;
2. copies the dashboards (``notebooks/*.ipynb``) into ``<bucket>/notebooks/`` so Voila and JupyterLab,
   whose contents now live in S3, still find them (overwritten at every spawn, like the home copies);
3. sets ``ServerApp.contents_manager_class`` to ``heroes_widgets.s3notebooks.HeroesS3ContentsManager``.

If the S3 server cannot be reached the spawn fails with a message saying so: a server that silently
saved notebooks somewhere else would lose them from the user's point of view.

Remaining risk (documented in docs): the keys sit in the server's environment, readable by the user's own
processes (which may use them: it is their bucket) and by root; they do not expire until the next spawn.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

CONTENTS_CLASS = "heroes_widgets.s3notebooks.HeroesS3ContentsManager"
_ARG = "--ServerApp.contents_manager_class="


def _service_settings(state_dir: str, s3_endpoint: str):
    from heroes_service.settings import ServiceSettings

    kwargs = {"state_dir": state_dir} if state_dir else {}
    if s3_endpoint:
        kwargs["s3_endpoint"] = s3_endpoint
    return ServiceSettings(**kwargs)


class _HubUser:
    """The principal shape the data domain needs (the hub does not know the organization for sure)."""

    def __init__(self, name: str):
        self.username = name
        self.organization = None
        self.groups: list[str] = []
        self.is_org_admin = False


def prepare(username: str, dashboards_dir: str, state_dir: str, s3_endpoint: str) -> dict[str, str]:
    """Keys and bucket for ``username``'s server (blocking; the hook runs it in a thread)."""
    from heroes_service.data import build

    data = build(_service_settings(state_dir, s3_endpoint))
    creds = data.user_credentials(_HubUser(username), rotate=True)  # a new server, fresh keys
    if dashboards_dir:
        for source in sorted(Path(dashboards_dir).glob("*.ipynb")):
            data.storage.client.upload_file(str(source), creds["bucket"], f"notebooks/{source.name}")
    return {
        "HEROES_S3_ENDPOINT_URL": creds["endpoint_url"],
        "HEROES_S3_REGION": creds["region"],
        "HEROES_S3_BUCKET": creds["bucket"],
        "HEROES_S3_PREFIX": "notebooks",
        "HEROES_S3_ACCESS_KEY_ID": creds["access_key_id"],
        "HEROES_S3_SECRET_ACCESS_KEY": creds["secret_access_key"],
    }


def make_hook(dashboards_dir: str, state_dir: str, s3_endpoint: str = ""):
    """The ``Spawner.pre_spawn_hook`` for a hub whose single-user servers keep notebooks in S3."""

    async def s3_notebooks(spawner):
        try:
            env = await asyncio.get_running_loop().run_in_executor(
                None, prepare, spawner.user.name, dashboards_dir, state_dir, s3_endpoint)
        except Exception as exc:  # noqa: BLE001 (the message reaches the user's spawn page)
            spawner.log.error("S3 notebooks for %s: %s", spawner.user.name, type(exc).__name__)
            detail = getattr(exc, "detail", "") or type(exc).__name__
            raise RuntimeError(f"your notebooks live in object storage, which is not usable now: {detail}") from None
        spawner.environment = {**spawner.environment, **env}
        spawner.args = [a for a in spawner.args if not a.startswith(_ARG)] + [_ARG + CONTENTS_CLASS]

    return s3_notebooks
