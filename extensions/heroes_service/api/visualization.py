"""Remote desktops (``/organization/visualization``): a VNC server in a Slurm job, shown in the browser.

* create / list / get / delete a desktop on one of your organization's clusters (partition, cores, memory,
  time, GPUs checked against the cluster; the expected start from ``sbatch --test-only``), optionally in one
  of your workflow instances' working directory ("Visualize");
* a one-time ticket to open the desktop's websocket (``/ws/{id}``; the ticket goes in the
  ``Sec-WebSocket-Protocol`` header, see ``visualization/bridge.py``);
* view-only links for another member of your organization, which expire;
* ``/view`` (the noVNC page) and its static files are public: they hold no secret and no data.

A desktop of another user or organization answers 404, the same as one that does not exist.
"""
from __future__ import annotations

import mimetypes
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..auth import Principal, require_role
from ..clusters import usage as cluster_usage
from ..clusters.models import Cluster
from ..errors import NotFound, Unavailable
from ..store import get_session
from ..visualization import bridge, grants, sessions
from ..visualization import models as m
from ..wiring import bind_clusters

cluster_usage.register(m.sessions_on_cluster)
any_user = require_role("user")
STATIC = Path(__file__).resolve().parent.parent / "visualization" / "static"
NOVNC = Path("/usr/share/novnc")
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; "
                                          "style-src 'self' 'unsafe-inline'; frame-ancestors 'self'",
                "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


# desktops are tracked by the one reconciler per cluster (``visualization.tracker.DesktopTracker``, registered
# in ``wiring.build_workers``); the bridges count their viewers in ``app.state.desktop_viewers``
router = APIRouter(tags=["visualization"])


class DesktopIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cluster: str = Field("", max_length=63, description="Cluster name (or id); empty with instance_id: its cluster.")
    partition: str = Field("", max_length=64, description="Empty: the cluster's default partition.")
    cores: int = Field(1, ge=1, le=1024)
    memory_mb: int = Field(1024, ge=128, le=4 * 1024 * 1024)
    minutes: int = Field(60, ge=1, le=7 * 24 * 60)
    gpus: int = Field(0, ge=0, le=64)
    geometry: str = Field("1280x800", pattern=r"^\d{3,4}x\d{3,4}$", description="Initial screen size.")
    instance_id: str | None = Field(None, max_length=32, description="Open the desktop in this instance's working "
                                                                     "directory, with its outputs listed.")
    work_dir: str | None = Field(None, max_length=1024, description="Relative to (or inside) your cluster work "
                                                                    "folder; default that folder.")
    idle_minutes: float | None = Field(None, gt=0, le=24 * 60, description="End the desktop after this long without "
                                       "a viewer (at most the service's setting).")


class DesktopOut(BaseModel):
    id: str
    cluster: str
    state: str
    ready: bool
    reason: str
    end_reason: str
    job_id: str | None
    node: str
    partition: str
    cores: int
    memory_mb: int
    minutes: int
    gpus: int
    work_dir: str
    instance_id: str | None
    idle_minutes: float
    created_at: datetime
    expected_start: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    usage: dict = Field(description="elapsed_s, time_left_s, core_hours, energy_kwh (and energy_j) with "
                                    "energy_source (collector: its totals so far; energy record: ingested at the "
                                    "end; power profile: no collector output yet), energy_estimated and "
                                    "energy_note, cost, currency.")
    connect_path: str = Field(description="The desktop page; add '#session=<id>&ticket=<ticket>' from POST .../ticket.")
    websocket_path: str


class TicketOut(BaseModel):
    ticket: str
    expires_in_s: int
    view_only: bool
    websocket_path: str
    view_url: str = Field(description="The desktop page with the ticket in its fragment (never sent to a server).")


class ShareIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    viewer: str = Field("", max_length=255, description="The member who may watch; empty: any member of your "
                                                        "organization who has the link.")
    minutes: float = Field(60, gt=0, description="Lifetime of the link in minutes.")


class ShareOut(BaseModel):
    id: str
    session_id: str
    owner: str
    viewer: str
    cluster: str
    expires_at: datetime


def _paths(request: Request, session_id: str) -> tuple[str, str]:
    prefix = request.app.state.settings.api_prefix + "/organization/visualization"
    return f"{prefix}/view", f"{prefix}/ws/{session_id}"


