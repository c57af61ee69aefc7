"""Storage tests on both backends: SQLite files and a real PostgreSQL server, each test on a fresh database.

A test that takes ``database_url`` runs twice: ``[sqlite]`` on a file in its ``tmp_path`` and
``[postgresql]`` on a database created for it (``CREATE DATABASE imagine_test_<random>``, from the
server's maintenance database, dropped after the test). ``databases.new()`` makes one more on the
same backend. The server is ``IMAGINE_TEST_POSTGRES_URL`` (default ``DEFAULT_POSTGRES_URL``); each
test database runs in a time zone far from UTC, so nothing may depend on the server's zone.

Without a reachable server the ``[postgresql]`` cases skip and the run ends with one line that says
how to run them; under ``CI=true`` they fail instead (``.ci/run`` starts the server before the tests).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from bot.storage.db import default_url

POSTGRES_URL_ENV = "IMAGINE_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TEST_TIME_ZONE = "Pacific/Chatham"  # UTC+12:45 or +13:45: a server-zone bug cannot hide behind whole hours

_UNREACHABLE = pytest.StashKey[str]()  # why the server could not be reached (tried once per run)
_SKIPPED = pytest.StashKey[int]()


def postgres_server_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL


def _where(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def _required() -> bool:
    """Under CI (``CI=true``) a missing server is an error, not a skip."""
    return os.environ.get("CI") == "true"


class Databases:
    """Fresh databases on one backend for one test; ``drop_all()`` removes the server's ones."""

    def __init__(self, backend: str, tmp_path: Path, server: AsyncEngine | None) -> None:
        self.backend = backend
        self._tmp_path = tmp_path
        self._server = server
        self._created: list[str] = []

    async def new(self) -> str:
        """The URL of a new, empty database."""
        if self._server is None:
            directory = self._tmp_path / f"db{len(self._created)}"
            directory.mkdir()
            self._created.append(str(directory))
            return default_url(directory)
        name = f"imagine_test_{uuid.uuid4().hex[:16]}"
        async with self._server.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
            self._created.append(name)
            await conn.execute(text(f"ALTER DATABASE \"{name}\" SET timezone TO '{TEST_TIME_ZONE}'"))
        return make_url(postgres_server_url()).set(database=name).render_as_string(hide_password=False)

    async def drop_all(self) -> None:
        if self._server is None:
            return
        async with self._server.connect() as conn:
            for name in self._created:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _server_engine(config: pytest.Config) -> AsyncEngine:
    """An autocommit engine on the maintenance database, or skip (fail under CI) when it cannot be reached."""
    url = postgres_server_url()
    reason = config.stash.get(_UNREACHABLE, None)
    engine = None
    if reason is None:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                                     connect_args={"timeout": 10})
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return engine
        except (OSError, SQLAlchemyError, TimeoutError) as exc:
            await engine.dispose()
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            config.stash[_UNREACHABLE] = reason
    message = f"PostgreSQL at {_where(url)} not reachable ({reason})"
    if _required():
        pytest.fail(f"CI=true but {message}; .ci/run starts it, or set {POSTGRES_URL_ENV}")
    config.stash[_SKIPPED] = config.stash.get(_SKIPPED, 0) + 1
    pytest.skip(message)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def databases(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Databases]:
    """Fresh databases for this test on the parametrized backend (``[sqlite]`` or ``[postgresql]``)."""
    backend = str(request.param)
    server = await _server_engine(request.config) if backend == "postgresql" else None
    managed = Databases(backend, tmp_path, server)
    try:
        yield managed
    finally:
        try:
            await managed.drop_all()
        finally:
            if server is not None:
                await server.dispose()


@pytest.fixture
async def database_url(databases: Databases) -> str:
    """The URL of a fresh, empty database on the parametrized backend."""
    return await databases.new()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """One line at the end when the PostgreSQL cases were skipped, saying how to run them."""
    skipped = config.stash.get(_SKIPPED, 0)
    if skipped:
        terminalreporter.write_line(
            f"PostgreSQL at {_where(postgres_server_url())} not reachable: {skipped} tests skipped; "
            f"start it or set {POSTGRES_URL_ENV} ({config.stash.get(_UNREACHABLE, '')})")
