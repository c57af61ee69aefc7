"""Schema migrations on real SQLite files and a real PostgreSQL: upgrade from v1, idempotence, atomicity, models
in step. Each test runs on both backends (``database_url``, from ``tests/storage_backends.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, inspect, text

from bot.core.errors import StorageError
from bot.storage import LATEST_VERSION, MIGRATIONS, Migration, Storage, migrate
from bot.storage.db import make_engine
from bot.storage.migrations import current_version
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
        conn.execute(text("CREATE TABLE contests (id INTEGER PRIMARY KEY)"))
        conn.execute(text("ALTER TABLE jobs ADD COLUMN contest_id INTEGER"))
        raise RuntimeError("step failed half way")

    with pytest.raises(RuntimeError, match="half way"):
        await run(database_url, migrate, None, (*MIGRATIONS, Migration(LATEST_VERSION + 1, "contests", broken)))
    assert await run(database_url, current_version) == LATEST_VERSION
    tables = await run(database_url, lambda conn: inspect(conn).get_table_names())
    assert "contests" not in tables
    columns = await run(database_url, lambda conn: [c["name"] for c in inspect(conn).get_columns("jobs")])
    assert "contest_id" not in columns


async def test_a_newer_database_is_refused(tmp_path: Path, database_url: str) -> None:
    await run(database_url, migrate)
    await run(database_url, lambda conn: conn.execute(text(
        "INSERT INTO schema_version (version, description, applied_at) VALUES (99, 'future', '2031-01-01')")))
    with pytest.raises(StorageError, match="version 99, newer than this bot's"):
        await Storage(tmp_path, database_url).open()

