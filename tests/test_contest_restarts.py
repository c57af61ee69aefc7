"""Issue 13: "Phases come from the database, not from timers held in memory. On start-up, overdue transitions run
exactly once (a kill between 'tally' and 'announce' neither loses nor repeats an announcement)."

A restart in every phase: while entries are open (with a try still being made), while voting, after the
close, across both deadlines while the bot was down; and a simulated kill (``KillAt``: the task that reaches
the named checkpoint dies there, and so would everything after it) at each step of a round's life, then a new
bot on the same data. Each ends with every public message of the round exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio

from bot.app import ImagineBot
from tests.bot_harness import WAIT_S
from tests.contest_helpers import (
    KillAt,
    PaintExecutor,
    answer,
    click,
    contest_bot,
    contest_config,
    contest_fake,
    enter,
    entry_message,
    gallery_messages,
    gallery_of,
    phases_of,
    public_messages,
    results_message,
    results_of,
    start,
    stores,
    vote,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.frozen_clock import FrozenClock


@pytest_asyncio.fixture
async def fake(clock: FrozenClock) -> AsyncIterator[FakeDiscord]:
    async with contest_fake(clock) as started:
        yield started


def kinds_posted(fake: FakeDiscord) -> list[str]:
    """Every public message of the test's rounds, by what it is, in the order Discord got them."""
    marks: list[tuple[str, Callable[[StoredMessage], bool]]] = [
        ("announce", lambda m: m.content.startswith("🎨 **New prompt contest:**")),
        ("voting_open", lambda m: m.content.startswith("🗳 **Voting is open:**")),
        ("entry", lambda m: m.content.startswith("**Entry ")),
        ("gallery_end", lambda m: m.content.startswith("That's all")),
        ("results", lambda m: "**Results:**" in m.content),
        ("reveal", lambda m: m.content.startswith("**Every entry")),
    ]
    return [next(kind for kind, matches in marks if matches(m)) for m in public_messages(fake)]


ROUND = ["announce", "voting_open", "entry", "entry", "gallery_end", "results", "reveal"]


async def test_a_restart_while_entries_are_open_resumes_the_try_and_keeps_the_round(
        fake: FakeDiscord, clock: FrozenClock, tmp_path: Path) -> None:
    config = contest_config(fake)
    gpu = PaintExecutor()
    async with contest_bot(fake, tmp_path, config, gpu):
        await start(fake, "Orchards")
        _, carols = await enter(fake, "carol", "an orchard in bloom")
        await click(fake, carols, "Submit 1", "carol")
        gpu.gate.clear()  # alice's try is on the GPU when the bot stops
        handle = await fake.slash("contest enter", {"prompt": "apples in the grass"}, user="alice")
        await handle.wait_original(lambda m: m.content.startswith("🎨 Making your images"))
        await asyncio.wait_for(gpu.held.wait(), WAIT_S)  # alice's try on the GPU
    async with contest_bot(fake, tmp_path, config, PaintExecutor()) as bot:
        images = await handle.wait_followup(lambda m: bool(m.attachments))  # resumed, shown to alice privately
        assert images.ephemeral and "apples in the grass" in images.content
        await click(fake, images, "Submit 2", "alice")
        await clock.advance(3600)
        store, _ = stores(bot)
        contest = await gallery_of(fake, bot, (await store.in_guild(fake.guild("Art Club").id))[0].id)
        assert sorted(entry.prompt for entry in await store.entries(contest.id)) == [
            "an orchard in bloom", "apples in the grass"]
    assert kinds_posted(fake) == ["announce", "voting_open", "entry", "entry", "gallery_end"]
    assert len([m for m in handle.followups if m.attachments]) == 1


async def test_a_restart_while_voting_keeps_the_votes_and_the_buttons(fake: FakeDiscord, clock: FrozenClock,
                                                                       tmp_path: Path) -> None:
    config = contest_config(fake)
    async with contest_bot(fake, tmp_path, config, PaintExecutor()) as bot:
        await start(fake, "Meadows")
        for user in ("alice", "carol"):
            _, tried = await enter(fake, user, f"{user}'s meadow")
            await click(fake, tried, "Submit 1", user)
        await clock.advance(3600)
        store, _ = stores(bot)
        contest = await gallery_of(fake, bot, (await store.in_guild(fake.guild("Art Club").id))[0].id)
        alice, carol = sorted(await store.entries(contest.id), key=lambda e: e.prompt)
        await vote(fake, contest, alice, "dave")
    async with contest_bot(fake, tmp_path, config, PaintExecutor()):
        # The gallery posted by the first bot works for the second: its buttons name the entries.
        assert (await vote(fake, contest, alice, "erin")).startswith(f"🗳 Your vote is on entry {alice.number}.")
        end = next(m for m in gallery_messages(fake, contest) if m.content.startswith("That's all"))
        assert await click(fake, end, "My vote", "dave") == \
            f"Your vote is on entry {alice.number} in **Meadows** (contest #1)."
        await clock.advance(1800)
        results = await results_of(fake, "Meadows")
    assert f"🥇 <@{fake.user('alice').id}> with entry {alice.number} · 2 votes" in results.content
    assert carol.number is not None and kinds_posted(fake) == ROUND