def _out(request: Request, session: Session, row: m.DesktopSession) -> DesktopOut:
    cluster = session.get(Cluster, row.cluster_id)
    view, ws = _paths(request, row.id)
    return DesktopOut(id=row.id, cluster=row.cluster_name, state=row.state,
                      ready=row.state == m.RUNNING and bool(row.socket_path), reason=row.reason,
                      end_reason=row.end_reason, job_id=row.job_id, node=row.node, partition=row.partition,
                      cores=row.cores, memory_mb=row.memory_mb, minutes=row.minutes, gpus=row.gpus,
                      work_dir=row.work_dir, instance_id=row.instance_id, idle_minutes=row.idle_minutes,
                      created_at=row.created_at, expected_start=row.expected_start, started_at=row.started_at,
                      ended_at=row.ended_at, usage=sessions.usage(row, cluster), connect_path=view,
                      websocket_path=ws)


@router.post("/organization/visualization/session", status_code=201, response_model=DesktopOut,
             summary="Start a desktop (a VNC server in a Slurm job) on one of your clusters")
def create(request: Request, body: DesktopIn, principal: Principal = Depends(any_user)):
    bind_clusters(request.app)  # tests run several apps in one process
    settings = request.app.state.settings
    spec = sessions.DesktopSpec(**body.model_dump())
    with request.app.state.sessions() as session:
        row, cluster, list_outputs = sessions.plan(session, principal, spec, settings)
        session.commit()  # the intent is recorded before sbatch runs
        session.expunge(cluster)
        session.expunge(row)
    try:
        job_id, start_at, _note = sessions.submit(row, cluster, list_outputs, settings.visualization_energy)
    except Exception:
        # refused or never sent: no job can exist, so the intent goes and nothing is half-written
        with request.app.state.sessions() as session:
            session.delete(session.get(m.DesktopSession, row.id))
            session.commit()
        raise
    with request.app.state.sessions() as session:
        work_dir, session_dir = row.work_dir, row.session_dir
        row = session.get(m.DesktopSession, row.id)
        row.work_dir, row.session_dir, row.expected_start = work_dir, session_dir, start_at
        if job_id is not None:
            row.job_id, row.state = job_id, m.PENDING
        session.commit()
        out = _out(request, session, row)
    request.app.state.reconciler.wake(cluster.id)
    if job_id is None:
        raise Unavailable(f"cluster {cluster.name} did not answer sbatch; desktop {row.id} is recorded and will be "
                          "found by its name if Slurm took it")
    return out


@router.get("/organization/visualization/session", response_model=list[DesktopOut], summary="Your desktops")
def list_desktops(request: Request, live: bool = False, principal: Principal = Depends(any_user),
                  session: Session = Depends(get_session, scope="function")):
    query = select(m.DesktopSession).where(m.DesktopSession.organization == principal.organization,
                                           m.DesktopSession.username == principal.username)
    if live:
        query = query.where(m.DesktopSession.state.in_(m.LIVE))
    rows = session.scalars(query.order_by(m.DesktopSession.created_at.desc()).limit(200))
    return [_out(request, session, r) for r in rows]


@router.get("/organization/visualization/session/{session_id}", response_model=DesktopOut,
            summary="One desktop: state, node, time left, usage, where to connect")
def get_desktop(request: Request, session_id: str, principal: Principal = Depends(any_user),
                session: Session = Depends(get_session, scope="function")):
    return _out(request, session, sessions.find_own(session, principal, session_id))


@router.delete("/organization/visualization/session/{session_id}", response_model=DesktopOut,
               summary="End a desktop (scancel)")
def delete_desktop(request: Request, session_id: str, principal: Principal = Depends(any_user),
                   session: Session = Depends(get_session, scope="function")):
    bind_clusters(request.app)  # tests run several apps in one process
    row = sessions.find_own(session, principal, session_id)
    if row.state in m.LIVE:
        sessions.end(row, session.get(Cluster, row.cluster_id), m.DELETED)
        session.flush()
    return _out(request, session, row)


@router.post("/organization/visualization/session/{session_id}/ticket", response_model=TicketOut,
             summary="A one-time ticket for your desktop's websocket (full access)")
def owner_ticket(request: Request, session_id: str, principal: Principal = Depends(any_user),
                 session: Session = Depends(get_session, scope="function")):
    row = sessions.find_own(session, principal, session_id)
    return _ticket(request, session, row, principal.username, view_only=False)


