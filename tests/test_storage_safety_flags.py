"""Schema v5: the safety checker's flag is stored with each result image, and images stored before it read as
unchecked. On both backends (``database_url``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, text

from bot.storage import Storage, migrate
from generation.request import GenerationRequest
from tests.bot_harness import png
from tests.test_storage_migrations import insert_v1_job, run


async def test_flags_are_stored_per_image_and_unchecked_images_have_none(tmp_path: Path, database_url: str) -> None:
    async with Storage(tmp_path, database_url) as storage:
        checked = await storage.create_job(GenerationRequest("a fox", seed=1, count=2, check_safety=True), user_id=7)
        await storage.save_result_images(checked.id, [png("red"), png("blue")], [1, 2], [True, False])
        unchecked = await storage.create_job(GenerationRequest("a cat", seed=3), user_id=7)
        await storage.save_result_images(unchecked.id, [png("green")], [3])
    async with Storage(tmp_path, database_url) as storage:  # read back after a restart
        assert [image.nsfw for image in await storage.list_results(checked.id)] == [True, False]
        assert [image.nsfw for image in await storage.list_results(unchecked.id)] == [None]
        assert (await storage.require_job(checked.id)).request.check_safety is True
        assert (await storage.require_job(unchecked.id)).request.check_safety is False


def _insert_v4_result(conn: Connection) -> None:
    insert_v1_job(conn)
    conn.execute(text("INSERT INTO results (job_id, image_index, seed, path, width, height, size_bytes, created_at) "
                      "VALUES (:id, 0, 3, 'images/a.png', 64, 64, 10, :created)"),
                 {"id": "a" * 32, "created": datetime(2030, 1, 1, tzinfo=UTC)})


async def test_results_made_before_v5_read_as_unchecked(tmp_path: Path, database_url: str) -> None:
    await run(database_url, migrate, 4)
    await run(database_url, _insert_v4_result)
    async with Storage(tmp_path, database_url) as storage:
        assert [image.nsfw for image in await storage.list_results("a" * 32)] == [None]
