"""Refusals that cost nothing: admission's dry run (``Scheduler.check``) before an attachment is
downloaded, refused rows that keep no image, and daily quotas rebuilt at start-up from sums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.core.config import Bucket, GuildConfig, Limits
from bot.core.config_store import ConfigStore
from bot.core.errors import QuotaExceeded, RateLimited
from bot.features.imagine.service import ImagineService
from bot.scheduler import Scheduler, SimulatedClock
from bot.storage import JobRecord, Storage
from generation.request import GenerationRequest
from tests.bot_harness import UNLIMITED, is_result, png, running_bot, tiny_app_config
from tests.fake_discord import FakeDiscord
from tests.frozen_clock import FrozenClock
from tests.scheduler_helpers import OPEN_LIMITS, FakeExecutor, Recorder, make_config, make_job


async def test_a_dry_run_refuses_like_submit_and_consumes_nothing() -> None:
    clock = SimulatedClock()
    listener = Recorder()
    limits = OPEN_LIMITS.model_copy(update={"user_rate": Bucket(amount=1, window_s=60, burst=1)})
    scheduler = Scheduler(FakeExecutor(clock), make_config(limits=limits), clock=clock, listener=listener)
    for _ in range(5):
        scheduler.check(make_job(1, 10))  # passes again and again: nothing is taken
    assert listener.events == []  # and nobody hears of a dry run
    scheduler.submit(make_job(1, 10))
    with pytest.raises(RateLimited) as dry:
        scheduler.check(make_job(1, 10))
    with pytest.raises(RateLimited) as real:
        scheduler.submit(make_job(1, 10))
    assert str(dry.value) == str(real.value) == "You can make 1 request a minute; try again in 1 min."
    assert dry.value.limit == real.value.limit == "limits.user_rate"  # the key stays on the exception, for logs
    scheduler.check(make_job(1, 11))  # another user's bucket is untouched


async def test_a_rate_limited_request_is_refused_before_its_attachment_is_downloaded(
        fake: FakeDiscord, clock: FrozenClock, tmp_path: Path) -> None:
    """README: "`limits:` per-user and per-server token buckets" — a refusal costs nothing, not even the
    download of the image attached to it."""
    limits = UNLIMITED.model_copy(update={"user_rate": Bucket(amount=1, window_s=3600, burst=1)})
    async with running_bot(fake, tmp_path, tiny_app_config(fake, limits=limits)) as bot:
        first = fake.serve_attachment(png("orange"), "first.png")
        handle = await fake.slash("imagine", {"prompt": "a fox"}, attachments={"image": first}, user="alice")
        await handle.wait_original(is_result)
        assert fake.downloads == [f"/attachments/{first.id}/first.png"]

        second = fake.serve_attachment(png("blue"), "second.png")
        refused = await (await fake.slash("imagine", {"prompt": "a fox again"}, attachments={"image": second},
                                          user="alice")).wait_original()
        assert refused.ephemeral and refused.content == "⏳ You can make 1 request an hour; try again in 1 h."
        assert fake.downloads == [f"/attachments/{first.id}/first.png"]  # the second file was never fetched
        [stored] = await bot.services.storage.jobs_in_states(["refused"])
        assert stored.request.prompt == "a fox again" and stored.request.init_image is None

        await clock.advance(3600)  # the refusal took no token: an hour later the bucket is full again
        again = await fake.slash("imagine", {"prompt": "a fox again"}, attachments={"image": second}, user="alice")
        await again.wait_original(is_result)
        assert len(fake.downloads) == 2


NOW = datetime(2030, 3, 20, 15, 30, tzinfo=UTC)  # 11:30 in New York, where guild 2's quota day began at 06:00
DAILY = 10


async def done_job(storage: Storage, clock: list[datetime], at: datetime, guild: int | None, user: int,
                   images: int, *, roles: tuple[int, ...] = ()) -> JobRecord:
    clock[0] = at
    request = GenerationRequest("a fox", seed=1, count=images, init_image=b"an input image", strength=0.5)
    job = await storage.create_job(request, user_id=user, guild_id=guild, role_ids=roles)
    await storage.update_status(job.id, "running")
    return await storage.update_status(job.id, "done", seeds=request.seeds())


def quota_left(scheduler: Scheduler, guild: int, user: int) -> str:
    """What a user would hear asking for a full day's images now."""
    try:
        scheduler.check(make_job(guild, user, count=DAILY))
    except QuotaExceeded as exc:
        return str(exc).split(", and this request")[0]
    return f"all {DAILY} left"


async def test_quotas_rebuilt_from_sums_match_counting_every_job(tmp_path: Path) -> None:
    clock = [NOW]
    limits = Limits(user_rate=None, guild_rate=None, max_queued_per_user=None, max_queued_per_guild=None,
                    daily_images_per_user=DAILY)
    new_york = GuildConfig(limits=Limits(quota_reset_hour=6, quota_timezone="America/New_York"))
    config = make_config(limits=limits, guilds={2: new_york})
    async with Storage(tmp_path, clock=lambda: clock[0]) as storage:
        hour = timedelta(hours=1)
        await done_job(storage, clock, NOW - 20 * hour, 1, 10, 2)  # yesterday (UTC): not counted today
        await done_job(storage, clock, NOW - 10 * hour, 1, 10, 1, roles=(7,))
        await done_job(storage, clock, NOW - hour, 1, 10, 3)
        await done_job(storage, clock, NOW - 6.5 * hour, 2, 20, 4)  # 05:00 in New York: the day before
        await done_job(storage, clock, NOW - 5 * hour, 2, 20, 2)  # 06:30 in New York
        await done_job(storage, clock, NOW - hour, 2, 20, 1)
        await done_job(storage, clock, NOW - hour, 2, 10, 4)  # user 10 in the other guild
        await done_job(storage, clock, NOW - 2 * hour, None, 30, 2)  # a direct message
        await done_job(storage, clock, NOW - 3 * 24 * hour, 1, 30, 4)  # long ago
        failed = await storage.create_job(GenerationRequest("a failure", count=4), user_id=10, guild_id=1)
        await storage.update_status(failed.id, "failed")
        clock[0] = NOW

        # Before: every done job of the last two days, read whole, counted one by one.
        before = Scheduler(FakeExecutor(SimulatedClock()), config, clock=SimulatedClock(wall_start=NOW.timestamp()))
        since = NOW - timedelta(days=2)
        for done in await storage.jobs_in_states(["done"]):
            if done.finished_at is not None and done.finished_at >= since:
                before.record_usage(done.guild_id or 0, done.user_id, frozenset(done.role_ids),
                                    len(done.seeds) or done.request.count, done.finished_at.timestamp())

        sim = SimulatedClock(wall_start=NOW.timestamp())
        after = Scheduler(FakeExecutor(sim), config, clock=sim)
        service = ImagineService(ConfigStore(initial=config), storage, after, sim)

        async def no_status(stored: JobRecord) -> int | None:
            return None

        assert await service.resume(no_status) == ([], [])

    people = [(1, 10), (2, 20), (2, 10), (0, 30), (1, 30), (1, 99)]
    assert [quota_left(after, *person) for person in people] == [quota_left(before, *person) for person in people]
    assert [quota_left(after, *person) for person in people] == [
        "You have 6 of your 10 daily images left", "You have 7 of your 10 daily images left",
        "You have 6 of your 10 daily images left", "You have 8 of your 10 daily images left",
        "all 10 left", "all 10 left"]

