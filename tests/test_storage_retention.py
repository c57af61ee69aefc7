"""Retention on real SQLite files, on a clock the test moves: what is purged when, what a delete takes
with it, refusals that keep no image, and quota rebuilds that read sums instead of rows."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import event

from bot.storage import InteractionRef, JobRecord, RetentionPolicy, Storage
from generation.request import GenerationRequest

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
POLICY = RetentionPolicy(images_after=timedelta(days=30), jobs_after=timedelta(days=365),
                         tokens_after=timedelta(minutes=15))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def storage(tmp_path: Path, clock: Clock) -> AsyncIterator[Storage]:
    async with Storage(tmp_path, clock=clock) as opened:
        yield opened


def image_files(storage: Storage) -> set[str]:
    return {path.name for path in (storage.data_dir / "images").glob("*.png")}


async def finished_job(storage: Storage, clock: Clock, *, count: int = 1, init_image: bytes | None = None,
                       user_id: int = 1, guild_id: int | None = 9, kind: Any = "imagine",
                       parent: str | None = None) -> JobRecord:
    """A job that ran and made ``count`` images (saved as PNG files), as the recorder stores one."""
    request = GenerationRequest("a fox", seed=10, count=count, init_image=init_image,
                                strength=0.5 if init_image else None)
    job = await storage.create_job(request, user_id=user_id, guild_id=guild_id, kind=kind, parent_job_id=parent,
                                   interaction=InteractionRef(11, f"token-{user_id}", clock.now))
    await storage.update_status(job.id, "running")
    await storage.save_result_images(job.id, [png((index, 0, 0)) for index in range(count)], request.seeds())
    return await storage.update_status(job.id, "done", seeds=request.seeds())


async def test_tokens_then_images_then_records_go_at_their_ages(storage: Storage, clock: Clock) -> None:
    old = [await finished_job(storage, clock, count=2, init_image=png((1, 1, 1))) for _ in range(3)]
    waiting = await storage.create_job(GenerationRequest("still queued", init_image=png((2, 2, 2)), strength=0.5),
                                       user_id=2)
    clock.now = T0 + timedelta(days=20)
    recent = await finished_job(storage, clock, count=1, init_image=png((3, 3, 3)))
    assert len(image_files(storage)) == 7

    clock.now = T0 + timedelta(minutes=14)
    assert not await storage.purge(POLICY)  # nothing is old enough yet
    assert await storage.next_token_expiry(POLICY.tokens_after) == T0 + timedelta(minutes=15)

    clock.now = T0 + timedelta(days=1)
    report = await storage.purge(POLICY, batch_size=2)  # in batches smaller than the work
    assert (report.tokens, report.result_images, report.input_images, report.jobs) == (3, 0, 0, 0)
    assert [(await storage.require_job(job.id)).interaction for job in old] == [None, None, None]
    assert (await storage.require_job(old[0].id)).request.init_image is not None  # images stay 30 days

    clock.now = T0 + timedelta(days=31)
    report = await storage.purge(POLICY, batch_size=2)
    assert (report.result_images, report.input_images, report.jobs) == (6, 3, 0)
    assert image_files(storage) == {f"{recent.id}_0.png"}  # the 20-day-old result stays
    for job in old:
        kept = await storage.require_job(job.id)  # the record stays, without its images
        assert (kept.status, kept.request.prompt, kept.request.init_image) == ("done", "a fox", None)
        assert await storage.load_result_image(job.id, 0) is None and await storage.list_results(job.id) == []
    assert (await storage.require_job(waiting.id)).request.init_image is not None  # queued jobs are never purged
    assert (await storage.require_job(recent.id)).request.init_image is not None

    clock.now = T0 + timedelta(days=366)
    report = await storage.purge(POLICY, batch_size=2)
    assert (report.result_images, report.input_images, report.jobs) == (1, 1, 3)
    assert [await storage.get_job(job.id) for job in old] == [None, None, None]  # then the records go
    assert image_files(storage) == set()
    assert await storage.get_job(recent.id) is not None and await storage.get_job(waiting.id) is not None
    assert not await storage.purge(POLICY)  # nothing left to do: a second run is a no-op


async def test_null_ages_keep_images_and_records_and_deleted_records_take_their_files(storage: Storage,
                                                                                     clock: Clock) -> None:
    job = await finished_job(storage, clock, count=2)
    clock.now = T0 + timedelta(days=4000)
    keep_all = RetentionPolicy(images_after=None, jobs_after=None, tokens_after=timedelta(minutes=15))
    assert (await storage.purge(keep_all)).tokens == 1
    assert len(image_files(storage)) == 2 and await storage.get_job(job.id) is not None
    # Records kept for less time than images: deleting the record takes the images along.
    short = RetentionPolicy(images_after=None, jobs_after=timedelta(days=1), tokens_after=timedelta(minutes=15))
    assert (await storage.purge(short)).jobs == 1
    assert image_files(storage) == set() and await storage.get_job(job.id) is None


async def test_a_purge_cut_off_after_the_files_finishes_next_time(storage: Storage, clock: Clock) -> None:
    job = await finished_job(storage, clock, count=1)
    for path in (storage.data_dir / "images").glob("*.png"):
        path.unlink()  # as if the last purge died between removing the file and its row
    clock.now = T0 + timedelta(days=31)
    assert (await storage.purge(POLICY)).result_images == 1
    assert await storage.list_results(job.id) == []


async def test_deleting_a_result_also_removes_the_copies_its_follow_ups_hold(storage: Storage,
                                                                          clock: Clock) -> None:
    parent = await finished_job(storage, clock, count=2)
    image = await storage.load_result_image(parent.id, 1)
    upscale = await finished_job(storage, clock, init_image=image, kind="upscale", parent=parent.id)
    variation = await finished_job(storage, clock, init_image=image, kind="variation", parent=parent.id)
    unrelated = await finished_job(storage, clock, init_image=png((5, 5, 5)))
    await storage.mark_deleted(parent.id)
    assert (await storage.require_job(upscale.id)).request.init_image is None
    assert (await storage.require_job(variation.id)).request.init_image is None
    assert (await storage.require_job(unrelated.id)).request.init_image == png((5, 5, 5))
    assert await storage.load_result_image(upscale.id, 0) is not None  # follow-ups' own results are theirs


async def test_refused_jobs_keep_no_input_image(storage: Storage) -> None:
    request = GenerationRequest("a fox", init_image=png((1, 2, 3)), strength=0.5)
    refused_at_once = await storage.create_job(request, user_id=1, status="refused")
    assert (await storage.require_job(refused_at_once.id)).request.init_image is None
    stored_then_refused = await storage.create_job(request, user_id=1)
    assert stored_then_refused.request.init_image == png((1, 2, 3))
    await storage.update_status(stored_then_refused.id, "refused", error="too fast")
    assert (await storage.require_job(stored_then_refused.id)).request.init_image is None


async def test_images_made_are_summed_in_the_database_without_reading_images(storage: Storage,
                                                                            clock: Clock) -> None:
    await finished_job(storage, clock, count=3, user_id=1, init_image=png((1, 1, 1)))
    await finished_job(storage, clock, count=2, user_id=1)
    await finished_job(storage, clock, count=4, user_id=2, guild_id=None)
    clock.now = T0 - timedelta(days=1)
    await finished_job(storage, clock, count=4, user_id=1)  # before ``since``
    failed = await storage.create_job(GenerationRequest("a failure", count=4), user_id=1, guild_id=9)
    await storage.update_status(failed.id, "failed")
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = storage._engine
    assert engine is not None
    event.listen(engine.sync_engine, "before_cursor_execute", record)
    made = await storage.images_made_since(T0 - timedelta(hours=1))
    event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert [(m.guild_id, m.user_id, m.images) for m in made] == [(None, 2, 4), (9, 1, 5)]
    selects = [statement for statement in statements if statement.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and "sum(" in selects[0].lower() and "group by" in selects[0].lower()
    assert "init_image" not in selects[0]  # one aggregate over a few columns: no row, no blob is read
