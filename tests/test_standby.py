"""The lease that elects the active bot process (``bot.standby``), on a real Redis: one holder at a time, a
holder never extends or deletes another's lease, a Redis restart lets the holder take it again, and an active
process that finds another holding the lease steps down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.standby import Standby
from generation.remote.keys import connect
from generation.remote.lease import Lease
from tests.bot_harness import WAIT_S


@pytest.fixture
async def leases(redis_url: str, redis_namespace: str) -> AsyncIterator[tuple[Lease, Lease]]:
    client = connect(redis_url)
    key = f"imagine:{redis_namespace}:active-bot"
    yield Lease(client, key, holder="first", ttl_s=30), Lease(client, key, holder="second", ttl_s=30)
    await client.aclose()


async def test_one_holder_at_a_time_and_only_the_holder_renews_or_releases(leases: tuple[Lease, Lease]) -> None:
    first, second = leases
    assert await first.acquire() and not await second.acquire()
    assert await first.renew() and await first.holder_now() == "first"
    await second.release()  # not its lease: nothing happens
    assert await first.holder_now() == "first"
    await first.release()
    assert await second.acquire() and not await first.renew()  # passed on: the first cannot take it back
    await first.redis.delete(first.key)  # what a Redis restart does to it
    assert await first.renew() and await first.holder_now() == "first"


async def test_an_active_process_that_finds_another_holding_the_lease_steps_down(redis_url: str,
                                                                                 redis_namespace: str) -> None:
    said: list[str] = []
    standby = Standby.from_url(redis_url, redis_namespace, 0.3, say=said.append)
    other = Lease(connect(redis_url), f"imagine:{redis_namespace}:active-bot", holder="usurper", ttl_s=30)
    stepped = asyncio.Event()

    async def step_down() -> None:
        stepped.set()

    try:
        assert await standby.wait_until_active(asyncio.Event())
        holding = asyncio.create_task(standby.hold(step_down))
        await other.redis.set(other.key, other.holder)  # another process took it (its own lease ran out)
        await asyncio.wait_for(stepped.wait(), WAIT_S)
        await holding
        assert standby.stepped_down
        await standby.release()  # not its own any more: left to the holder
        assert await other.holder_now() == "usurper"
    finally:
        await other.redis.aclose()


async def test_a_waiting_standby_says_why_once_and_stops_when_asked(redis_url: str, redis_namespace: str) -> None:
    active = Lease(connect(redis_url), f"imagine:{redis_namespace}:active-bot", holder="active", ttl_s=30)
    said: list[str] = []
    stop = asyncio.Event()

    def say(line: str) -> None:
        said.append(line)
        stop.set()  # asked to stop as soon as it has said why it waits

    standby = Standby.from_url(redis_url, redis_namespace, 1.0, say=say)
    try:
        assert await active.acquire()
        waiting = asyncio.create_task(standby.wait_until_active(stop))
        assert await asyncio.wait_for(waiting, WAIT_S) is False
        assert said == ["standby: another bot process is active; this one takes over when it stops"]
    finally:
        await standby.release()
        await active.redis.aclose()
