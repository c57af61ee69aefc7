"""Engine set-up: the default SQLite URL and the SQLite settings that make it behave like a server database."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_log = logging.getLogger(__name__)


def default_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'imagine.db').resolve()}"


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url``; for SQLite: foreign keys on, WAL, a busy timeout, transactional DDL."""
    engine = create_async_engine(url, echo=echo)
    if engine.dialect.name == "sqlite":
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # The driver's own transaction handling skips BEGIN before DDL; take it over so that
            # a failed migration rolls back (SQLAlchemy's documented recipe for pysqlite/aiosqlite).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in ("foreign_keys=ON", "journal_mode=WAL", "busy_timeout=5000", "synchronous=NORMAL"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
