"""Storage on real SQLite files and a real PostgreSQL: jobs survive restarts, lifecycles are enforced, images
live on disk. Each test runs on both backends (``database_url``, from ``tests/storage_backends.py``)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

from bot.core.errors import IllegalTransition, JobNotFound
from bot.storage import InteractionRef, Storage
from generation.request import GenerationRequest

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def storage(tmp_path: Path, database_url: str, clock: Clock) -> AsyncIterator[Storage]:
    async with Storage(tmp_path, database_url, clock=clock) as opened:
        yield opened


REQUEST = GenerationRequest(prompt="a fox", negative_prompt="text", width=768, height=512, steps=30, guidance=6.5,
                            seed=41, count=3, scheduler="euler", model="tiny", init_image=b"\x89PNG-ish", strength=0.6)


async def test_job_round_trips_with_request_and_interaction(storage: Storage) -> None:
    interaction = InteractionRef(application_id=11, token="tok", created_at=T0)
    job = await storage.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, role_ids=[5, 6],
                                   interaction=interaction)
    loaded = await storage.require_job(job.id)
    assert loaded == job
    assert loaded.request == REQUEST and loaded.request.init_image == b"\x89PNG-ish"
    assert (loaded.status, loaded.kind, loaded.seeds, loaded.role_ids) == ("queued", "imagine", (41, 42, 43), (5, 6))
    assert loaded.interaction == interaction and loaded.created_at == T0
    assert loaded.interaction.usable(T0 + timedelta(minutes=13))
    assert not loaded.interaction.usable(T0 + timedelta(minutes=15))
    assert await storage.get_job("f" * 32) is None
    with pytest.raises(JobNotFound, match="no longer stored"):
        await storage.require_job("f" * 32)


async def test_lifecycle_stamps_times_and_illegal_moves_raise(storage: Storage, clock: Clock) -> None:
    job = await storage.create_job(GenerationRequest("a fox"), user_id=1)
    clock.now = T0 + timedelta(seconds=5)
    running = await storage.update_status(job.id, "running", seeds=[7])
    assert running.started_at == clock.now and running.finished_at is None and running.seeds == (7,)
    clock.now = T0 + timedelta(seconds=9)
    done = await storage.update_status(job.id, "done", timings={"denoise_s": 3.5})
    assert done.finished_at == clock.now and done.timings == {"denoise_s": 3.5} and not done.active
    with pytest.raises(IllegalTransition, match="is done; it cannot become cancelled"):
        await storage.update_status(job.id, "cancelled")
    other = await storage.create_job(GenerationRequest("b"), user_id=1)
    with pytest.raises(IllegalTransition, match="is queued; it cannot become done; allowed next: running"):
        await storage.update_status(other.id, "done")
    failed = await storage.update_status(other.id, "failed", error="out of memory")
    assert failed.error == "out of memory"
    with pytest.raises(JobNotFound):
        await storage.update_status("a" * 32, "running")


async def test_restart_keeps_jobs_and_finds_interrupted_ones(tmp_path: Path, database_url: str, clock: Clock) -> None:
    async with Storage(tmp_path, database_url, clock=clock) as first:
        queued = await first.create_job(GenerationRequest("q"), user_id=1, guild_id=9)
        clock.now += timedelta(seconds=1)
        running = await first.create_job(GenerationRequest("r"), user_id=2, guild_id=9)
        await first.update_status(running.id, "running")
        finished = await first.create_job(GenerationRequest("d"), user_id=3)
        await first.update_status(finished.id, "cancelled")
        await first.set_messages(running.id, status_message_id=100)
    async with Storage(tmp_path, database_url, clock=clock) as second:  # a new process after a crash
        active = await second.jobs_in_states(["queued", "running"])
        assert [(job.id, job.status) for job in active] == [(queued.id, "queued"), (running.id, "running")]
        resumed = await second.requeue_interrupted()
        assert [(job.id, job.status, job.started_at) for job in resumed] == [
            (queued.id, "queued", None), (running.id, "queued", None)]
        assert resumed[1].status_message_id == 100
        assert (await second.require_job(finished.id)).status == "cancelled"
        # The first feature to resume starts its jobs; the next feature's call must leave them running (moving
        # them back to the queue would run them twice, or fail on one that finished meanwhile).
        await second.update_status(running.id, "running")
        await second.update_status(queued.id, "running")
        await second.update_status(queued.id, "done")
        assert await second.requeue_interrupted() == []
        assert (await second.require_job(running.id)).status == "running"


async def test_messages_are_recorded(storage: Storage) -> None:
    job = await storage.create_job(GenerationRequest("a"), user_id=1)
    await storage.set_messages(job.id, status_message_id=10)
    updated = await storage.set_messages(job.id, result_message_id=20)
    assert (updated.status_message_id, updated.result_message_id) == (10, 20)
    with pytest.raises(JobNotFound):
        await storage.set_messages("b" * 32, result_message_id=1)


async def test_result_images_are_files_that_survive_restart(tmp_path: Path, database_url: str, clock: Clock) -> None:
    async with Storage(tmp_path, database_url, clock=clock) as storage:
        job = await storage.create_job(GenerationRequest("a", seed=5, count=2), user_id=1)
        saved = await storage.save_result_images(job.id, [png((255, 0, 0)), png((0, 0, 255), (32, 64))], [5, 6])
        assert [(r.index, r.seed, r.width, r.height) for r in saved] == [(0, 5, 64, 32), (1, 6, 32, 64)]
        assert saved[0].path == tmp_path / "images" / f"{job.id}_0.png" and saved[0].path.exists()
    async with Storage(tmp_path, database_url, clock=clock) as reopened:
        data = await reopened.load_result_image(job.id, 1)
        assert data is not None
        assert Image.open(io.BytesIO(data)).getpixel((0, 0)) == (0, 0, 255)
        assert await reopened.load_result_image(job.id, 2) is None
        assert [r.index for r in await reopened.list_results(job.id)] == [0, 1]
        # Saving again (e.g. an upscale replaced them) replaces rows and drops stale files.
        await reopened.save_result_images(job.id, [png((0, 255, 0))], [5])
        assert not (tmp_path / "images" / f"{job.id}_1.png").exists()
        assert await reopened.load_result_image(job.id, 1) is None
        with pytest.raises(ValueError, match="the data is not an image"):
            await reopened.save_result_images(job.id, [b"not an image"], [1])


async def test_a_result_is_stored_with_done_in_one_commit_and_kept_when_a_cancel_came_first(
        storage: Storage, clock: Clock) -> None:
    job = await storage.create_job(GenerationRequest("a", seed=5, count=2), user_id=1, guild_id=9)
    await storage.update_status(job.id, "running")
    clock.now = T0 + timedelta(seconds=7)
    done = await storage.store_result(job.id, [png((255, 0, 0)), png((0, 0, 255))], [5, 6], [False, True],
                                      timings={"denoise_s": 1.5})
    assert (done.status, done.seeds, done.finished_at, done.delivery) == ("done", (5, 6), clock.now, "owed")
    assert done.timings == {"denoise_s": 1.5}
    assert [(r.index, r.seed, r.nsfw) for r in await storage.list_results(job.id)] == [(0, 5, False), (1, 6, True)]

    cancelled = await storage.create_job(GenerationRequest("b", seed=1), user_id=1, guild_id=9)
    await storage.update_status(cancelled.id, "cancelled")  # the person's cancel was stored first
    with pytest.raises(IllegalTransition):
        await storage.store_result(cancelled.id, [png((0, 255, 0))], [1])
    assert (await storage.require_job(cancelled.id)).status == "cancelled"
    assert await storage.load_result_image(cancelled.id, 0) is not None  # what ran is kept, as a save would

    with pytest.raises(JobNotFound):
        await storage.store_result("c" * 32, [png((1, 2, 3))], [1])
    assert not list((storage.data_dir / "images").glob("c" * 32 + "_*"))  # no file left without its job


async def test_user_history_and_deletion(storage: Storage, clock: Clock) -> None:
    ids = []
    for number in range(4):
        clock.now = T0 + timedelta(minutes=number)
        job = await storage.create_job(GenerationRequest(f"p{number}"), user_id=1, guild_id=9)
        ids.append(job.id)
    await storage.create_job(GenerationRequest("other guild"), user_id=1, guild_id=8)
    await storage.create_job(GenerationRequest("dm"), user_id=1)
    recent = await storage.list_user_jobs(9, 1, limit=3)
    assert [job.request.prompt for job in recent] == ["p3", "p2", "p1"]
    assert [job.request.prompt for job in await storage.list_user_jobs(None, 1)] == ["dm"]

    await storage.save_result_images(ids[3], [png((1, 2, 3))], [0])
    deleted = await storage.mark_deleted(ids[3])
    assert deleted.deleted_at is not None and deleted.interaction is None
    assert await storage.load_result_image(ids[3], 0) is None
    assert not list((storage.data_dir / "images").glob(f"{ids[3]}_*"))
    assert [job.request.prompt for job in await storage.list_user_jobs(9, 1)] == ["p2", "p1", "p0"]

    await storage.save_result_images(ids[0], [png((1, 2, 3))], [0])
    assert await storage.delete_job(ids[0]) is True
    assert await storage.get_job(ids[0]) is None and await storage.list_results(ids[0]) == []
    assert await storage.delete_job(ids[0]) is False


async def test_guild_settings(storage: Storage) -> None:
    assert await storage.get_guild_settings(5) == {}
    await storage.set_guild_settings(5, {"max_count": 2})
    await storage.set_guild_settings(5, {"max_count": 3, "styles": {"a": "{prompt}"}})
    assert await storage.get_guild_settings(5) == {"max_count": 3, "styles": {"a": "{prompt}"}}


async def test_refused_jobs_are_recorded_finished(storage: Storage) -> None:
    job = await storage.create_job(GenerationRequest("a"), user_id=1, status="refused")
    assert job.finished_at == T0
    with pytest.raises(IllegalTransition):
        await storage.update_status(job.id, "queued")


async def test_a_refusal_keeps_the_key_of_the_limit_that_refused_it(storage: Storage) -> None:
    early = await storage.create_job(GenerationRequest("a"), user_id=1, status="refused",
                                     refusal="limits.daily_images_per_user")
    queued = await storage.create_job(GenerationRequest("b"), user_id=1, refusal="ignored: not refused")
    late = await storage.update_status(queued.id, "refused", error="too fast", refusal="limits.user_rate")
    assert (await storage.require_job(early.id)).refusal == "limits.daily_images_per_user"
    assert (late.refusal, late.error, queued.refusal) == ("limits.user_rate", "too fast", None)
    long_key = "models." + "x" * 99  # a model's name is config: it could be long
    long_name = await storage.create_job(GenerationRequest("c"), user_id=1, status="refused", refusal=long_key)
    assert long_name.refusal == long_key[:64]  # the column's width


async def test_owed_deliveries_are_counted_and_the_database_answers_a_ping(storage: Storage) -> None:
    await storage.ping()
    assert await storage.owed_count() == 0
    ended = [await storage.create_job(GenerationRequest(f"p{n}"), user_id=1) for n in range(3)]
    for job in ended:
        await storage.update_status(job.id, "failed", error="no")
    await storage.record_delivery(ended[0].id)
    assert await storage.owed_count() == 2


async def test_a_url_without_a_driver_gets_the_async_one(tmp_path: Path, database_url: str) -> None:
    plain = database_url.replace("+asyncpg", "").replace("+aiosqlite", "")  # postgresql://… or sqlite:///…
    assert "+" not in plain.split("://")[0]
    async with Storage(tmp_path, plain) as storage:
        job = await storage.create_job(GenerationRequest("a"), user_id=1)
        assert (await storage.require_job(job.id)).request.prompt == "a"


async def test_unopened_storage_says_so(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not open"):
        await Storage(tmp_path).get_job("a" * 32)


SNOWFLAKE = 2**63 - 1  # the largest Discord id; PostgreSQL's integer would overflow at 2**31


async def test_every_value_comes_back_the_same_on_every_backend(tmp_path: Path, database_url: str) -> None:
    """Snowflakes, free text, NUL characters and a clock that is not in UTC, on SQLite and PostgreSQL."""
    kolkata = timezone(timedelta(hours=5, minutes=30))
    at = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=kolkata)  # the test database itself runs in Pacific/Chatham
    request = GenerationRequest("a fox 🦊 \x00 \u2028 \"quoted\" \\", negative_prompt="\x00", seed=2**32 - 1, count=2)
    async with Storage(tmp_path, database_url, clock=lambda: at) as storage:
        job = await storage.create_job(request, user_id=SNOWFLAKE, guild_id=SNOWFLAKE - 1, channel_id=SNOWFLAKE - 2,
                                       role_ids=[SNOWFLAKE, 1], interaction=InteractionRef(SNOWFLAKE, "tok", at))
        await storage.set_messages(job.id, status_message_id=SNOWFLAKE, result_message_id=SNOWFLAKE - 3)
        await storage.update_status(job.id, "running")
        await storage.update_status(job.id, "done", timings={"denoise_s": 1e-9, "total_s": 1e300})
        await storage.save_result_images(job.id, [png((1, 2, 3)), png((4, 5, 6))], [2**32 - 1, 0])
        await storage.set_guild_settings(SNOWFLAKE, {"note": "\x00 ok", "ids": [SNOWFLAKE]})
    async with Storage(tmp_path, database_url) as storage:
        [stored] = await storage.list_user_jobs(SNOWFLAKE - 1, SNOWFLAKE)
        assert stored.request == request and stored.seeds == (2**32 - 1, 0)
        assert (stored.user_id, stored.guild_id, stored.channel_id, stored.role_ids) == (
            SNOWFLAKE, SNOWFLAKE - 1, SNOWFLAKE - 2, (SNOWFLAKE, 1))
        assert (stored.status_message_id, stored.result_message_id) == (SNOWFLAKE, SNOWFLAKE - 3)
        assert stored.interaction == InteractionRef(SNOWFLAKE, "tok", at)
        assert stored.created_at == stored.finished_at == at and stored.created_at.tzinfo is UTC
        assert stored.timings == {"denoise_s": 1e-9, "total_s": 1e300}
        assert [r.seed for r in await storage.list_results(job.id)] == [2**32 - 1, 0]
        made = await storage.images_made_since(at.astimezone(UTC))
        assert [(m.guild_id, m.user_id, m.images) for m in made] == [(SNOWFLAKE - 1, SNOWFLAKE, 2)]
        assert await storage.images_made_since(at + timedelta(microseconds=1)) == []
        assert await storage.get_guild_settings(SNOWFLAKE) == {"note": "\x00 ok", "ids": [SNOWFLAKE]}


async def test_free_text_with_nul_is_kept_readable_on_every_backend(storage: Storage) -> None:
    """PostgreSQL's text cannot hold NUL: an error quoting such input is stored with U+FFFD in its place."""
    job = await storage.create_job(GenerationRequest("a"), user_id=1)
    failed = await storage.update_status(job.id, "failed", error="model 'x\x00y' is not available")
    assert failed.error == "model 'x\ufffdy' is not available"


async def test_json_refuses_nan_on_every_backend(storage: Storage) -> None:
    """PostgreSQL's JSON has no NaN; SQLite would store it. Both refuse it, so no row works on one only."""
    job = await storage.create_job(GenerationRequest("a"), user_id=1)
    await storage.update_status(job.id, "running")
    with pytest.raises(Exception, match="Out of range float values are not JSON compliant"):
        await storage.update_status(job.id, "done", timings={"denoise_s": float("nan")})
    assert (await storage.require_job(job.id)).status == "running"
