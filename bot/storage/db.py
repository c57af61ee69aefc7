"""Engine set-up: the default SQLite URL, async drivers for plain URLs, and the SQLite settings that make it
behave like a server database (PostgreSQL through asyncpg needs none)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_log = logging.getLogger(__name__)

# Set in a SQLite connection's ``info`` once it runs transactions that start with the write lock.
SQLITE_WRITE_LOCKED = "imagine.sqlite_begin_immediate"
SQLITE_BUSY_TIMEOUT_MS = 30_000  # how long a transaction waits for another process's write lock


def default_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'imagine.db').resolve()}"


# A URL that names no driver gets the async one this project ships (``postgresql://`` would mean psycopg2).
_ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}


def _json(value: Any) -> str:
    """JSON columns as both databases accept them: PostgreSQL refuses NaN and infinities, so they fail on SQLite too."""
    return json.dumps(value, allow_nan=False)


def async_url(url: str) -> URL:
    """``url`` with the async driver for its database when it names none; others are left as they are."""
    parsed = make_url(url)
    return parsed.set(drivername=_ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername))


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url`` (``async_url``).

    PostgreSQL and other servers: pooled connections are checked before use (the server may restart
    under a long-running bot). SQLite: foreign keys on, WAL, a busy timeout, transactional DDL, and
    every transaction begins with the write lock (``BEGIN IMMEDIATE``): writers queue up instead of
    failing half way, and a migration holds the lock until it commits. A process's sessions share one
    connection and queue for it (no session may open another while it holds the connection).
    """
    parsed = async_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, echo=echo, json_serializer=_json, pool_pre_ping=True)
    # One connection, which sessions wait for in turn: every transaction takes the write lock anyway, and
    # connections that contend for it inside SQLite wait by sleeping (1, 2, 5, 10 ms and longer, more each try),
    # where a session queued here starts the moment the one before it is done.
    engine = create_async_engine(parsed, echo=echo, json_serializer=_json, pool_size=1, max_overflow=0,
                                 pool_timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling skips BEGIN before DDL; take it over so that
        # a failed migration rolls back (SQLAlchemy's documented recipe for pysqlite/aiosqlite).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The busy timeout first: switching a new file to WAL waits for another process's lock too.
        pragmas = f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.info[SQLITE_WRITE_LOCKED] = True

    return engine
