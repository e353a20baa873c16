"""Where the service may open a TCP connection for an organization admin, and how often.

The host-key probe and enrollment connect to a host:port an organization admin names. Left open, that is a
port scanner from inside the gateway's network: loopback services, the cloud metadata endpoint, link-local
neighbours. So:

* every address a name resolves to is checked, and the connection goes to the checked address (a name that
  resolves differently a moment later, DNS rebinding, cannot slip through); loopback, link-local,
  unspecified, multicast and metadata addresses are refused unless the platform admin allows them
  (``allow_local_hosts``) or the host:port is one of the embedded stack's own login nodes;
* whatever fails — refused, not resolvable, closed, open but not SSH, a timeout — the answer is one and
  the same sentence, so the answers do not tell a closed port from an open one;
* each organization gets ``host_key_probes_per_minute`` failed probes (a sliding minute); then every probe
  is refused until the minute has passed.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import defaultdict, deque

from . import embedded
from .config import ClustersSettings, get_clusters_settings
from .errors import ClusterError

#: cloud metadata services that are not link-local (AWS IPv6, Alibaba, Oracle's legacy one is link-local)
METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


class ProbeRefused(ClusterError):
    """The probe was not made, or failed; the message never says which step failed."""


class RateLimited(ClusterError):
    """Too many probes for one organization within a minute."""


def unreachable_message(host: str, port: int) -> str:
    return (f"no SSH host key could be read from {host}:{port} (the host is not allowed, does not resolve, does "
            f"not answer, or does not speak SSH there)")


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast
            or address.is_reserved or address in METADATA)


def resolve_allowed(host: str, port: int, settings: ClustersSettings | None = None) -> list[str]:
    """The addresses of ``host`` the service may connect to; ProbeRefused (uniform) when none may be."""
    settings = settings or get_clusters_settings()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ProbeRefused(unreachable_message(host, port)) from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if settings.allow_local_hosts or embedded.published_logins(host, port) is not None:
        return addresses
    if not addresses or any(_forbidden(ipaddress.ip_address(a.split("%")[0])) for a in addresses):
        raise ProbeRefused(unreachable_message(host, port))
    return addresses


def connect_checked(host: str, port: int, timeout: float, settings: ClustersSettings | None = None) -> socket.socket:
    """A TCP connection to an allowed address of ``host`` (the address that was checked, not a re-resolve)."""
    for address in resolve_allowed(host, port, settings):
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except OSError:
            continue
    raise ProbeRefused(unreachable_message(host, port))


class RateLimit:
    """A sliding one-minute window of failed attempts per key (an organization).

    Only failures count: an administrator enrolling a dozen clusters succeeds, a scan mostly fails. Once
    the window is full, every probe is refused (429) until it empties, successes included."""

    def __init__(self):
        self._seen: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def _trim(self, key: str, now: float) -> deque:
        seen = self._seen[key]
        while seen and now - seen[0] > 60:
            seen.popleft()
        return seen

    def check(self, key: str, per_minute: int) -> None:
        """RateLimited when ``key`` had ``per_minute`` failures within the last minute."""
        now = time.monotonic()
        with self._lock:
            seen = self._trim(key, now)
            if len(seen) >= per_minute:
                wait = int(60 - (now - seen[0])) + 1
                raise RateLimited(f"at most {per_minute} failed host probes per minute for an organization; "
                                  f"try again in {wait} s")

    def failed(self, key: str) -> None:
        with self._lock:
            self._seen[key].append(time.monotonic())

    def take(self, key: str, per_minute: int) -> None:
        """``check`` and count one failure (tests; a caller that knows only failures are counted)."""
        self.check(key, per_minute)
        self.failed(key)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


PROBES = RateLimit()
