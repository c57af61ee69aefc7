"""Schema migrations on real SQLite files: upgrade from v1, idempotence, atomicity, and models in step."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, inspect, text

from bot.core.errors import StorageError
from bot.storage import LATEST_VERSION, MIGRATIONS, Migration, Storage, migrate
from bot.storage.db import default_url, make_engine
from bot.storage.migrations import current_version
from bot.storage.models import Base
from generation.request import GenerationRequest


async def run(tmp_path: Path, function: Any, *args: Any) -> Any:
    engine = make_engine(default_url(tmp_path))
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


async def test_fresh_database_is_at_latest_and_matches_the_models(tmp_path: Path) -> None:
    async with Storage(tmp_path) as storage:
        assert await storage.schema_version() == LATEST_VERSION == MIGRATIONS[-1].version
    migrated = await run(tmp_path, schema)
    expected_dir = tmp_path / "from_models"
    expected_dir.mkdir()

    def from_models(conn: Connection) -> dict[str, Any]:
        Base.metadata.create_all(conn)
        return schema(conn)

    expected = await run(expected_dir, from_models)
    assert migrated == expected


async def test_upgrade_from_v1_keeps_jobs(tmp_path: Path) -> None:
    assert await run(tmp_path, migrate, 1) == [1]
    await run(tmp_path, insert_v1_job)
    assert "guild_settings" not in await run(tmp_path, lambda conn: inspect(conn).get_table_names())
    async with Storage(tmp_path) as storage:
        assert await storage.schema_version() == LATEST_VERSION
        job = await storage.require_job("a" * 32)
        assert (job.request, job.seeds, job.role_ids, job.deleted_at) == (
            GenerationRequest("old fox", seed=3), (3,), (1,), None)
        assert [j.id for j in await storage.requeue_interrupted()] == ["a" * 32]
        await storage.set_guild_settings(1, {"a": 1})  # v2 table works
        await storage.mark_deleted(job.id)  # v2 column works


async def test_rerunning_is_a_no_op(tmp_path: Path) -> None:
    assert await run(tmp_path, migrate) == [version.version for version in MIGRATIONS]
    rows_before = await run(tmp_path, lambda conn: conn.execute(text("SELECT * FROM schema_version")).all())
    assert await run(tmp_path, migrate) == []
    async with Storage(tmp_path) as storage:
        assert await storage.schema_version() == LATEST_VERSION
    assert await run(tmp_path, lambda conn: conn.execute(text("SELECT * FROM schema_version")).all()) == rows_before


async def test_a_failing_migration_leaves_the_database_unchanged(tmp_path: Path) -> None:
    await run(tmp_path, migrate)

    def broken(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE contests (id INTEGER PRIMARY KEY)"))
        conn.execute(text("ALTER TABLE jobs ADD COLUMN contest_id INTEGER"))
        raise RuntimeError("step failed half way")

    with pytest.raises(RuntimeError, match="half way"):
        await run(tmp_path, migrate, None, (*MIGRATIONS, Migration(LATEST_VERSION + 1, "contests", broken)))
    assert await run(tmp_path, current_version) == LATEST_VERSION
    tables = await run(tmp_path, lambda conn: inspect(conn).get_table_names())
    assert "contests" not in tables
    columns = await run(tmp_path, lambda conn: [c["name"] for c in inspect(conn).get_columns("jobs")])
    assert "contest_id" not in columns


async def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    await run(tmp_path, migrate)
    await run(tmp_path, lambda conn: conn.execute(text(
        "INSERT INTO schema_version (version, description, applied_at) VALUES (99, 'future', '2031-01-01')")))
    with pytest.raises(StorageError, match="version 99, newer than this bot's"):
        await Storage(tmp_path).open()
