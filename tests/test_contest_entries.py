"""Issue 13, entering: tries go through the same scheduler and limits as /imagine (a refusal costs no try), stay
private (never shown by /imagine's presenter, delivered by direct message when the command's token has
expired), and a server caps contests on its own (the cost of a try, rounds at once); only moderators start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from bot.core.config import Bucket
from bot.scheduler import Job, NullListener
from bot.storage import JobRecord
from tests.bot_harness import UNLIMITED, WAIT_S, WatchedStorage
from tests.contest_helpers import (
    PaintExecutor,
    answer,
    click,
    contest_bot,
    contest_config,
    contest_fake,
    enter,
    gallery_of,
    public_messages,
    start,
    stores,
)
from tests.fake_discord import FakeDiscord
from tests.fake_discord.models import ALL_PERMISSIONS, CREATE_PUBLIC_THREADS
from tests.frozen_clock import FrozenClock


@pytest_asyncio.fixture
async def fake(clock: FrozenClock) -> AsyncIterator[FakeDiscord]:
    async with contest_fake(clock) as started:
        yield started


class HeardQueued(NullListener):
    """Tells the test when a job of a feature is in the queue (the one event-driven sign of it)."""

    def __init__(self, feature: str) -> None:
        self.feature = feature
        self.heard = asyncio.Event()

    def queued(self, job: Job, position: int | None, eta_s: float | None) -> None:  # type: ignore[override]
        if job.feature == self.feature:
            self.heard.set()


async def test_tries_are_fair_queued_with_imagine_and_stay_private(fake: FakeDiscord, tmp_path: Path) -> None:
    gpu = PaintExecutor()
    async with contest_bot(fake, tmp_path, contest_config(fake), gpu) as bot:
        await start(fake, "Foxes")
        gpu.gate.clear()
        imagined = [await fake.slash("imagine", {"prompt": "dave's fox"}, user="dave")]
        await asyncio.wait_for(gpu.held.wait(), WAIT_S)  # dave's /imagine holds the GPU
        for prompt in ("erin's first fox", "erin's second fox"):
            handle = await fake.slash("imagine", {"prompt": prompt}, user="erin")
            await handle.wait_original(lambda m: m.content.startswith("Queued"))
            imagined.append(handle)
        heard = HeardQueued("contests")
        unsubscribe = bot.services.events.subscribe(heard)
        trying = await fake.slash("contest enter", {"prompt": "carol's fox"}, user="carol")
        await asyncio.wait_for(heard.heard.wait(), WAIT_S)
        unsubscribe()
        gpu.gate.set()
        for handle in imagined:
            await handle.wait_original(lambda m: bool(m.attachments))
        images = await trying.wait_followup(lambda m: bool(m.attachments))
        assert images.ephemeral
        # One fair queue: carol's try goes before erin's second request (round robin across members).
        assert [request.prompt for request in gpu.requests] == [
            "dave's fox", "erin's first fox", "carol's fox", "erin's second fox"]
        storage = bot.services.storage
        assert isinstance(storage, WatchedStorage)

        async def carols_try_delivered() -> list[JobRecord] | None:
            jobs = await storage.list_user_jobs(fake.guild("Art Club").id, fake.user("carol").id)
            return jobs if jobs and jobs[0].delivery == "delivered" else None

        (job,) = await storage.wait_until(carols_try_delivered, what="carol's try recorded delivered")
        imagine = bot.get_cog("Imagine")  # /imagine's presenter never took carol's try on
        assert imagine is not None and not imagine.presenter.is_live(job.id)  # type: ignore[attr-defined]
        assert job.kind == "contest"
    assert not any("carol's fox" in m.content for m in public_messages(fake))


async def test_a_try_meets_the_imagine_limits_and_a_refusal_costs_no_try(fake: FakeDiscord, tmp_path: Path) -> None:
    config = contest_config(fake).model_copy(update={"limits": UNLIMITED.model_copy(update={
        "user_rate": Bucket(amount=1, window_s=3600, burst=1)})})
    async with contest_bot(fake, tmp_path, config, PaintExecutor()) as bot:
        store, _ = stores(bot)
        await start(fake, "Foxes")
        await enter(fake, "carol", "a fox in a contest")
        refused = await fake.slash("contest enter", {"prompt": "a second fox"}, user="carol")
        told = await refused.wait_original(lambda m: m.content.startswith("⏳"))
        assert told.ephemeral and "1 request an hour" in told.content  # /imagine's rate, in the same words
        contest = (await store.in_guild(fake.guild("Art Club").id))[0]
        assert await store.tries(contest.id, fake.user("carol").id) == 1  # the refusal cost no try


async def test_a_try_that_outlives_its_command_comes_by_direct_message(fake: FakeDiscord, clock: FrozenClock,
                                                                        tmp_path: Path) -> None:
    gpu = PaintExecutor()
    async with contest_bot(fake, tmp_path, contest_config(fake), gpu) as bot:
        store, _ = stores(bot)
        await start(fake, "Owls")
        gpu.gate.clear()
        handle = await fake.slash("contest enter", {"prompt": "an owl at night"}, user="alice")
        await asyncio.wait_for(gpu.held.wait(), WAIT_S)
        await clock.advance(15 * 60 + 1)  # the command's token has expired
        gpu.gate.set()
        direct = await fake.wait_until(lambda: next((m for m in fake.messages if m.attachments and
                                                     fake.state.channel(m.channel_id).type == 1), None),
                                       what="alice's images by direct message")
        assert fake.state.channel(direct.channel_id).recipients[0].username == "alice"
        assert "an owl at night" in direct.content and not handle.followups
        assert (await click(fake, direct, "Submit 1", "alice")).startswith("✅ Entered!")  # from the DM
        contest = (await store.in_guild(fake.guild("Art Club").id))[0]
        assert [entry.prompt for entry in await store.entries(contest.id)] == ["an owl at night"]


async def test_only_moderators_start_rounds_within_the_servers_caps(fake: FakeDiscord, tmp_path: Path) -> None:
    config = contest_config(fake, max_cost_per_entry=1.0, max_open_per_guild=1)
    async with contest_bot(fake, tmp_path, config, PaintExecutor()):
        async def started(user: str, **options: object) -> str:
            handle = await fake.slash("contest start", {"theme": "Rain", "submit": "1h", "vote": "1h", **options},
                                      user=user)
            return (await answer(handle)).content

        assert await started("alice") == "🚫 Only moderators of this server can do that."
        assert await started("bob", submit="soon") == \
            "The submit time can't be read: write it like 30m, 2h or 1d12h, from 1 minute to 14 days."
        assert await started("bob", size="512x512", steps=50) == (
            "Each try under these rules would take GPU time for about 4 images of 512×512 at 25 steps, and contests "
            "here allow at most 1 per try. Use fewer steps or a smaller size.")
        assert (await started("bob", steps=500)).startswith("That request can't run:\n• steps 500 is out of range")
        assert (await started("bob", model="huge")).startswith("That request can't run:\n• model 'huge' is not")
        assert (await started("bob")).startswith("✅ Contest #1 started: the announcement is in <#")
        assert await started("bob") == ("This server already runs 1 contest at once, the most it allows; start "
                                        "another when one ends.")
        other = await fake.slash("contest start", {"theme": "Snow", "submit": "1h", "vote": "1h"}, user="bob",
                                 guild="Pixel Den", channel="contests")
        assert (await answer(other)).content.startswith("✅ Contest #1 started")  # the cap is per server
    assert [m.content.split("\n")[0] for m in public_messages(fake)] == [
        "🎨 **New prompt contest:** **Rain** (contest #1)", "🎨 **New prompt contest:** **Snow** (contest #1)"]


async def test_with_several_rounds_a_member_names_one_or_uses_the_one_of_the_channel(
        fake: FakeDiscord, tmp_path: Path) -> None:
    async with contest_bot(fake, tmp_path, contest_config(fake), PaintExecutor()):
        await start(fake, "Cats")
        await start(fake, "Dogs", channel="gallery")
        _, here = await enter(fake, "alice", "a dog", channel="gallery")  # the round of this channel
        assert "**Dogs** (contest #2)" in here.content
        _, there = await enter(fake, "alice", "a cat", channel="general")
        assert "**Cats** (contest #1)" in there.content
        await start(fake, "Birds")  # a second round in #general: a member must now say which
        unsure = await fake.slash("contest enter", {"prompt": "a bird"}, user="alice", channel="general")
        assert (await unsure.wait_original()).content == \
            "Several contests are running here (#1, #2, #3); pick one with the contest option."
        _, named = await enter(fake, "alice", "a bird", channel="general", contest=3)
        assert "**Birds** (contest #3)" in named.content
        status = await answer(await fake.slash("contest status", {"contest": 1}, user="carol", channel="gallery"))
        assert status.content.startswith("**Cats** (contest #1): entries open")
        listed = await answer(await fake.slash("contest list", user="carol"))
        assert [line.split(" · ")[:2] for line in listed.content.splitlines()[1:]] == [
            ["#3", "Birds"], ["#2", "Dogs"], ["#1", "Cats"]]
        choices = await fake.autocomplete("contest enter", "contest", {"prompt": "x", "contest": ""}, user="carol")
        assert [choice["value"] for choice in choices] == [3, 2, 1]


async def test_without_the_right_to_make_threads_the_gallery_goes_in_the_channel(
        fake: FakeDiscord, clock: FrozenClock, tmp_path: Path) -> None:
    channel = fake.channel("contests")
    channel.bot_permissions = ALL_PERMISSIONS & ~CREATE_PUBLIC_THREADS
    async with contest_bot(fake, tmp_path, contest_config(fake), PaintExecutor()) as bot:
        store, _ = stores(bot)
        await start(fake, "Caves", guild="Pixel Den", channel="contests")
        _, tried = await enter(fake, "alice", "a cave of crystals", guild="Pixel Den", channel="contests")
        await click(fake, tried, "Submit 1", "alice")
        await clock.advance(3600)
        contest = await gallery_of(fake, bot, (await store.in_guild(fake.guild("Pixel Den").id))[0].id)
    assert contest.gallery_channel_id == channel.id
    assert [m.content.split("\n")[0] for m in fake.channel_messages(channel, include_ephemeral=False)] == [
        "🎨 **New prompt contest:** **Caves** (contest #1)", "🗳 **Voting is open:** **Caves** (contest #1)",
        "**Entry 1**", "That's all 1 entry. Press **Vote** under your favourite: one vote each, until "
        f"<t:{int(contest.vote_ends_at.timestamp())}:R>; voting again moves your vote. You can't vote for your own "
        "entry."]
    assert [r.status for r in fake.requests if r.path.endswith("/threads")] == [403]


async def test_a_failed_try_tells_its_member_and_entries_close_for_withdrawal_too(
        fake: FakeDiscord, clock: FrozenClock, tmp_path: Path) -> None:
    async with contest_bot(fake, tmp_path, contest_config(fake), PaintExecutor()) as bot:
        store, _ = stores(bot)
        await start(fake, "Comets")
        failing = await fake.slash("contest enter", {"prompt": "a comet, out of memory"}, user="alice")
        told = await failing.wait_followup()
        assert told.ephemeral and told.content == ("❌ This image could not be made: The GPU ran out of memory; try "
                                                   "a smaller size. Make a new try with `/contest enter`.")
        assert not told.components
        _, tried = await enter(fake, "alice", "a comet over the sea")
        await click(fake, tried, "Submit 1", "alice")
        listed = await answer(await fake.slash("contest my-entries", user="alice"))
        await clock.advance(3600)
        contest = await gallery_of(fake, bot, (await store.in_guild(fake.guild("Art Club").id))[0].id)
        assert await click(fake, listed, "Withdraw 1", "alice") == \
            "Entries of contest #1 can only be withdrawn until entries close."
        assert await click(fake, listed, "Withdraw 1", "carol") == "🚫 You can only withdraw your own entries."
        mine = await answer(await fake.slash("contest my-entries", user="alice"))
        assert mine.content.splitlines()[1] == "1. entry 1: a comet over the sea" and not mine.components
        early = await answer(await fake.slash("contest disqualify", {"entry": 7}, user="bob"))
        assert early.content == "Contest #1 has no entry 7."
        assert [entry.prompt for entry in await store.entries(contest.id, active=True)] == ["a comet over the sea"]
