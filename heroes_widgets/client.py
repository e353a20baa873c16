"""The HEROES API client the widget apps share (they call the API only, never the service's code).

Inside a single-user server it needs no arguments: the URL comes from ``HEROES_API_URL`` (set by the hub
for every server) and the credential from ``JUPYTERHUB_API_TOKEN`` (which carries
``access:services!service=heroes``). Scripts may pass a URL and a Keycloak bearer token instead.
"""
from __future__ import annotations

import os

import requests

DEFAULT_URL = "http://127.0.0.1:8000/services/heroes/api/v1"


class ApiError(Exception):
    """An answer other than 2xx: ``status`` and the service's ``detail`` message (shown to the user)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{detail} (HTTP {status})")
        self.status = status
        self.detail = detail


class HeroesClient:
    """Thin JSON client of the HEROES REST API."""

    def __init__(self, url: str | None = None, token: str | None = None, bearer: str | None = None,
                 timeout: float = 30.0):
        self.url = (url or os.environ.get("HEROES_API_URL") or DEFAULT_URL).rstrip("/")
        self.session = requests.Session()
        if bearer:
            self.session.headers["Authorization"] = f"Bearer {bearer}"
        else:
            token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
            if token:
                self.session.headers["Authorization"] = f"token {token}"
        self.timeout = timeout

    def request(self, method: str, path: str, **kwargs):
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ApiError(503, f"the HEROES service cannot be reached ({exc.__class__.__name__})") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.reason
            except ValueError:
                detail = response.reason or "request failed"
            raise ApiError(response.status_code, str(detail))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json=None, **kwargs):
        return self.request("POST", path, json=json, **kwargs)

    def patch(self, path: str, json=None, **kwargs):
        return self.request("PATCH", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)
