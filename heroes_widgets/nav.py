"""The navigation bar every app shows at its top: the gateway's apps the user may use (the Admin app only for
an organization's admins), JupyterLab, the hub's control panel and log out. The current app is marked.

Links are plain ``<a href>`` relative to the server's own prefix (``JUPYTERHUB_SERVICE_PREFIX``, e.g.
``/user/bob/`` or ``/user/bob/gpu/`` for a named server), so they work behind any hub address. Which apps a
user may use comes from the API's ``/organization/auth/me`` (roles), asked once per kernel.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass

import ipywidgets as widgets

from .api_client import ApiClient, ServiceCallError
from .ui import css


@dataclass(frozen=True)
class App:
    """One app of the gateway: its notebook, its title, what it is for (the start page's card) and who may
    use it (``admin``: organization admins only)."""

    key: str
    title: str
    about: str
    icon: str
    admin: bool = False

    @property
    def notebook(self) -> str:
        return f"{self.key}.ipynb"


APPS: tuple[App, ...] = (
    App("welcome", "Home", "Your start page: what is ready for you and your recent runs.", "&#8962;"),
    App("submit", "Submit", "Run a workflow: pick a template, fill its form, choose a cluster or let the gateway "
                            "choose.", "&#9654;"),
    App("monitor", "Monitor", "Your workflow runs with live state, logs, outputs; cancel a run.", "&#9719;"),
    App("data", "Data", "Your files and your groups' buckets: browse, upload, download, share.", "&#9636;"),
    App("energy", "Energy", "Energy each run used, per step and over time.", "&#9889;"),
    App("decision", "Decision", "Where a template would run best: wait, run time, energy and cost per cluster.",
        "&#9878;"),
    App("desktop", "Desktop", "A desktop on a cluster node, in your browser: look at results where they are.",
        "&#9635;"),
    App("admin", "Admin", "Your organization: users, groups, clusters and templates.", "&#9881;", admin=True),
)


def server_prefix(env: dict | None = None) -> str:
    """The URL prefix of this server (``/user/<name>/``), from the hub's environment."""
    env = os.environ if env is None else env
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or f"/user/{env.get('JUPYTERHUB_USER', '')}/"
    return prefix if prefix.endswith("/") else prefix + "/"


def app_url(app: App, prefix: str | None = None) -> str:
    """Where an app opens (Voila renders its notebook in this server)."""
    return f"{prefix if prefix is not None else server_prefix()}voila/render/{app.notebook}"


def is_org_admin(me: dict | None) -> bool:
    """Whether the user may use the Admin app (the service enforces it again on every admin route)."""
    roles = set((me or {}).get("roles") or [])
    return bool(roles & {"org-admin", "platform-admin"})


def apps_for(me: dict | None) -> list[App]:
    """The apps this user may use, in the bar's order."""
    admin = is_org_admin(me)
    return [a for a in APPS if admin or not a.admin]


def who_am_i(client: ApiClient) -> dict | None:
    """``/organization/auth/me`` for this client, asked once per client (kept on it); None when the service
    cannot say (the bar then shows the apps every user has)."""
    if not hasattr(client, "_heroes_me"):
        try:
            client._heroes_me = client.me()
        except ServiceCallError:
            client._heroes_me = None
    return client._heroes_me


STYLE = """<style>
.heroes-nav-bar {display:flex;flex-wrap:wrap;align-items:center;gap:4px;background:#1f3a5f;padding:6px 10px;
  border-radius:4px;margin-bottom:10px;font-family:sans-serif}
.heroes-nav-bar a {color:#fff;text-decoration:none;padding:4px 10px;border-radius:3px;font-size:14px}
.heroes-nav-bar a:hover {background:#2e5584}
.heroes-nav-bar a.heroes-nav-current {background:#fff;color:#1f3a5f;font-weight:bold}
.heroes-nav-bar .heroes-nav-brand {color:#ffd166;font-weight:bold;margin-right:10px;font-size:15px}
.heroes-nav-bar .heroes-nav-right {margin-left:auto;display:flex;gap:4px;align-items:center}
.heroes-nav-bar .heroes-nav-user {color:#cfe0f5;font-size:13px;margin-right:6px}
</style>"""


def nav_html(current: str, me: dict | None, prefix: str | None = None) -> str:
    """The bar's HTML: one link per app this user may use (``current`` marked), then JupyterLab, the hub's
    control panel and log out on the right."""
    prefix = prefix if prefix is not None else server_prefix()
    links = []
    for app in apps_for(me):
        classes = f"heroes-nav-link heroes-nav-{app.key}" + (" heroes-nav-current" if app.key == current else "")
        links.append(f"<a class='{classes}' href='{html.escape(app_url(app, prefix))}'>{app.icon} "
                     f"{html.escape(app.title)}</a>")
    user = html.escape((me or {}).get("username") or os.environ.get("JUPYTERHUB_USER", ""))
    org = (me or {}).get("organization")
    who = f"{user} ({html.escape(org)})" if org else user
    right = (f"<span class='heroes-nav-user'>{who}</span>"
             f"<a class='heroes-nav-link heroes-nav-lab' href='{html.escape(prefix)}lab'>JupyterLab</a>"
             "<a class='heroes-nav-link heroes-nav-hub' href='/hub/home'>Servers</a>"
             "<a class='heroes-nav-link heroes-nav-logout' href='/hub/logout'>Log out</a>")
    return (f"{STYLE}<nav class='heroes-nav-bar'><span class='heroes-nav-brand'>HEROES</span>{''.join(links)}"
            f"<span class='heroes-nav-right'>{right}</span></nav>")


def nav_bar(current: str, client: ApiClient | None = None, me: dict | None = None) -> widgets.HTML:
    """The bar as a widget for the app ``current`` (its key in :data:`APPS`). Give ``me`` when the app
    already asked ``/auth/me``; otherwise it is asked through ``client`` (a new one if None)."""
    if me is None:
        try:
            me = who_am_i(client or ApiClient())
        except ServiceCallError:  # no API address at all: the bar still links the apps every user has
            me = None
    return css(widgets.HTML(nav_html(current, me)), "heroes-nav")
