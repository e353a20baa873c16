"""Mirror of Keycloak groups into JupyterHub groups, through the hub's REST API (service token).

The hub syncs a user's groups from Keycloak at each login (``manage_groups``); the service applies the
same change to the hub at once when an admin changes a membership, so that the hub's group list agrees
before the user's next login. Users the hub has never seen are skipped: their first login brings the
groups along.
"""
from __future__ import annotations

import logging
from urllib.parse import quote

import httpx

from ..errors import Unavailable
from ..settings import ServiceSettings

log = logging.getLogger("heroes_service.hub")


class Hub:
    """Small JupyterHub API client authenticated with the service's own token."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self._http = httpx.Client(timeout=10.0)

    @property
    def configured(self) -> bool:
        return bool(self.settings.hub_api_token.get_secret_value())

    def _call(self, method: str, path: str, json: dict | None = None) -> httpx.Response:
        try:
            return self._http.request(method, f"{self.settings.hub_api_url.rstrip('/')}{path}", json=json,
                                      headers={"Authorization": f"token {self.settings.hub_api_token.get_secret_value()}"})
        except httpx.HTTPError:
            raise Unavailable("JupyterHub unreachable: the group change could not be mirrored into the hub") from None

    def _expect(self, response: httpx.Response, ok: tuple[int, ...], what: str) -> None:
        if response.status_code not in ok:
            log.warning("hub refused %s: HTTP %s %s", what, response.status_code, response.text[:200])
            raise Unavailable(f"JupyterHub refused to {what} (HTTP {response.status_code})")

    def group(self, name: str) -> dict | None:
        if not self.configured:
            return None
        response = self._call("GET", f"/groups/{quote(name, safe='')}")
        if response.status_code == 404:
            return None
        self._expect(response, (200,), f"read group {name}")
        return response.json()

    def ensure_group(self, name: str) -> None:
        if not self.configured:
            return
        response = self._call("POST", f"/groups/{quote(name, safe='')}")
        self._expect(response, (201, 409), f"create group {name}")

    def delete_group(self, name: str) -> None:
        if not self.configured:
            return
        response = self._call("DELETE", f"/groups/{quote(name, safe='')}")
        self._expect(response, (204, 404), f"delete group {name}")

    def known_users(self, usernames: list[str]) -> list[str]:
        known = []
        for name in usernames:
            response = self._call("GET", f"/users/{quote(name, safe='')}")
            if response.status_code == 200:
                known.append(name)
        return known

    def add_members(self, group: str, usernames: list[str]) -> None:
        """Add users to a hub group (created if missing), skipping users the hub does not know yet."""
        if not self.configured or not usernames:
            return
        users = self.known_users(usernames)
        if not users:
            return
        self.ensure_group(group)
        response = self._call("POST", f"/groups/{quote(group, safe='')}/users", {"users": users})
        self._expect(response, (200,), f"add {', '.join(users)} to group {group}")

    def remove_members(self, group: str, usernames: list[str]) -> None:
        if not self.configured or not usernames:
            return
        users = self.known_users(usernames)
        if not users or self.group(group) is None:
            return
        response = self._call("DELETE", f"/groups/{quote(group, safe='')}/users", {"users": users})
        self._expect(response, (200,), f"remove {', '.join(users)} from group {group}")
