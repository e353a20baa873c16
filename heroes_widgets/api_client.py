"""The small HEROES API client every Voila app shares (Data, Submit, Energy, Decision).

The apps call the REST API only (never the service's code), as the user: inside a single-user server the
credential is ``JUPYTERHUB_API_TOKEN`` (it carries ``access:services!service=heroes``) sent as
``Authorization: token ...``. Scripts and tests may pass a Keycloak access token as ``bearer=`` instead.

Base URL, first match wins:

1. ``base_url=`` given to :class:`ApiClient`;
2. ``HEROES_API_URL`` (the hub sets it for every server);
3. the scheme and host of ``JUPYTERHUB_API_URL`` + ``/services/heroes/api/v1`` (the service behind the
   hub's proxy on the same host).

Every non-2xx answer becomes :class:`ServiceCallError` with the service's own ``detail`` (the apps show it as is);
an unreachable service becomes ``ServiceCallError(503, ...)`` that says so. The transport is any object with
``requests.Session.request``'s signature, so unit tests run the widgets against a fake one.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator
from urllib.parse import urlsplit

SERVICE_PATH = "/services/heroes/api/v1"
DATA = "/organization/data"
ENERGY = "/organization/decision"
DECISION = "/organization/decision"
CHUNK = 1024 * 1024


class ServiceCallError(Exception):
    """A failed call to the HEROES service: ``status`` (HTTP status, 503 when the service cannot be reached) and
    ``detail``.

    Named for what the widgets see (a call that did not succeed), not ``ApiError``: that name belongs to the
    service's own error (``heroes_service.errors.ApiError``, which a route raises to *answer* with a status);
    this one is what a client *receives*. The SDK's counterpart is ``heroes_sdk.errors.HeroesError``.
    """

    def __init__(self, status: int, detail: str):
        super().__init__(f"{detail} (HTTP {status})" if status else detail)
        self.status = status
        self.detail = detail


def default_base_url(env: dict | None = None) -> str:
    """The API's base URL from the environment (see the module docstring); ServiceCallError if nothing says."""
    env = os.environ if env is None else env
    explicit = env.get("HEROES_API_URL", "").strip()
    if explicit:
        return explicit.rstrip("/")
    hub_api = env.get("JUPYTERHUB_API_URL", "").strip()
    if hub_api:
        parts = urlsplit(hub_api)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}{SERVICE_PATH}"
    raise ServiceCallError(0, "no HEROES API address: set HEROES_API_URL (or run inside a JupyterHub server)")


