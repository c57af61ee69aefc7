"""Token buckets mirrored in Redis (``bot.bucket_mirror``), on a real Redis, each test in a namespace of its own.

A restarted scheduler refuses a flooder with the same retry time; a bucket leaves Redis once it would be full; an
unreachable Redis leaves the limits in memory, is said once, and gets what it missed once it answers; through the
real bot, a member at the rate limit is still refused after a restart (without Redis: admitted, as documented)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.bucket_mirror import RedisBucketMirror
from bot.core.config import AppConfig, Bucket, Limits
from bot.core.errors import RateLimited
from bot.scheduler import JobState, Scheduler
from bot.scheduler.limits import BucketLevel
from generation.config import ExecutorConfig, GenerationConfig
from generation.remote.keys import Keys, connect, where
from tests.bot_harness import UNLIMITED, GateExecutor, is_result, running_bot, tiny_app_config, tiny_model
from tests.fake_discord import FakeDiscord
from tests.frozen_clock import FrozenClock
from tests.redis_backend import OwnRedis, free_port
from tests.scheduler_helpers import OPEN_LIMITS, FakeExecutor, make_config, make_job

# A member may ask 6 times an hour, 3 at once (a token every 10 min); the server 4 times an hour, 4 at once.
LIMITS = OPEN_LIMITS.model_copy(update={"user_rate": Bucket(amount=6, window_s=3600, burst=3),
                                        "guild_rate": Bucket(amount=4, window_s=3600, burst=4)})


def mirror(url: str, namespace: str) -> RedisBucketMirror:
    return RedisBucketMirror(connect(url), Keys(namespace), redis_where=where(url))


def scheduler_on(clock: FrozenClock, store: RedisBucketMirror, limits: Limits = LIMITS) -> Scheduler:
    return Scheduler(FakeExecutor(clock), make_config(limits=limits), clock=clock, buckets=store)


async def test_a_restarted_scheduler_refuses_a_flooder_with_the_same_retry_time(redis_url: str,
                                                                                redis_namespace: str) -> None:
    before = FrozenClock()
    await before.advance(500)  # this process's monotonic clock is far from the next one's: only wall time carries
    first = scheduler_on(before, mirror(redis_url, redis_namespace))
    await first.start()
    for _ in range(3):
        first.submit(make_job(user=10))
    with pytest.raises(RateLimited) as old:
        first.submit(make_job(user=10))
    assert str(old.value) == "You can make 6 requests an hour (3 at once); try again in 10 min."
    await first.drain(timeout_s=0)  # the bot's shutdown: the last levels are written

    after = FrozenClock(wall_start=before.time() + 240)  # started again 4 minutes later
    second = scheduler_on(after, mirror(redis_url, redis_namespace))
    await second.start()
    with pytest.raises(RateLimited) as new:
        second.submit(make_job(user=10))
    assert new.value.retry_after == pytest.approx(360)
    assert str(new.value) == "You can make 6 requests an hour (3 at once); try again in 6 min."
    # The server's bucket came back too: one request left of 4 (plus 4 minutes' refill), then it refuses.
    assert second.submit(make_job(user=11)).state is JobState.QUEUED
    with pytest.raises(RateLimited) as server:
        second.submit(make_job(user=12))
    assert str(server.value) == "This server can make 4 requests an hour; try again in 11 min."
    await second.drain(timeout_s=0)


async def test_a_bucket_stays_in_redis_only_until_it_would_be_full_again(redis_url: str,
                                                                         redis_namespace: str) -> None:
    clock = FrozenClock()
    members_only = OPEN_LIMITS.model_copy(update={"user_rate": LIMITS.user_rate})
    first = scheduler_on(clock, mirror(redis_url, redis_namespace), members_only)
    await first.start()
    first.submit(make_job(user=10))  # one token of 3, back in 10 minutes
    await first.drain(timeout_s=0)
    client = connect(redis_url)
    try:
        keys = [key.decode() async for key in client.scan_iter(match=f"imagine:{redis_namespace}:bucket:*")]
        assert keys == [Keys(redis_namespace).bucket("user", (1, 10))]
        assert 0 < await client.pttl(keys[0]) <= 600_000  # Redis drops it when the bucket is full again
    finally:
        await client.aclose()
    # Started again 10 minutes later, before Redis dropped the key: the bucket read back is full by now, so the
    # member has their whole burst, as if nothing had been kept.
    later = FrozenClock(wall_start=clock.time() + 600)
    second = scheduler_on(later, mirror(redis_url, redis_namespace), members_only)
    await second.start()
    for _ in range(3):
        assert second.submit(make_job(user=10)).state is JobState.QUEUED
    await second.drain(timeout_s=0)


async def test_an_unreachable_redis_leaves_the_limits_in_memory_and_is_said_once(
        caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    clock = FrozenClock()
    scheduler = scheduler_on(clock, RedisBucketMirror(connect(url), Keys("unreachable"), redis_where=where(url)))
    with caplog.at_level(logging.INFO, logger="bot.bucket_mirror"):
        await scheduler.start()  # the load fails: buckets start full
        for _ in range(3):
            scheduler.submit(make_job(user=10))  # admission never waits for Redis
        with pytest.raises(RateLimited) as refused:
            scheduler.submit(make_job(user=10))
        await scheduler.drain(timeout_s=0)  # the failed write is not waited out again at shutdown
    assert str(refused.value) == "You can make 6 requests an hour (3 at once); try again in 10 min."
    said = [record.getMessage() for record in caplog.records if record.name == "bot.bucket_mirror"]
    assert len(said) == 1, said
    assert said[0].startswith(f"rate limits: could not load token buckets from Redis at {where(url)} (")
    assert said[0].endswith("); they start full, in memory")


async def test_levels_noted_while_redis_is_down_are_written_once_it_answers(own_redis: OwnRedis,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    store = RedisBucketMirror(connect(own_redis.url), Keys("outage"), redis_where=where(own_redis.url))
    level = BucketLevel(tokens=1.0, wall=1_700_000_000.0, rate=6 / 3600, capacity=3.0)
    with caplog.at_level(logging.INFO, logger="bot.bucket_mirror"):
        store.taken("user", (1, 10), level)  # not started yet: the write fails
        await store.close()
        store.taken("user", (1, 11), level)  # fails again, unsaid
        await store.close()
        await own_redis.start()
        store.taken("guild", 1, level)
        await store.close()
    said = [record.getMessage() for record in caplog.records if record.name == "bot.bucket_mirror"]
    assert len(said) == 2, said
    assert said[0].startswith(f"rate limits: could not write token buckets to Redis at {where(own_redis.url)} (")
    assert said[1] == f"rate limits: token buckets are mirrored to Redis at {where(own_redis.url)} again"
    kept = sorted((kind, str(key)) for kind, key, _ in await store.load())
    assert kept == [("guild", "1"), ("user", "(1, 10)"), ("user", "(1, 11)")]  # nothing noted was lost
    await store.close()


def redis_config(fake: FakeDiscord, redis_url: str | None, namespace: str) -> AppConfig:
    limits = UNLIMITED.model_copy(update={"user_rate": Bucket(amount=2, window_s=3600, burst=2)})
    executor = ExecutorConfig(device="cpu", redis_url=redis_url, redis_namespace=namespace)
    return tiny_app_config(fake, limits=limits, generation=GenerationConfig(
        default_model="tiny", models={"tiny": tiny_model()}, executor=executor))


async def flood_then_restart(fake: FakeDiscord, clock: FrozenClock, tmp_path: Path, redis_url: str | None,
                             namespace: str = "imagine") -> str:
    """Alice asks twice, is refused the third time, the bot is down ten minutes; what her next /imagine shows."""
    config = redis_config(fake, redis_url, namespace)
    gpu = GateExecutor()
    gpu.gate.set()
    async with running_bot(fake, tmp_path, config, executor=gpu):
        for prompt in ("one", "two"):
            await (await fake.slash("imagine", {"prompt": prompt}, user="alice")).wait_original(is_result)
        refused = await (await fake.slash("imagine", {"prompt": "three"}, user="alice")).wait_original()
        assert refused.ephemeral and refused.content == "⏳ You can make 2 requests an hour; try again in 30 min."
    await clock.advance(10 * 60)
    again = GateExecutor()
    again.gate.set()
    async with running_bot(fake, tmp_path, config, executor=again):
        handle = await fake.slash("imagine", {"prompt": "four"}, user="alice")
        shown = await handle.wait_original(lambda m: m.ephemeral or is_result(m))
        return shown.content if shown.ephemeral else "a result"


async def test_a_member_at_the_rate_limit_is_still_refused_after_a_restart(
        fake: FakeDiscord, clock: FrozenClock, tmp_path: Path, redis_url: str, redis_namespace: str) -> None:
    """README: "a restarted bot, or a standby taking over, refuses a member who was asking too fast just as
    before"."""
    shown = await flood_then_restart(fake, clock, tmp_path, redis_url, redis_namespace)
    assert shown == "⏳ You can make 2 requests an hour; try again in 20 min."  # the ten minutes down counted


async def test_without_redis_a_restart_refills_the_buckets(fake: FakeDiscord, clock: FrozenClock,
                                                           tmp_path: Path) -> None:
    """README: "Without Redis a restart refills them"."""
    assert await flood_then_restart(fake, clock, tmp_path, None) == "a result"
