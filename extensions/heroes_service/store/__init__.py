"""The service's database: SQLAlchemy 2 models, one engine per app, Alembic migrations applied at start.

SQLite (WAL, foreign keys on) is the default, under ``<state_dir>/data/heroes-service/heroes.db``;
PostgreSQL URLs (``postgresql+psycopg://`` or ``postgresql+psycopg2://``) work the same way.

Durability of the "intent committed before sbatch" rule (decided with the submit benchmark, issue 15): with
SQLite, WAL + ``synchronous=NORMAL`` keeps every commit through any crash or kill of the service process (the
WAL is in the OS's page cache before sbatch runs); only a power loss or kernel crash of the service host can
drop the last commits, and then an intent could vanish after its sbatch ran: an orphan job nobody tracks
(never a duplicate: without an intent nothing is retried). That is accepted for the single-host SQLite
setup; ``synchronous=FULL`` would add an fsync to each of the submit path's commits. PostgreSQL, the
production store, keeps its default ``synchronous_commit=on`` (WAL flushed to disk before COMMIT returns), so
there the rule holds through a power loss too: do not turn it off for this database.

Other capabilities add their models to their own modules (importing ``Base`` from here) and their
migrations to ``store/migrations/versions/`` chained after this package's revisions; the service applies
every head at start, so parallel branches are fine.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fastapi import Request
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class Base(DeclarativeBase):
    """Declarative base of every table of the service."""


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # why: SQLite defaults to no FK checks and rollback journal
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives any crash of the service (what "intent before sbatch" needs) without
            # an fsync per commit; only a power loss can drop the last commits, never corrupt the file
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def migrate(engine: Engine) -> None:
    """Apply every Alembic migration up to all heads (programmatic config: no alembic.ini)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "heads")


def session_factory(engine: Engine, **info) -> sessionmaker[Session]:
    """Sessions of one app; ``info`` (e.g. ``settings``) is on every ``session.info``, so lifecycle hooks
    that only get a session can reach the app's own settings instead of the process-wide ones."""
    return sessionmaker(bind=engine, expire_on_commit=False, info=dict(info))


def get_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: a session in a transaction, committed when the route returns, else rolled back.

    Routes that must know the outcome before answering (to undo a Keycloak change when the database
    refuses) call ``session.commit()`` themselves inside their own try block.
    """
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


from . import models  # noqa: E402,F401  (register the tables on Base.metadata)

__all__ = ["Base", "make_engine", "migrate", "session_factory", "get_session", "models"]