def _detail(response) -> str:
    """The service's error message of a failed answer (``detail`` of its JSON body, else the reason)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("detail"):
        detail = body["detail"]
        if isinstance(detail, list):  # FastAPI validation errors
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        return str(detail)
    return getattr(response, "reason", "") or f"request failed with HTTP {response.status_code}"


class _SizedBody:
    """A streamed body whose length is known: requests then sends Content-Length (not chunked), so the
    service checks the quota up front and reserves only what this upload needs."""

    def __init__(self, chunks: Iterator[bytes], length: int):
        self.chunks = chunks
        self.length = length

    def __iter__(self):
        return self.chunks

    def __len__(self) -> int:
        return self.length


class ApiClient:
    """A user's connection to the HEROES API."""

    def __init__(self, base_url: str | None = None, token: str | None = None, bearer: str | None = None,
                 session=None, timeout: float = 120.0):
        self.base_url = (base_url or default_base_url()).rstrip("/")
        if session is None:
            import requests

            session = requests.Session()
        self.session = session
        self.timeout = timeout
        if bearer:
            self.auth = f"Bearer {bearer}"
        else:
            token = token if token is not None else os.environ.get("JUPYTERHUB_API_TOKEN", "")
            self.auth = f"token {token}" if token else ""

    # --- plumbing -------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params=None, json=None, data=None, headers=None,
                stream: bool = False):
        """The raw answer of one call; ServiceCallError for non-2xx answers and unreachable services."""
        all_headers = {"Authorization": self.auth} if self.auth else {}
        all_headers.update(headers or {})
        try:
            response = self.session.request(method, self.base_url + path, params=params, json=json, data=data,
                                            headers=all_headers, timeout=self.timeout, stream=stream)
        except ServiceCallError:
            raise
        except Exception as exc:  # connection refused, DNS, timeout: the transport's own errors
            raise ServiceCallError(503, f"the HEROES service cannot be reached at {self.base_url} "
                                f"({exc.__class__.__name__})") from None
        if response.status_code >= 400:
            raise ServiceCallError(response.status_code, _detail(response))
        return response

    def call(self, method: str, path: str, **kwargs):
        """A call's JSON answer (None for an empty body)."""
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def me(self) -> dict:
        return self.call("GET", "/organization/auth/me")

    # --- data -----------------------------------------------------------------------------------------
    def buckets(self) -> list[dict]:
        """Buckets the user may use, personal space first (``bucket``, ``kind``, ``access``...)."""
        return self.call("GET", f"{DATA}/list")["buckets"]

    def list_objects(self, bucket: str, prefix: str = "") -> dict:
        """Folders and objects directly below ``prefix`` (all pages joined)."""
        folders: list[str] = []
        objects: list[dict] = []
        token = None
        while True:
            params = {"prefix": prefix}
            if token:
                params["token"] = token
            page = self.call("GET", f"{DATA}/bucket/{bucket}/list", params=params)
            folders += page.get("folders", [])
            objects += page.get("objects", [])
            token = page.get("next_token")
            if not token:
                return {"bucket": bucket, "prefix": prefix, "access": page.get("access", "read"),
                        "folders": folders, "objects": objects}

    def create_folder(self, bucket: str, folder: str) -> dict:
        if not folder.endswith("/"):
            folder += "/"
        return self.call("POST", f"{DATA}/bucket/{bucket}/", json={"folder": folder})

    def delete(self, bucket: str, key: str) -> dict:
        """Delete an object, or a folder and everything in it (key ending with '/')."""
        return self.call("DELETE", f"{DATA}/bucket/{bucket}", params={"key": key})

    def upload(self, bucket: str, key: str, content: bytes | memoryview | Iterable[bytes],
               length: int | None = None, content_type: str = "application/octet-stream",
               progress: Callable[[int, int | None], None] | None = None) -> dict:
        """Upload bytes (or an iterable of chunks) as one object; ``progress(sent, total)`` as it goes.

        The body is streamed in 1 MiB chunks, so ``progress`` moves while the service copies the bytes to
        S3 (it answers only once the object is complete).
        """
        if isinstance(content, (bytes, bytearray, memoryview)):
            view = memoryview(content).cast("B")
            length = len(view)
            chunks: Iterable[bytes] = (bytes(view[i:i + CHUNK]) for i in range(0, length, CHUNK))
        else:
            chunks = content

        def counted() -> Iterator[bytes]:
            sent = 0
            if progress:
                progress(0, length)
            for chunk in chunks:
                sent += len(chunk)
                yield chunk
                if progress:
                    progress(sent, length)

        headers = {"Content-Type": content_type or "application/octet-stream"}
        body = _SizedBody(counted(), length) if length is not None else counted()
        return self.call("POST", f"{DATA}/upload", params={"bucket": bucket, "key": key},
                         data=body, headers=headers)

    def download(self, bucket: str, key: str, max_bytes: int | None = None) -> bytes:
        """An object's bytes; with ``max_bytes`` only its first bytes (a Range request, for previews)."""
        headers = {"Range": f"bytes=0-{max_bytes - 1}"} if max_bytes else None
        response = self.request("GET", f"{DATA}/download", params={"bucket": bucket, "key": key},
                                headers=headers)
        return response.content

    def presigned_download(self, bucket: str, key: str) -> str:
        """A time-limited URL the browser can fetch the object from directly (big files)."""
        return self.call("GET", f"{DATA}/download", params={"bucket": bucket, "key": key,
                                                            "presigned": "true"})["url"]

    # --- energy ---------------------------------------------------------------------------------------
    def energy_steps(self, **filters) -> list[dict]:
        """Per-step energy rows visible to the user, filtered by instance/user/cluster/template/period."""
        params = {k: v for k, v in filters.items() if v not in (None, "")}
        return self.call("GET", f"{ENERGY}/energy/steps", params=params)["steps"]

    def energy_summary(self, group_by: str, **filters) -> list[dict]:
        """Energy totals grouped by instance, user, organization, cluster or template."""
        params = {k: v for k, v in filters.items() if v not in (None, "")}
        params["group_by"] = group_by
        return self.call("GET", f"{ENERGY}/energy/summary", params=params)["groups"]

    def energy_samples(self, job_id: int, step_id: int, cluster: str = "") -> list[dict]:
        """The per-second samples of one step (every node; empty when no sample file was ingested)."""
        return self.call("GET", f"{ENERGY}/energy/samples",
                         params={"job_id": job_id, "step_id": step_id, "cluster": cluster})["samples"]

    # --- decision -------------------------------------------------------------------------------------
    def policies(self) -> dict:
        """The placement policies (``policies``: name, title, description, weights) and the ``default`` one."""
        return self.call("GET", f"{DECISION}/policies")

    def decide(self, template: str, parameters: dict | None = None, policy: str | None = None,
               deadline_s: float | None = None, budget: float | None = None, currency: str | None = None,
               clusters: list[str] | None = None, version: int | None = None) -> dict:
        """Where a template with these parameters should run: every candidate cluster (wait, run, finish,
        energy, cost), the choice and its reason, right-sizing. Constraints left None are not sent, so the
        service's defaults apply (its default policy, no deadline, no budget, every cluster)."""
        body = {"template": template, "parameters": parameters or {}}
        optional = {"version": version, "policy": policy, "deadline_s": deadline_s, "budget": budget,
                    "currency": currency, "clusters": clusters}
        body.update({k: v for k, v in optional.items() if v is not None})
        return self.call("POST", f"{DECISION}/decide", json=body)
