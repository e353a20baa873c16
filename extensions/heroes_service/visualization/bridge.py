"""The websocket bridge: browser (noVNC) <-> gateway <-> SSH exec channel on the login node <-> node socket.

The gateway needs no route to compute nodes: the channel runs ``srun --jobid=<id> --overlap ... socat STDIO
UNIX-CONNECT:<socket>`` on the login node (``script.bridge_argv``), as the desktop's own account, so Slurm
carries the bytes to the node and only that account can reach the 0600 socket.

Authentication happens on the websocket itself, before ``accept`` (CVE-2024-28179 is what skipping it costs):

* the ``Origin`` must be the request's own host or one of ``visualization_allowed_origins`` (a page on
  another site cannot drive a desktop);
* a one-time ticket in ``Sec-WebSocket-Protocol`` (``heroes-ticket.<secret>``), or an ``Authorization``
  header of the desktop's owner (API clients, benchmarks);
* the desktop must be ready. Anything else: the handshake is refused (HTTP 403), nothing is bridged.

Each direction runs in its own thread (paramiko channels block), so one slow viewer never blocks the
event loop; view-only viewers' input is dropped by ``rfb.ViewOnlyFilter``.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..clusterjobs.submit import owner_connector, owner_principal
from ..clusters.errors import ClusterError
from ..clusters.models import Cluster
from ..errors import ApiError
from . import grants
from . import models as m
from .rfb import ViewOnlyFilter, ViewOnlyViolation
from .script import bridge_argv

log = logging.getLogger("heroes_service.visualization")
TICKET_PREFIX = "heroes-ticket."
CHUNK = 256 * 1024


def origin_allowed(websocket: WebSocket, allowed: str) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser: it authenticates with a ticket or a token like any API client
    host = websocket.headers.get("host", "")
    extra = {o.strip().rstrip("/") for o in allowed.split(",") if o.strip()}
    return urlsplit(origin).netloc == host or origin.rstrip("/") in extra


def _ticket_from(websocket: WebSocket) -> str:
    for proto in websocket.scope.get("subprotocols") or []:
        if proto.startswith(TICKET_PREFIX):
            return proto[len(TICKET_PREFIX):]
    return ""


async def authorize(websocket: WebSocket, session_id: str) -> tuple[m.DesktopSession, Cluster, bool] | None:
    """(desktop, cluster, view only) when this websocket may connect; None (and the reason logged) otherwise."""
    app = websocket.app
    settings = app.state.settings
    if not origin_allowed(websocket, settings.visualization_allowed_origins):
        log.warning("desktop websocket refused: origin %r not allowed", websocket.headers.get("origin"))
        return None
    ticket = _ticket_from(websocket)
    authorization = websocket.headers.get("authorization")

    def check():
        with app.state.sessions() as session:
            row = session.get(m.DesktopSession, session_id) if len(session_id) <= 32 else None
            if row is None:
                return None
            if ticket:
                granted = grants.spend_ticket(session, ticket, session_id)
                if granted is None:
                    return None
                view_only = granted.view_only
            elif authorization:
                try:
                    principal = app.state.authenticator.authenticate(authorization)
                except ApiError:
                    return None
                if principal.username != row.username or principal.organization != row.organization:
                    return None
                view_only = False
            else:
                return None
            if row.state != m.RUNNING or not row.socket_path:
                return None
            cluster = session.get(Cluster, row.cluster_id)
            if cluster is None:
                return None
            session.expunge(row)
            session.expunge(cluster)
            return row, cluster, view_only

    granted = await asyncio.to_thread(check)
    if granted is None:
        log.warning("desktop websocket to %s refused (no valid ticket or credential, or not ready)", session_id[:32])
    return granted


async def serve(websocket: WebSocket, row: m.DesktopSession, cluster: Cluster, view_only: bool, viewers,
                via: str) -> None:
    """Accept, open the channel, pump both ways until either side ends; count the viewer meanwhile."""
    try:
        conn = owner_connector(cluster, row.cluster_login, owner_principal(row))
        channel = await asyncio.to_thread(conn.open_exec,
                                          bridge_argv(row.job_id or "", row.socket_path, via=via))
    except (ClusterError, ValueError) as exc:
        log.warning("desktop %s: no channel to the node: %s", row.id, exc)
        await websocket.close(code=1011)
        return
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol="binary" if "binary" in offered else None)
    viewers.add(row.id)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    threading.Thread(target=_node_to_browser, args=(channel, websocket, loop, done), daemon=True,
                     name=f"desktop-{row.id[:8]}-out").start()
    try:
        await _browser_to_node(websocket, channel, ViewOnlyFilter() if view_only else None, done)
    finally:
        viewers.remove(row.id)
        channel.close()
        done.set()


async def _browser_to_node(websocket: WebSocket, channel, view_filter: ViewOnlyFilter | None,
                           done: asyncio.Event) -> None:
    receiver = asyncio.ensure_future(_receive_loop(websocket, channel, view_filter))
    waiter = asyncio.ensure_future(done.wait())
    await asyncio.wait({receiver, waiter}, return_when=asyncio.FIRST_COMPLETED)
    for task in (receiver, waiter):
        task.cancel()
    try:
        await websocket.close()
    except (RuntimeError, WebSocketDisconnect):
        pass  # already closed by the browser (uvicorn's websockets raise the disconnect on a late close)


async def _receive_loop(websocket: WebSocket, channel, view_filter: ViewOnlyFilter | None) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            if view_filter is not None:
                data = view_filter.feed(data)
            if data:
                await asyncio.to_thread(channel.sendall, data)
    except (WebSocketDisconnect, OSError, EOFError):
        return
    except ViewOnlyViolation as exc:
        log.warning("view-only viewer closed: %s", exc)


def _node_to_browser(channel, websocket: WebSocket, loop: asyncio.AbstractEventLoop, done: asyncio.Event) -> None:
    """Blocking reads from the channel, each chunk handed to the event loop (which applies backpressure)."""
    try:
        while True:
            data = channel.recv(CHUNK)
            if not data:
                break
            asyncio.run_coroutine_threadsafe(websocket.send_bytes(data), loop).result(timeout=60)
    except Exception:  # noqa: BLE001 - browser gone, channel closed or a timeout: the session just ends
        pass
    finally:
        loop.call_soon_threadsafe(done.set)
