"""bot.core: the one duration format, the one owner-or-moderator check, job events fanned out to many
subscribers, each isolated from the others, and the loop the outbox and the contest phases run on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.core.config import AppConfig, GuildConfig
from bot.core.errors import NotPermitted
from bot.core.events import EventHub
from bot.core.identity import Requester
from bot.core.tasks import PassLoop
from bot.core.text import format_duration
from bot.scheduler import Job, JobState, SimulatedClock
from bot.services import services_of
from tests.bot_harness import is_result, running_bot
from tests.fake_discord import FakeDiscord


@pytest.mark.parametrize(("seconds", "text"), [
    (0.04, "0.0 s"), (4.24, "4.2 s"), (9.96, "10 s"), (45.4, "45 s"), (60, "1 min"), (150, "2 min 30 s"),
    (1799.6, "30 min"), (3600, "1 h"), (3900, "1 h 5 min"), (-3, "0.0 s"),
])
def test_one_duration_format_everywhere(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_owner_or_moderator_of_that_server_may_manage_a_job() -> None:
    config = AppConfig(guilds={1: GuildConfig(moderator_roles=[99])})
    Requester(5, guild_id=1).check_may_manage(5, 1, config, "delete")  # the owner
    Requester(6, guild_id=1, role_ids=frozenset({99})).check_may_manage(5, 1, config, "delete")  # moderator role
    Requester(7, guild_id=1, is_admin=True).check_may_manage(5, 1, config, "delete")  # Manage Server
    for outsider in (Requester(8, guild_id=1), Requester(6, guild_id=2, role_ids=frozenset({99}), is_admin=True),
                     Requester(6, guild_id=0, is_admin=True)):
        with pytest.raises(NotPermitted, match="a moderator of this server can delete it"):
            outsider.check_may_manage(5, 1, config, "delete")


@dataclass
class Subject:
    id: str


class Recording:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, tuple[Any, ...]]] = []
        self.finished_seen = asyncio.Event()

    def started(self, subject: Subject) -> None:
        self.seen.append(("started", subject.id, ()))

    async def progress(self, subject: Subject, step: int) -> None:
        await asyncio.sleep(0)  # let other lanes run in between
        self.seen.append(("progress", subject.id, (step,)))

    async def finished(self, subject: Subject) -> None:  # async calls wait for the ones before them
        self.seen.append(("finished", subject.id, ()))
        self.finished_seen.set()


class Failing:
    def started(self, subject: Subject) -> None:
        raise RuntimeError("sync subscriber bug")

    async def progress(self, subject: Subject, step: int) -> None:
        raise RuntimeError("async subscriber bug")


class Stuck:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def progress(self, subject: Subject, step: int) -> None:
        await self.release.wait()


async def test_every_subscriber_hears_every_event_in_order_despite_a_failing_or_stuck_one() -> None:
    hub: EventHub[Subject, object] = EventHub()
    failing, stuck, first, second = Failing(), Stuck(), Recording(), Recording()
    for subscriber in (failing, stuck, first, second):
        hub.subscribe(subscriber)
    job = Subject("j1")
    hub.send(job, "started")
    for step in range(1, 4):
        hub.send(job, "progress", step)
    hub.send(job, "finished")
    hub.send(job, "handed_back")  # nobody implements it: skipped, not an error
    expected = [("started", "j1", ()), *[("progress", "j1", (step,)) for step in (1, 2, 3)], ("finished", "j1", ())]
    # The stuck lane must not hold the others back: both finish while it still waits.
    await asyncio.wait_for(asyncio.gather(first.finished_seen.wait(), second.finished_seen.wait()), timeout=60)
    assert first.seen == expected and second.seen == expected
    stuck.release.set()
    await hub.flush()


async def test_an_unsubscribed_listener_hears_nothing_more() -> None:
    hub: EventHub[Subject, object] = EventHub()
    leaving, staying = Recording(), Recording()
    stop = hub.subscribe(leaving)
    hub.subscribe(staying)
    hub.send(Subject("a"), "started")
    stop()
    hub.send(Subject("a"), "finished")
    await hub.flush()
    assert leaving.seen == [("started", "a", ())]
    assert staying.seen == [("started", "a", ()), ("finished", "a", ())]
    assert hub.subscriber_count == 1


class StatsLike:
    """What a stats feature would subscribe: it hears each transition; this one also fails on every call."""

    def __init__(self) -> None:
        self.transitions: list[str] = []

    def started(self, job: Job) -> None:
        self.transitions.append("started")
        raise RuntimeError("a broken subscriber")

    async def finished(self, job: Job) -> None:
        self.transitions.append(job.state.value)
        raise RuntimeError("a broken subscriber")


async def test_a_second_subscriber_hears_the_job_and_its_failures_never_reach_the_user(fake: FakeDiscord,
                                                                                       tmp_path: Path) -> None:
    async with running_bot(fake, tmp_path) as bot:
        stats = StatsLike()
        services_of(bot).events.subscribe(stats)
        handle = await fake.slash("imagine", {"prompt": "a lighthouse"}, user="alice")
        result = await handle.wait_original(is_result)
        assert "lighthouse" in result.content  # the recorder and presenter went on regardless
        await services_of(bot).scheduler.flush_notifications()
        assert stats.transitions == ["started", JobState.DONE.value]


def test_services_are_only_found_on_the_bot_that_carries_them() -> None:
    with pytest.raises(TypeError, match="has no Services"):
        services_of(object())


class Passes:
    """A ``PassLoop`` pass that records each run and can be held in the middle, as a slow query would be."""

    def __init__(self, due_in_s: float | None) -> None:
        self.due_in_s = due_in_s
        self.begun = 0
        self.ended = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.changed = asyncio.Condition()

    async def run(self) -> float | None:
        self.begun += 1
        await self.hold.wait()
        self.ended += 1
        async with self.changed:
            self.changed.notify_all()
        return self.due_in_s

    async def until(self, ended: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.ended >= ended), 10)


async def test_a_pass_loop_runs_when_due_or_woken_and_lets_a_pass_under_way_finish_on_stop() -> None:
    """The outbox and the contest phases run on it: a delivery or a tally under way is never cut off by a
    shutdown (a cancel mid-query would strand a database connection), and a wake never waits for the timer."""
    clock = SimulatedClock(start=0.0)
    passes = Passes(due_in_s=60.0)
    loop = PassLoop("test-passes", passes.run, clock.sleep, idle_s=300.0)
    loop.start()
    await passes.until(1)
    await clock.advance(59.0)
    assert passes.begun == 1  # the next one is due in 60 s
    await clock.advance(1.0)
    await passes.until(2)
    loop.wake()  # something changed: no waiting for the next due time
    await passes.until(3)
    assert clock.monotonic() == 60.0
    passes.hold.clear()
    loop.wake()
    await clock.settle()
    assert passes.begun == 4 and passes.ended == 3  # the fourth pass is held in the middle
    stopping = asyncio.create_task(loop.stop(timeout_s=30.0))
    await clock.settle()
    assert not stopping.done() and passes.ended == 3  # stop waits for the pass...
    passes.hold.set()
    await asyncio.wait_for(stopping, 10)
    assert passes.ended == 4 and passes.begun == 4  # ...which finished, and no other began