@router.post("/organization/visualization/session/{session_id}/share", response_model=ShareOut, status_code=201,
             summary="A view-only link for another member of your organization, until it expires")
def share(request: Request, session_id: str, body: ShareIn, principal: Principal = Depends(any_user),
          session: Session = Depends(get_session, scope="function")):
    row = sessions.find_own(session, principal, session_id)
    if row.state not in m.LIVE:
        raise NotFound("that desktop has ended")
    item = grants.create_share(session, row, principal.username, body.viewer, body.minutes,
                               request.app.state.settings.visualization_share_max_minutes)
    session.flush()
    return _share_out(item, row)


@router.get("/organization/visualization/shared", response_model=list[ShareOut],
            summary="Desktops other members shared with you (view only, not expired)")
def shared_with_me(principal: Principal = Depends(any_user), session: Session = Depends(get_session, scope="function")):
    rows = session.execute(select(m.DesktopShare, m.DesktopSession)
                           .join(m.DesktopSession, m.DesktopSession.id == m.DesktopShare.session_id)
                           .where(m.DesktopShare.organization == principal.organization,
                                  m.DesktopShare.viewer == principal.username,
                                  m.DesktopShare.expires_at > m.utcnow(), m.DesktopSession.state.in_(m.LIVE)))
    return [_share_out(s, d) for s, d in rows]


@router.post("/organization/visualization/share/{share_id}/ticket", response_model=TicketOut,
             summary="A one-time view-only ticket through a link shared with you")
def share_ticket(request: Request, share_id: str, principal: Principal = Depends(any_user),
                 session: Session = Depends(get_session, scope="function")):
    item, row = grants.share_for(session, principal, share_id)
    return _ticket(request, session, row, principal.username, view_only=True, share_id=item.id)


def _share_out(item: m.DesktopShare, row: m.DesktopSession) -> ShareOut:
    return ShareOut(id=item.id, session_id=row.id, owner=row.username, viewer=item.viewer, cluster=row.cluster_name,
                    expires_at=item.expires_at)


def _ticket(request: Request, session: Session, row: m.DesktopSession, username: str, *, view_only: bool,
            share_id: str | None = None) -> TicketOut:
    if row.state != m.RUNNING or not row.socket_path:
        raise NotFound(f"desktop {row.id} is not ready ({row.state.lower()})")
    ttl = request.app.state.settings.visualization_ticket_s
    secret = grants.issue_ticket(session, row, username, view_only=view_only, ttl_s=ttl, share_id=share_id)
    view, ws = _paths(request, row.id)
    fragment = f"#session={row.id}&ticket={secret}" + ("&view=1" if view_only else "")
    return TicketOut(ticket=secret, expires_in_s=ttl, view_only=view_only, websocket_path=ws, view_url=view + fragment)


@router.websocket("/organization/visualization/ws/{session_id}")
async def desktop_socket(websocket: WebSocket, session_id: str):
    granted = await bridge.authorize(websocket, session_id)
    if granted is None:
        await websocket.close(code=1008)  # before accept: the handshake is answered 403
        return
    row, cluster, view_only = granted
    app = websocket.app
    await bridge.serve(websocket, row, cluster, view_only, app.state.desktop_viewers,
                       app.state.settings.visualization_bridge)


# --- the page and its static files (public: no secrets, no data) -------------------------------------------
@router.get("/organization/visualization/view", response_class=Response, summary="The desktop page (noVNC)")
def view_page():
    return FileResponse(STATIC / "desktop.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/organization/visualization/static/{name}", response_class=Response, summary="The page's own files")
def static_file(name: str):
    if name not in {"desktop.js", "desktop.css"}:
        raise NotFound("no such file")
    return FileResponse(STATIC / name, media_type=mimetypes.guess_type(name)[0], headers=PAGE_HEADERS)


@router.get("/organization/visualization/novnc/{path:path}", response_class=Response,
            summary="The noVNC client's files (Debian's novnc package)")
def novnc_file(path: str):
    target = (NOVNC / path).resolve()
    if not target.is_relative_to(NOVNC.resolve()) or not target.is_file() or target.suffix not in {".js", ".css"}:
        raise NotFound("no such file")
    return FileResponse(target, media_type="text/javascript" if target.suffix == ".js" else "text/css",
                        headers={"Cache-Control": "max-age=3600"})
