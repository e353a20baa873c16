"""The HTTP layer: one authenticated ``requests`` session to the HEROES API, errors and retries.

Why retries are limited the way they are: a read (GET) changes nothing, so it is sent again after a dropped
connection or a 502/503/504, with a short backoff. Anything that writes (POST, PATCH, DELETE) is sent again
only when the connection was never opened (the service cannot have seen it). A submit whose answer is lost
after sending is never re-sent; :meth:`heroes_sdk.Client.submit` looks for the instance instead.

A Keycloak access token lives minutes; when the credential came with a refresh token the session renews it
before it expires, and once more after a 401 (a 401 means nothing was done, so that retry is safe).
"""
from __future__ import annotations

import time
from typing import Any, Callable
from urllib.parse import urlsplit

from .errors import AuthenticationError, HeroesError, ServiceUnavailable, error_for

SERVICE_PATH = "/services/heroes/api/v1"
RETRY_STATUSES = (502, 503, 504)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def api_url(url: str) -> str:
    """The API's base URL from what a user typed: the hub's address (``http://host:8000``) gets the
    service's path appended, a full API URL is kept; trailing slashes are dropped."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.path in ("", "/", "/hub"):
        return f"{parts.scheme}://{parts.netloc}{SERVICE_PATH}"
    return url


def service_detail(response) -> tuple[str, str]:
    """(message, rule) of a failed answer: the service's ``detail`` (FastAPI's validation lists joined)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("detail"):
        detail = body["detail"]
        if isinstance(detail, list):
            detail = "; ".join(_validation_message(d) for d in detail)
        return str(detail), str(body.get("rule") or "")
    reason = getattr(response, "reason", "") or "error"
    return (f"{reason}: the answer did not come from the HEROES service (is the URL right? is the gateway "
            "restarting?)", "")


def _validation_message(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(p) for p in item.get("loc", []) if p not in ("body", "query"))
    return f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", item))


def never_sent(exc: Exception) -> bool:
    """Whether a transport error happened before any byte of the request left (connect refused/timeout)."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = repr(exc.args[0]) if exc.args else repr(exc)
        return "NewConnectionError" in text or "Connection refused" in text or "NameResolutionError" in text
    return False


class Credential:
    """How requests are authorized: ``token`` (a JupyterHub API token) or ``bearer`` (Keycloak access token).

    ``renew`` is called with no argument when a bearer token is about to expire or was refused; it answers
    a new (access_token, expires_at) or raises AuthenticationError. ``expires_at`` is a Unix time (0: unknown).
    """

    def __init__(self, scheme: str = "", value: str = "", expires_at: float = 0.0,
                 renew: Callable[[], tuple[str, float]] | None = None):
        self.scheme = scheme
        self.value = value
        self.expires_at = expires_at
        self.renew = renew

    def header(self) -> dict[str, str]:
        return {"Authorization": f"{self.scheme} {self.value}"} if self.value else {}

    def due(self, now: float | None = None) -> bool:
        """Renew now? (a renewable token with under 30 s left)"""
        now = time.time() if now is None else now
        return bool(self.renew and self.expires_at and self.expires_at - now < 30)

    def refresh(self) -> bool:
        if self.renew is None:
            return False
        self.value, self.expires_at = self.renew()
        return True


class Session:
    """One user's connection: base URL, credential, a pooled ``requests.Session``, retries, errors.

    ``transport`` is any object with ``requests.Session.request``'s signature (unit tests pass a fake).
    """

    def __init__(self, base_url: str, credential: Credential | None = None, transport=None,
                 timeout: float = 120.0, retries: int = 3, backoff_s: float = 0.5):
        self.base_url = api_url(base_url)
        self.credential = credential or Credential()
        if transport is None:
            import requests

            transport = requests.Session()
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s

    def request(self, method: str, path: str, *, params=None, json=None, data=None, headers=None,
                stream: bool = False, timeout: float | None = None, retry: bool | None = None):
        """The raw answer of one call (2xx only); a :class:`HeroesError` subclass otherwise.

        ``retry`` overrides the method's default (reads are retried, writes only when never sent); a body
        that is a stream is never retried, since it cannot be read twice.
        """
        method = method.upper()
        retry_sent = (method in SAFE_METHODS) if retry is None else retry
        if data is not None and not isinstance(data, (bytes, str)):
            retry_sent = False
        if self.credential.due():
            self.credential.refresh()
        attempt, renewed = 0, False
        while True:
            attempt += 1
            try:
                response = self.transport.request(
                    method, self.base_url + path, params=params, json=json, data=data,
                    headers={**self.credential.header(), **(headers or {})}, stream=stream,
                    timeout=timeout or self.timeout)
            except Exception as exc:  # the transport's own errors: refused, reset, timed out, DNS
                if attempt < self.retries and (retry_sent or never_sent(exc)) and _rewindable(data):
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
                    continue
                raise ServiceUnavailable(f"the HEROES service did not answer at {self.base_url} "
                                         f"({exc.__class__.__name__}: {str(exc)[:200]})") from None
            if response.status_code == 401 and not renewed and self.credential.renew and _rewindable(data):
                renewed = True
                self.credential.refresh()
                continue
            if response.status_code in RETRY_STATUSES and retry_sent and attempt < self.retries:
                response.close()
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
                continue
            if response.status_code >= 400:
                detail, rule = service_detail(response)
                raise error_for(response.status_code, detail, rule)
            return response

    def call(self, method: str, path: str, **kwargs) -> Any:
        """A call's JSON answer (None for an empty body)."""
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise HeroesError(f"the service answered {path} with something that is not JSON",
                              status=response.status_code) from None

    def get(self, path: str, **params) -> Any:
        """GET with query parameters (None values are left out)."""
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})


def _rewindable(data) -> bool:
    return data is None or isinstance(data, (bytes, str))


__all__ = ["Session", "Credential", "api_url", "SERVICE_PATH", "AuthenticationError"]