async def test_overdue_phases_run_once_at_start_and_a_closed_round_stays_closed(
        fake: FakeDiscord, clock: FrozenClock, tmp_path: Path) -> None:
    config = contest_config(fake)
    async with contest_bot(fake, tmp_path, config, PaintExecutor()):
        await start(fake, "Glaciers")
        for user in ("alice", "carol"):
            _, tried = await enter(fake, user, f"{user}'s glacier")
            await click(fake, tried, "Submit 1", user)
    await clock.advance(2 * 3600)  # the bot is down past both deadlines
    async with contest_bot(fake, tmp_path, config, PaintExecutor()):
        results = await results_of(fake, "Glaciers")
        assert results.content.splitlines()[1] == "Nobody voted, so there is no winner this time. Every entry with " \
                                                  "its author and prompt is in the gallery."
        await fake.wait_until(lambda: kinds_posted(fake) == ROUND, what="the whole round, once")
    async with contest_bot(fake, tmp_path, config, PaintExecutor()) as bot:
        await phases_of(bot).next_pass()  # a whole pass of the new bot: nothing was due, nothing is sent
        status = await answer(await fake.slash("contest status", user="erin"))
    assert status.content.startswith("**Glaciers** (contest #1): closed · 2 entries")
    assert kinds_posted(fake) == ROUND



async def first_of(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


# Each step of a round's life at which a kill could come, in order; ``after``: how many times the step is passed
# first (the poster reaches "contest posted" once per post: the announcement, the opening, 2 entries, the end...).
KILL_STEPS = [
    pytest.param("contest posted", 0, id="announcement-posted-not-recorded"),
    pytest.param("contest voting opened", 0, id="voting-opened-nothing-posted"),
    pytest.param("contest posted", 1, id="opening-posted-not-recorded"),
    pytest.param("contest thread made", 0, id="thread-made-not-recorded"),
    pytest.param("contest posted", 3, id="an-entry-posted-not-recorded"),
    pytest.param("contest tallied", 0, id="tallied-not-announced"),
    pytest.param("contest posted", 5, id="results-posted-not-recorded"),
]


@pytest.mark.parametrize(("step", "after"), KILL_STEPS)
async def test_a_kill_at_any_step_loses_nothing_and_posts_nothing_twice(
        fake: FakeDiscord, clock: FrozenClock, tmp_path: Path, step: str, after: int) -> None:
    config = contest_config(fake)
    kill = KillAt(step, after=after, fake=fake)
    restarted: list[str] = []
    async with AsyncExitStack() as stack:
        bot: ImagineBot = await stack.enter_async_context(contest_bot(fake, tmp_path, config, PaintExecutor(),
                                                                      checkpoints=kill))

        async def survive(done: Callable[[], object], what: str) -> None:
            """Wait for ``done``, then for the bot to record what it showed (a whole pass of its phase loop). If
            the bot is killed meanwhile, start a new one on the same data, which must get there by itself."""
            nonlocal bot, stack
            def dead() -> bool:
                return kill.killed.is_set() and not restarted

            await fake.wait_until(lambda: dead() or done(), what=f"{what} (or the kill)")
            if not dead():
                await first_of(phases_of(bot).next_pass(), kill.killed.wait())
            if dead():
                restarted.append(step)
                await stack.aclose()
                stack = AsyncExitStack()
                bot = await stack.enter_async_context(contest_bot(fake, tmp_path, config, PaintExecutor()))
                await phases_of(bot).next_pass()  # overdue changes and owed posts: all done in one pass
                assert done(), f"{what}: not there after the restart"

        await fake.slash("contest start", {"theme": "Islands", "submit": "1h", "vote": "30m"}, user="bob")
        await survive(lambda: "announce" in kinds_posted(fake), "the announcement")
        for user in ("alice", "carol"):
            _, tried = await enter(fake, user, f"{user}'s island")
            await click(fake, tried, "Submit 1", user)
        await clock.advance(3600)
        await survive(lambda: "gallery_end" in kinds_posted(fake), "the whole gallery")
        store, _ = stores(bot)
        contest = (await store.in_guild(fake.guild("Art Club").id))[0]
        alice, _ = sorted(await store.entries(contest.id), key=lambda e: e.prompt)
        await vote(fake, contest, alice, "dave")
        await clock.advance(1800)
        await survive(lambda: "reveal" in kinds_posted(fake), "the results and the reveal")
        await stack.aclose()
    assert kill.killed.is_set() and restarted, f"the bot never reached {step!r}"
    assert kinds_posted(fake) == ROUND
    (results,) = results_message(fake, "Islands")
    assert f"🥇 <@{fake.user('alice').id}> with entry {alice.number} · 1 vote" in results.content
    assert entry_message(fake, contest, alice).attachments
    threads = [r.status for r in fake.requests if r.path.endswith("/threads")]
    # A thread made before the kill is found again (Discord answers 160004), never made twice.
    assert threads == ([201, 400] if step == "contest thread made" else [201])
    assert len([channel for channel in fake.guild("Art Club").channels if channel.type == 11]) == 1
