"""Schema migrations on real SQLite files and a real PostgreSQL: upgrade from v1, idempotence, atomicity, models
in step. Each test runs on both backends (``database_url``, from ``tests/storage_backends.py``)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, inspect, make_url, select, text
from sqlalchemy.ext.asyncio import create_async_engine

import bot.features.moderation.tables  # noqa: F401  (features declare their tables on Base.metadata too)
from bot.core.errors import StorageError
from bot.features.contests import tables as contest_tables
from bot.storage import LATEST_VERSION, MIGRATIONS, Migration, Storage, migrate
from bot.storage.db import default_url, make_engine
from bot.storage.migrations import MIGRATION_LOCK_ID, current_version
from bot.storage.models import Base
from generation.request import GenerationRequest
from tests.storage_backends import Databases


async def run(url: str, function: Any, *args: Any) -> Any:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(function, *args)
    finally:
        await engine.dispose()


# Features declare their tables in their own package (on a base of their own); the latest schema includes them.
FEATURE_METADATA = (contest_tables.ContestBase.metadata,)


def schema(conn: Connection) -> dict[str, Any]:
    inspector = inspect(conn)
    return {
        table: {
            "columns": {c["name"]: (type(c["type"]).__name__, c["nullable"]) for c in inspector.get_columns(table)},
            "indexes": sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
        }
        for table in inspector.get_table_names() if table != "schema_version"
    }


def insert_v1_job(conn: Connection) -> None:
    conn.execute(text(
        "INSERT INTO jobs (id, kind, user_id, role_ids, request, seeds, status, created_at, timings) "
        "VALUES (:id, 'imagine', 7, '[1]', :request, '[3]', 'queued', :created, '{}')"),
        {"id": "a" * 32, "request": '{"prompt": "old fox", "seed": 3, "count": 1}',
         "created": datetime(2030, 1, 1, tzinfo=UTC)})


async def test_fresh_database_is_at_latest_and_matches_the_models(tmp_path: Path, databases: Databases,
                                                                  database_url: str) -> None:
    async with Storage(tmp_path, database_url) as storage:
        assert await storage.schema_version() == LATEST_VERSION == MIGRATIONS[-1].version
    migrated = await run(database_url, schema)

    def from_models(conn: Connection) -> dict[str, Any]:
        Base.metadata.create_all(conn)
        for metadata in FEATURE_METADATA:
            metadata.create_all(conn)
        return schema(conn)

    expected = await run(await databases.new(), from_models)
    assert migrated == expected


async def test_upgrade_from_v1_keeps_jobs(tmp_path: Path, database_url: str) -> None:
    assert await run(database_url, migrate, 1) == [1]
    await run(database_url, insert_v1_job)
    assert "guild_settings" not in await run(database_url, lambda conn: inspect(conn).get_table_names())
    async with Storage(tmp_path, database_url) as storage:
        assert await storage.schema_version() == LATEST_VERSION
        job = await storage.require_job("a" * 32)
        assert (job.request, job.seeds, job.role_ids, job.deleted_at) == (
            GenerationRequest("old fox", seed=3), (3,), (1,), None)
        assert [j.id for j in await storage.requeue_interrupted()] == ["a" * 32]
        await storage.set_guild_settings(1, {"a": 1})  # v2 table works
        await storage.mark_deleted(job.id)  # v2 column works


async def test_upgrade_from_v4_keeps_refusals_without_a_reason(tmp_path: Path, database_url: str) -> None:
    assert await run(database_url, migrate, 4) == [1, 2, 3, 4]

    def insert_refused(conn: Connection) -> None:
        conn.execute(text(
            "INSERT INTO jobs (id, kind, user_id, role_ids, request, seeds, status, error, created_at, finished_at, "
            "timings, delivery) VALUES (:id, 'imagine', 7, '[]', '{\"prompt\": \"no\"}', '[]', 'refused', "
            "'too fast', :at, :at, '{}', 'delivered')"), {"id": "b" * 32, "at": datetime(2030, 1, 1, tzinfo=UTC)})

    await run(database_url, insert_refused)
    async with Storage(tmp_path, database_url) as storage:
        assert await storage.schema_version() == LATEST_VERSION
        job = await storage.require_job("b" * 32)
        assert (job.status, job.error, job.refusal) == ("refused", "too fast", None)


async def test_rerunning_is_a_no_op(tmp_path: Path, database_url: str) -> None:
    assert await run(database_url, migrate) == [version.version for version in MIGRATIONS]
    rows_before = await run(database_url, lambda conn: conn.execute(text("SELECT * FROM schema_version")).all())
    assert await run(database_url, migrate) == []
    async with Storage(tmp_path, database_url) as storage:
        assert await storage.schema_version() == LATEST_VERSION
    assert await run(database_url, lambda conn: conn.execute(text("SELECT * FROM schema_version")).all()) == rows_before


async def test_a_failing_migration_leaves_the_database_unchanged(database_url: str) -> None:
    await run(database_url, migrate)

    def broken(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE trophies (id INTEGER PRIMARY KEY)"))
        conn.execute(text("ALTER TABLE jobs ADD COLUMN trophy_id INTEGER"))
        raise RuntimeError("step failed half way")

    with pytest.raises(RuntimeError, match="half way"):
        await run(database_url, migrate, None, (*MIGRATIONS, Migration(LATEST_VERSION + 1, "trophies", broken)))
    assert await run(database_url, current_version) == LATEST_VERSION
    tables = await run(database_url, lambda conn: inspect(conn).get_table_names())
    assert "trophies" not in tables
    columns = await run(database_url, lambda conn: [c["name"] for c in inspect(conn).get_columns("jobs")])
    assert "trophy_id" not in columns


async def test_a_newer_database_is_refused(tmp_path: Path, database_url: str) -> None:
    await run(database_url, migrate)
    await run(database_url, lambda conn: conn.execute(text(
        "INSERT INTO schema_version (version, description, applied_at) VALUES (99, 'future', '2031-01-01')")))
    refused = Storage(tmp_path, database_url)
    with pytest.raises(StorageError, match="version 99, newer than this bot's"):
        await refused.open()
    with pytest.raises(StorageError, match="not open"):  # its engine is closed, not half open
        await refused.schema_version()


async def test_two_processes_opening_a_fresh_database_migrate_it_once(tmp_path: Path, database_url: str) -> None:
    """Two bots started at once on one new database (two engines): both open, each step is applied once."""
    first, second = Storage(tmp_path, database_url), Storage(tmp_path, database_url)
    try:
        await asyncio.gather(first.open(), second.open())
        assert await first.schema_version() == await second.schema_version() == LATEST_VERSION
    finally:
        await first.close()
        await second.close()
    versions = await run(database_url, lambda conn: conn.execute(text("SELECT version FROM schema_version")).all())
    assert sorted(row.version for row in versions) == [migration.version for migration in MIGRATIONS]


async def migration_lock_is_free(url: str) -> bool:
    """Whether another process could take the migration lock now (asked without waiting for it)."""
    if make_url(url).get_backend_name() == "sqlite":
        def try_write_lock() -> bool:
            probe = sqlite3.connect(str(make_url(url).database), timeout=0, isolation_level=None)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                return True
            except sqlite3.OperationalError as exc:
                assert "locked" in str(exc)
                return False
            finally:
                probe.close()

        return await asyncio.to_thread(try_write_lock)
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:  # the transaction, and a lock it got, end with the block
            return bool((await conn.execute(select(func.pg_try_advisory_xact_lock(MIGRATION_LOCK_ID)))).scalar_one())
    finally:
        await engine.dispose()


async def test_a_migration_holds_the_lock_until_it_commits(tmp_path: Path, database_url: str) -> None:
    """A second process that starts while the first is migrating waits for it, then has nothing to do."""
    engine = make_engine(database_url)
    second = Storage(tmp_path, database_url)
    try:
        assert await migration_lock_is_free(database_url)
        async with engine.begin() as conn:
            assert await conn.run_sync(migrate) == [migration.version for migration in MIGRATIONS]
            assert not await migration_lock_is_free(database_url)
            opening = asyncio.create_task(second.open())
        await opening  # the first committed: the second finds the schema current
        assert await second.schema_version() == LATEST_VERSION
    finally:
        await second.close()
        await engine.dispose()
    assert await migration_lock_is_free(database_url)
    versions = await run(database_url, lambda conn: conn.execute(text("SELECT version FROM schema_version")).all())
    assert sorted(row.version for row in versions) == [migration.version for migration in MIGRATIONS]


async def test_sqlite_migration_needs_the_engine_that_takes_the_write_lock(tmp_path: Path) -> None:
    plain = create_async_engine(default_url(tmp_path))
    try:
        async with plain.begin() as conn:
            with pytest.raises(StorageError, match=r"needs a connection from bot\.storage\.db\.make_engine"):
                await conn.run_sync(migrate)
    finally:
        await plain.dispose()
