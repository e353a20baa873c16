"""Who may open a websocket to a desktop: one-time tickets, and view-only shares that expire.

Browsers cannot put an ``Authorization`` header on a websocket, and a token in the URL ends up in proxy and
hub access logs. So a caller who is authenticated on a normal API request (hub token or Keycloak token)
asks for a ticket: 48 random hex characters, valid ``visualization_ticket_s`` seconds, spent on first use,
stored only as a SHA-256. The browser sends it in the ``Sec-WebSocket-Protocol`` header (never logged,
never in a URL); the bridge spends it in one UPDATE, so two sockets can never share one ticket.

A share lets one named member of the same organization (or any member, ``viewer`` empty) get view-only
tickets until it expires; the owner's tickets are full-access.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..errors import Invalid, NotFound
from . import models as m


def issue_ticket(session: Session, row: m.DesktopSession, username: str, *, view_only: bool, ttl_s: int,
                 share_id: str | None = None) -> str:
    secret = m.new_secret()
    session.add(m.DesktopTicket(secret_hash=m.digest(secret), session_id=row.id, username=username,
                                view_only=view_only, share_id=share_id,
                                expires_at=m.utcnow() + timedelta(seconds=ttl_s)))
    return secret


def spend_ticket(session: Session, secret: str, session_id: str) -> m.DesktopTicket | None:
    """The ticket, marked used, if it is valid for ``session_id`` now; None otherwise (wrong, used, expired)."""
    if not secret or len(secret) > 128:
        return None
    now = m.utcnow()
    hashed = m.digest(secret)
    result = session.execute(update(m.DesktopTicket)
                             .where(m.DesktopTicket.secret_hash == hashed, m.DesktopTicket.session_id == session_id,
                                    m.DesktopTicket.used_at.is_(None), m.DesktopTicket.expires_at > now)
                             .values(used_at=now))
    session.commit()
    if result.rowcount != 1:
        return None
    ticket = session.get(m.DesktopTicket, hashed)
    if ticket is not None and ticket.share_id and usable_share(session, ticket.share_id) is None:
        return None  # the share expired or was removed between the ticket and the connection
    return ticket


def create_share(session: Session, row: m.DesktopSession, created_by: str, viewer: str, minutes: float,
                 max_minutes: int) -> m.DesktopShare:
    if not 0 < minutes <= max_minutes:
        raise Invalid(f"a view-only link lasts at most {max_minutes} minutes", rule="minutes")
    if viewer == created_by:
        raise Invalid("you already have full access to your own desktop", rule="viewer")
    share = m.DesktopShare(id=m.new_id(), viewer=viewer, session_id=row.id, organization=row.organization,
                           created_by=created_by, expires_at=m.utcnow() + timedelta(minutes=minutes))
    session.add(share)
    return share


def usable_share(session: Session, share_id: str) -> m.DesktopShare | None:
    share = session.get(m.DesktopShare, share_id) if len(share_id) <= 32 else None
    if share is None or m.aware(share.expires_at) <= m.utcnow():
        return None
    return share


def share_for(session: Session, principal, share_id: str) -> tuple[m.DesktopShare, m.DesktopSession]:
    """The share and its desktop, if ``principal`` may watch through it now; 404 otherwise (expired too)."""
    share = usable_share(session, share_id)
    if share is None or share.organization != principal.organization or \
            (share.viewer and share.viewer != principal.username):
        raise NotFound(f"view-only link {share_id[:32]!r} not found or expired")
    row = session.get(m.DesktopSession, share.session_id)
    if row is None or row.state not in m.LIVE:
        raise NotFound("that desktop has ended")
    return share, row
