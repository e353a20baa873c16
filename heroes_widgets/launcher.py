"""The gateway's apps as cards in JupyterLab's launcher (jupyter-server-proxy launcher entries).

jupyter-server-proxy shows a launcher card for each configured "server" and, when the card is clicked, starts
that server's command and proxies ``/user/<name>/heroes-<app>/`` to it. Our command is a tiny HTTP server
that answers every request with a page sending the browser on to the app's Voila page in the same server, so a card opens the
app itself; it starts only when a card is first clicked and then idles. Why not a JupyterLab extension of
our own: that needs a JavaScript build in the stack; this needs one JSON file in the single-user venv.

``python -m heroes_widgets.launcher PORT APP`` runs the redirect (the proxy passes PORT);
:func:`server_proxy_config` is what the embedded stack writes into the venv's Jupyter server config.

The launcher's "Desktop" card is jupyter-remote-desktop-proxy's, configured, not forked: on the card's first
click the server starts TigerVNC's ``vncserver`` in its own process tree (so in a cluster server's Slurm job,
on its node) with the VNC port off and a Unix socket that jupyter-server-proxy creates in a private 0700
folder (Xvnc makes the socket 0600), and proxies the noVNC page and its websocket with the server's own
authentication (the hub's OAuth: only the server's owner). :func:`desktop_session_script` is the session
it runs (``JUPYTER_REMOTE_DESKTOP_PROXY_XSTARTUP``): the package's default wants Xfce and D-Bus, which the
nodes do not have; ours is openbox and a terminal, the packages the Desktop app's nodes already carry.
"""
from __future__ import annotations

import html
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .nav import APPS, app_url


def server_proxy_config(python: str) -> dict:
    """``ServerProxy.servers`` for every app but Admin (the launcher cannot ask a user's roles; the Admin app
    is reached from the start page and the bar, where roles are known). ``python`` runs the redirect."""
    servers = {}
    for rank, app in enumerate(a for a in APPS if not a.admin):
        servers[f"heroes-{app.key}"] = {
            "command": [python, "-m", "heroes_widgets.launcher", "{port}", app.key],
            "timeout": 30,
            "new_browser_tab": True,  # an app is a whole page with its own bar: a tab of its own
            "launcher_entry": {"enabled": True, "title": f"HEROES {app.title}", "category": "HEROES",
                               "rank": rank},
        }
    return {"ServerProxy": {"servers": servers}}


#: the file name of the desktop session in the single-user venv's ``bin/``
DESKTOP_SESSION = "heroes-desktop-session"


def desktop_session_script() -> str:
    """The X session of the launcher's Desktop: openbox, and a terminal once openbox
    is up (``--startup``: it then manages and focuses the terminal; started beside it, the terminal raced
    the window manager's start). ``exec openbox``: vncserver ends the desktop when its session ends."""
    return ("#!/bin/sh\n"
            "# the JupyterLab launcher's Desktop (written by the HEROES stack; heroes_widgets/launcher.py)\n"
            "unset SESSION_MANAGER DBUS_SESSION_BUS_ADDRESS\n"
            "exec openbox --startup 'xterm -geometry 100x30+40+40'\n")


def redirect_page(location: str) -> bytes:
    """A page that sends the browser on to ``location`` at once (a link too, should scripts be off)."""
    where = html.escape(location, quote=True)
    script = json.dumps(location).replace("</", "<\\/")
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='0; url={where}'>"
            f"<title>HEROES</title></head><body><script>window.location.replace({script});</script>"
            f"<a href='{where}'>Open the app</a></body></html>").encode()


def redirect_handler(location: str):
    class Redirect(BaseHTTPRequestHandler):
        """Every GET answers the page that moves on to the app. Not a 302: jupyter-server-proxy rewrites
        a redirect's path as if it were inside the proxied server (/user/x/heroes-submit/user/x/...)."""

        def do_GET(self):  # noqa: N802 (http.server's name)
            body = redirect_page(location)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *_args):  # quiet: the single-user server's log is for real problems
            pass

    return Redirect


def main(argv: list[str]) -> None:
    port, key = int(argv[0]), argv[1]
    app = next(a for a in APPS if a.key == key)
    ThreadingHTTPServer(("127.0.0.1", port), redirect_handler(app_url(app))).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
