"""Single-user servers on the gateway host, each under its own unprivileged Unix account.

Hub user ``bob`` runs as the Unix account ``jh-bob`` (created on first spawn, home below the stack's
state dir). These accounts belong to the gateway host only; the accounts on the clusters are separate.
A server is never started as root: an account that resolves to uid 0 is refused.

Each spawn copies the dashboards from ``notebooks/`` into the user's home, so
``/user/<name>/voila/render/welcome.ipynb`` always shows the current version.
"""
from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from traitlets import Unicode, default

#: what ``useradd`` accepts on Debian and stays below its 32-character limit with the prefix
_UNIX_SAFE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,27}$")


class GatewayAccountError(RuntimeError):
    """The hub user cannot be mapped to a safe Unix account on the gateway."""


class HeroesLocalSpawner(LocalProcessSpawner):
    """LocalProcessSpawner that maps hub users to dedicated ``jh-<name>`` accounts created on demand."""

    unix_prefix = Unicode(
        "jh-",
        config=True,
        help="Prefix of the gateway-local Unix account of a hub user: hub user 'bob' runs as '<prefix>bob'.",
    )
    homes_root = Unicode(
        config=True,
        help="Directory under which each gateway account gets its home '<homes_root>/<hub name>'. "
             "Defaults to '<cwd>/homes' (the hub's data dir in the embedded stack).",
    )
    dashboards_dir = Unicode(
        "",
        config=True,
        help="Directory whose *.ipynb dashboards are copied into the user's home at every spawn "
             "(overwriting older copies), so Voila can render them at /user/<name>/voila/render/<file>. "
             "Empty: copy nothing.",
    )
    account_shell = Unicode(
        "/bin/bash",
        config=True,
        help="Login shell of newly created gateway accounts (JupyterLab terminals start it).",
    )

    @default("homes_root")
    def _homes_root_default(self) -> str:
        return str(Path.cwd() / "homes")

    # --- account mapping ------------------------------------------------------------------------------
    @property
    def unix_name(self) -> str:
        """The Unix account of this spawner's hub user (validated, never root)."""
        name = self.user.name
        if not _UNIX_SAFE.match(name):
            raise GatewayAccountError(
                f"hub user name {name!r} cannot be mapped to a gateway Unix account "
                f"(allowed: lower-case letters, digits, '.', '_', '-'; at most 28 characters)")
        return f"{self.unix_prefix}{name}"

    @property
    def home_dir(self) -> Path:
        return Path(self.homes_root) / self.user.name

    def ensure_account(self) -> pwd.struct_passwd:
        """Create the gateway account and its private home if missing; refuse anything that maps to root."""
        name = self.unix_name
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            Path(self.homes_root).mkdir(parents=True, exist_ok=True)
            self.log.info("Creating gateway account %s for hub user %s", name, self.user.name)
            subprocess.run(
                ["useradd", "--create-home", "--home-dir", str(self.home_dir), "--shell", self.account_shell,
                 "--user-group", "--comment", f"HEROES gateway user {self.user.name}", name],
                check=True, capture_output=True, text=True,
            )
            entry = pwd.getpwnam(name)
        if entry.pw_uid == 0 or entry.pw_gid == 0:
            raise GatewayAccountError(f"refusing to run {self.user.name}'s server as {name}: it maps to root")
        home = Path(entry.pw_dir)
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        home.chmod(0o700)
        return entry

    def stage_dashboards(self, entry: pwd.struct_passwd) -> list[str]:
        """Copy the dashboards into the user's home, owned by the user (so Voila's kernel can read them)."""
        if not self.dashboards_dir:
            return []
        staged = []
        for source in sorted(Path(self.dashboards_dir).glob("*.ipynb")):
            # write a fresh file (O_EXCL) and rename it over the old copy: a link the user planted
            # in their home is replaced, never followed by this root process
            fd, tmp = tempfile.mkstemp(dir=entry.pw_dir, prefix=".heroes-", suffix=".ipynb")
            try:
                with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                    shutil.copyfileobj(src, out)
                os.chown(tmp, entry.pw_uid, entry.pw_gid)
                os.chmod(tmp, 0o644)
                os.replace(tmp, Path(entry.pw_dir) / source.name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            staged.append(source.name)
        return staged

    # --- LocalProcessSpawner hooks ----------------------------------------------------------------------
    def make_preexec_fn(self, name):
        return set_user_setuid(self.unix_name)

    def user_env(self, env):
        entry = pwd.getpwnam(self.unix_name)
        env["USER"] = entry.pw_name
        env["HOME"] = entry.pw_dir
        env["SHELL"] = entry.pw_shell or self.account_shell
        return env

    async def start(self):
        loop = asyncio.get_running_loop()
        entry = await loop.run_in_executor(None, self.ensure_account)
        staged = await loop.run_in_executor(None, self.stage_dashboards, entry)
        if staged:
            self.log.info("Staged dashboards for %s: %s", self.user.name, ", ".join(staged))
        return await super().start()

    async def move_certs(self, paths):  # internal SSL is off in the embedded stack
        raise NotImplementedError("internal_ssl is not supported by HeroesLocalSpawner")
