"""What a compute node needs to run a remote desktop, and the noVNC files the gateway serves.

The embedded clusters' "nodes" are slurmd processes on this machine, so installing here installs on every
node and on the login nodes at once. A real site installs the same packages on its visualization nodes:

* ``tigervnc-standalone-server``: ``Xvnc``, the X server + VNC server a desktop job starts. It listens on a
  per-session Unix socket (``-rfbunixpath``, mode 0600), never on a TCP port other node users could reach;
* ``xauth``: the X display is protected by a one-time MIT cookie, so other users of the node cannot type
  into someone's desktop through the X socket either;
* ``openbox`` + ``xterm`` + ``xfonts-base``: a light window manager and a terminal (fonts for xterm);
* ``socat``: the login node carries the VNC bytes between the SSH channel and the node's socket
  (``srun --overlap ... socat STDIO UNIX-CONNECT:<socket>``);
* ``novnc``: the static noVNC client (``/usr/share/novnc``) the service hands to browsers.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..install import ensure_debs
from ..output import say
from .base import Component, Health

DESKTOP_DEBS = ("tigervnc-standalone-server", "xauth", "openbox", "xterm", "xfonts-base", "socat", "novnc")
#: binaries a desktop job or the bridge runs (the health check looks for each)
NODE_BINARIES = ("Xvnc", "xauth", "openbox", "xterm", "socat")
NOVNC_DIR = Path("/usr/share/novnc")
#: where X servers put their sockets: root's, sticky and world-writable (systemd-tmpfiles makes it so on a real
#: node); created by the first user's Xvnc it would be that user's, who could then delete others' sockets
X11_SOCKET_DIR = Path("/tmp/.X11-unix")


class DesktopTools(Component):
    """Build-only component: the desktop packages are installed (no process of its own)."""

    name = "desktop"
    has_processes = False
    start_timeout = 10.0

    def ensure(self) -> None:
        ensure_debs(self.name, list(DESKTOP_DEBS))
        X11_SOCKET_DIR.mkdir(exist_ok=True)
        info = X11_SOCKET_DIR.stat()
        if info.st_uid != 0 or info.st_mode & 0o7777 != 0o1777:
            say(self.name, f"{X11_SOCKET_DIR}: root-owned, mode 1777")
            os.chown(X11_SOCKET_DIR, 0, 0)
            X11_SOCKET_DIR.chmod(0o1777)

    def health(self) -> Health:
        missing = [b for b in NODE_BINARIES if shutil.which(b) is None]
        if missing:
            return Health(False, f"missing on the nodes: {', '.join(missing)}")
        if not (NOVNC_DIR / "core" / "rfb.js").is_file():
            return Health(False, f"noVNC is not in {NOVNC_DIR}")
        return Health(True, "Xvnc, openbox, xterm, socat on the nodes; noVNC in " + str(NOVNC_DIR))
