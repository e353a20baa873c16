"""The hub's client of the HEROES service's cluster-jobs API (``/heroes/hub/cluster-jobs``).

The hub acts for one user with its own token-only service's token (``hub-server-keys``, the same token the
pre-spawn hook uses for a server's S3 keys). It holds no database URL, no user CA and no cluster key: every
cluster action - submit, state, cancel, signal, tunnel - is a request here, answered by the service, which
alone holds them.
"""
from __future__ import annotations

import asyncio
from typing import Any

import httpx

BASE = "/heroes/hub/cluster-jobs"


class ServiceError(RuntimeError):
    """The service refused (4xx, ``detail`` is for the user) or failed (5xx / unreachable: ``status`` 0 or 5xx)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status, self.detail = status, detail

    @property
    def refused(self) -> bool:
        """A 4xx: the request itself was wrong or not allowed (asking again changes nothing)."""
        return 400 <= self.status < 500


class ClusterJobsClient:
    """One per spawner configuration; a pooled HTTP client on the service's API (loopback)."""

    def __init__(self, api_url: str, token: str, timeout: float = 90):
        if not api_url or not token:
            raise ServiceError(0, "the hub is not configured to reach the HEROES service (service_api_url, "
                                  "service_token)")
        self.api_url, self.token, self.timeout = api_url.rstrip("/"), token, timeout
        self._client: httpx.AsyncClient | None = None
        self._loop = None

    def _http(self) -> httpx.AsyncClient:
        """A pooled client of the running event loop (the hub has one; tests may run several in turn)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(base_url=self.api_url + BASE, timeout=self.timeout,
                                             headers={"Authorization": f"token {self.token}"})
            self._loop = loop
        return self._client

    async def call(self, method: str, path: str = "", *, params: dict | None = None, json: Any = None,
                   timeout: float | None = None) -> Any:
        try:
            response = await self._http().request(method, path or "/", params=params, json=json,
                                                  timeout=timeout or self.timeout)
        except httpx.HTTPError as exc:
            raise ServiceError(0, f"the HEROES service is unreachable ({type(exc).__name__})") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", "")
            except ValueError:
                detail = response.text[:300]
            raise ServiceError(response.status_code, str(detail) or response.reason_phrase)
        return response.json() if response.content else None

    # --- the operations ---------------------------------------------------------------------------------
    async def clusters(self, user: str, estimate: bool = False) -> list[dict]:
        return await self.call("GET", "/clusters", params={"user": user, "estimate": str(estimate).lower()})

    async def submit(self, user: str, kind: str, cluster: str, resources: dict, params: dict, ref: str = "") -> dict:
        return await self.call("POST", "/", json={"user": user, "kind": kind, "cluster": cluster,
                                                  "resources": resources, "params": params, "ref": ref})

    async def state(self, user: str, job: str, wait_s: float = 0) -> dict:
        return await self.call("GET", f"/{job}", params={"user": user, "wait_s": wait_s},
                               timeout=self.timeout + wait_s)

    async def cancel(self, user: str, job: str) -> dict:
        return await self.call("DELETE", f"/{job}", params={"user": user})

    async def signal(self, user: str, job: str, signal: str) -> None:
        await self.call("POST", f"/{job}/signal", json={"user": user, "signal": signal})

    async def tunnel(self, user: str, job: str, port: int, local_port: int = 0) -> int:
        answer = await self.call("POST", f"/{job}/tunnel", json={"user": user, "port": port, "local_port": local_port})
        return int(answer["local_port"])
