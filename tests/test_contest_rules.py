"""Issue 13, "Must show", the tests for: a double vote, a self-vote, a vote after close, a late joiner (rule on),
someone else's image or one from outside the round, entering past the deadline or the cap, a tie, a
disqualification, two rounds in two servers at once; and a cancel. All through the fake Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.core.errors import ContestProblem
from bot.core.identity import Requester
from tests.contest_helpers import (
    PaintExecutor,
    answer,
    click,
    contest_bot,
    contest_config,
    contest_fake,
    enter,
    entry_message,
    gallery_of,
    public_messages,
    results_of,
    start,
    stores,
    vote,
)
from tests.fake_discord import FakeDiscord
from tests.fake_discord.clock import iso_at
from tests.frozen_clock import FrozenClock


@pytest_asyncio.fixture
async def fake(clock: FrozenClock) -> AsyncIterator[FakeDiscord]:
    async with contest_fake(clock) as started:
        yield started


async def test_one_vote_each_replaced_by_a_second_never_for_oneself_nor_after_close(
        fake: FakeDiscord, clock: FrozenClock, tmp_path: Path) -> None:
    async with contest_bot(fake, tmp_path, contest_config(fake), PaintExecutor()) as bot:
        store, _ = stores(bot)
        await start(fake, "Harbours")
        for user in ("alice", "carol"):
            _, tried = await enter(fake, user, f"{user}'s harbour")
            await click(fake, tried, "Submit 1", user)
        await clock.advance(3600)
        contest = await gallery_of(fake, bot, (await store.in_guild(fake.guild("Art Club").id))[0].id)
        alice, carol = sorted(await store.entries(contest.id, active=True), key=lambda e: e.prompt)
        assert (await vote(fake, contest, alice, "dave")).startswith(f"🗳 Your vote is on entry {alice.number}.")
        assert f"moved from entry {alice.number} to entry {carol.number}" in await vote(fake, contest, carol, "dave")
        assert "already on entry" in await vote(fake, contest, carol, "dave")
        assert (await store.vote_of(contest.id, fake.user("dave").id)) == carol  # one vote, the second one
        assert await vote(fake, contest, alice, "alice") == "You can't vote for your own entry."
        await clock.advance(1800)
        results = await results_of(fake, "Harbours")
        assert await vote(fake, contest, alice, "erin") == "Voting for contest #1 has closed."
    # dave's first vote was replaced: carol's entry has his one vote, alice's none (and no place).
    assert f"🥇 <@{fake.user('carol').id}> with entry {carol.number} · 1 vote" in results.content
    assert f"<@{fake.user('alice').id}>" not in results.content


async def test_only_members_who_joined_before_voting_opened_may_vote(fake: FakeDiscord, clock: FrozenClock,
                                                                     tmp_path: Path) -> None:
    async with contest_bot(fake, tmp_path, contest_config(fake), PaintExecutor()) as bot:
        store, _ = stores(bot)
        announced = await start(fake, "Lighthouses", joined_before_voting=True)
        assert "Only members who joined the server before voting opens can vote." in announced.content
        _, tried = await enter(fake, "alice", "a lighthouse in a storm")
        await click(fake, tried, "Submit 1", "alice")
        await clock.advance(3600)
        contest = await gallery_of(fake, bot, (await store.in_guild(fake.guild("Art Club").id))[0].id)
        fake.guild("Art Club").member("erin").joined_at = iso_at(clock.time())  # erin joins once voting is open
        (entry,) = await store.entries(contest.id, active=True)
        assert await vote(fake, contest, entry, "erin") == \
            "Only members who joined this server before voting opened can vote in this contest."
        assert (await vote(fake, contest, entry, "carol")).startswith("🗳 Your vote is on entry 1.")
        assert await store.vote_of(contest.id, fake.user("erin").id) is None


async def test_only_the_members_own_images_of_the_round_can_be_entered(fake: FakeDiscord, clock: FrozenClock,
                                                                       tmp_path: Path) -> None:
    async with contest_bot(fake, tmp_path, contest_config(fake), PaintExecutor()) as bot:
        store, _ = stores(bot)
        await start(fake, "Bridges")
        _, alices = await enter(fake, "alice", "a rope bridge")
        # carol clicks Submit on alice's private images (a client could replay the button): refused.
        assert await click(fake, alices, "Submit 1", "carol") == "🚫 You can only enter images the bot made for you."
        # No uploads: /contest enter has no attachment option; an /imagine result is no contest image either.
        enter_command = next(c for c in fake.commands() if c["name"] == "contest")
        options = next(o for o in enter_command["options"] if o["name"] == "enter")["options"]
        assert {option["type"] for option in options} == {3, 4}  # a prompt (text) and the round (a number)
        imagined = await fake.slash("imagine", {"prompt": "a stone bridge"}, user="alice")
        await imagined.wait_original(lambda m: bool(m.attachments))
        jobs = await bot.services.storage.list_user_jobs(fake.guild("Art Club").id, fake.user("alice").id)
        imagine_job = next(job for job in jobs if job.kind == "imagine")
        assert imagine_job.status == "done" and imagined.original is not None and not imagined.original.ephemeral
        cog = bot.get_cog("Contests")  # (its class is the one discord.py loaded, a fresh copy per bot)
        assert cog is not None
        alice = Requester(fake.user("alice").id, fake.guild("Art Club").id)
        with pytest.raises(ContestProblem, match="no uploads, and no /imagine results"):
            await cog.service.submit_entry(alice, imagine_job.id, 0)
        # An image made for round #1 enters round #1 only: once #1 is voting, it cannot enter #2 instead.
        await click(fake, alices, "Submit 1", "alice")
        await start(fake, "Tunnels", channel="gallery", submit="2h")
        await clock.advance(3600)
        first = await gallery_of(fake, bot, (await store.by_number(fake.guild("Art Club").id, 1)).id)
        assert await click(fake, alices, "Submit 2", "alice") == \
            "Entries for contest #1 are closed: it is voting now."
        second = await store.by_number(fake.guild("Art Club").id, 2)
        assert second is not None and await store.entries(second.id) == []
        assert [entry.prompt for entry in await store.entries(first.id)] == ["a rope bridge"]


async def test_entering_past_the_deadline_the_tries_or_the_cap_is_refused(fake: FakeDiscord, clock: FrozenClock,
                                                                         tmp_path: Path) -> None:
    config = contest_config(fake, max_tries_per_member=2)
    async with contest_bot(fake, tmp_path, config, PaintExecutor()) as bot:
        store, _ = stores(bot)
        await start(fake, "Windmills", max_entries=1)
        _, tried = await enter(fake, "alice", "a windmill at dusk")
        assert (await click(fake, tried, "Submit 1", "alice")).startswith("✅ Entered! You have 1 of 1 entries")
        assert await click(fake, tried, "Submit 1", "alice") == "That image is already one of your entries."
        assert await click(fake, tried, "Submit 2", "alice") == (
            "You already have 1 of 1 entries in this contest. Withdraw one with /contest my-entries to enter another.")
        # A withdrawn entry frees its slot: the other image takes it.
        listed = await answer(await fake.slash("contest my-entries", user="alice"))
        await click(fake, listed, "Withdraw 1", "alice")
        assert (await click(fake, tried, "Submit 2", "alice")).startswith("✅ Entered! You have 1 of 1 entries")
        await enter(fake, "alice", "a second windmill")
        third = await fake.slash("contest enter", {"prompt": "a third windmill"}, user="alice")
        refused = await third.wait_original()
        assert refused.ephemeral and refused.content == "You've used all 2 tries you get in this contest."
        # Past the deadline: a new try and a try made before it are both refused.
        contest = (await store.in_guild(fake.guild("Art Club").id))[0]
        _, carols = await enter(fake, "carol", "a windmill in snow")
        await clock.advance(3600)
        await gallery_of(fake, bot, contest.id)
        late = await fake.slash("contest enter", {"prompt": "a late windmill"}, user="dave")
        closed = "Entries for contest #1 are closed: it is voting now."
        assert (await late.wait_original()).content == closed
        assert await click(fake, carols, "Submit 1", "carol") == closed
        assert [entry.prompt for entry in await store.entries(contest.id, active=True)] == ["a windmill at dusk"]


async def test_a_tie_goes_to_the_entry_submitted_first(fake: FakeDiscord, clock: FrozenClock, tmp_path: Path) -> None:
    async with contest_bot(fake, tmp_path, contest_config(fake), PaintExecutor()) as bot:
        store, _ = stores(bot)
        await start(fake, "Kites")
        _, carols = await enter(fake, "carol", "a red kite")
        await click(fake, carols, "Submit 1", "carol")
        await clock.advance(120)
        _, alices = await enter(fake, "alice", "a box kite")
        await click(fake, alices, "Submit 1", "alice")
        await clock.advance(3600)
        contest = await gallery_of(fake, bot, (await store.in_guild(fake.guild("Art Club").id))[0].id)
        alice, carol = sorted(await store.entries(contest.id, active=True), key=lambda e: e.prompt)
        await vote(fake, contest, alice, "dave")
        await vote(fake, contest, carol, "erin")
        await clock.advance(1800)
        results = await results_of(fake, "Kites")
        placings = await store.placings(contest.id)
    assert [(p.entry.prompt, p.votes, p.place, p.points) for p in placings] == [
        ("a red kite", 1, 1, 3), ("a box kite", 1, 2, 2)]
    assert results.content.splitlines()[1].startswith(f"🥇 <@{fake.user('carol').id}>")
    assert "A tie goes to the entry submitted first." in results.content


async def test_a_moderator_disqualifies_an_entry_audited(fake: FakeDiscord, clock: FrozenClock,
                                                          tmp_path: Path) -> None:
    async with contest_bot(fake, tmp_path, contest_config(fake), PaintExecutor()) as bot:
        store, _ = stores(bot)
        await start(fake, "Clocks")
        for user in ("alice", "carol"):
            _, tried = await enter(fake, user, f"{user}'s clock")
            await click(fake, tried, "Submit 1", user)
        await clock.advance(3600)
        contest = await gallery_of(fake, bot, (await store.in_guild(fake.guild("Art Club").id))[0].id)
        alice, carol = sorted(await store.entries(contest.id, active=True), key=lambda e: e.prompt)
        await vote(fake, contest, alice, "dave")
        await vote(fake, contest, carol, "erin")
        refused = await answer(await fake.slash("contest disqualify", {"entry": alice.number}, user="carol"))
        assert refused.content == "🚫 Only moderators of this server can do that."
        done = await answer(await fake.slash("contest disqualify", {"entry": alice.number, "reason": "a copied image"},
                                             user="bob"))
        assert done.content == (f"Entry {alice.number} is disqualified; its vote was removed, and that member can "
                                "vote again. It is recorded in the contest's audit.")
        shown = entry_message(fake, contest, alice)
        assert shown.content == f"**Entry {alice.number}** was removed by a moderator."
        assert not shown.attachments and not shown.components
        assert await store.vote_of(contest.id, fake.user("dave").id) is None
        assert (await vote(fake, contest, carol, "dave")).startswith("🗳 Your vote is on entry")  # votes again
        assert await store.audit(contest.id) == [("start", fake.user("bob").id, None, None),
                                                 ("disqualify", fake.user("bob").id, alice.number, "a copied image")]
        await clock.advance(1800)
        results = await results_of(fake, "Clocks")
        placings = await store.placings(contest.id)
    assert [p.entry.prompt for p in placings] == ["carol's clock"]
    assert "alice's clock" not in results.content and "2 votes" in results.content


async def test_two_rounds_in_two_servers_at_once(fake: FakeDiscord, clock: FrozenClock, tmp_path: Path) -> None:
    async with contest_bot(fake, tmp_path, contest_config(fake), PaintExecutor()) as bot:
        store, _ = stores(bot)
        art, den = fake.guild("Art Club"), fake.guild("Pixel Den")
        await start(fake, "Rivers")
        await start(fake, "Deserts", guild="Pixel Den", channel="contests", submit="2h", vote="1h")
        for user in ("alice", "carol"):
            _, tried = await enter(fake, user, f"{user}'s river")
            await click(fake, tried, "Submit 1", user)
            _, tried = await enter(fake, user, f"{user}'s desert", guild="Pixel Den", channel="contests")
            await click(fake, tried, "Submit 1", user)
        await clock.advance(3600)  # Rivers votes; Deserts still takes entries
        rivers = await gallery_of(fake, bot, (await store.by_number(art.id, 1)).id)
        deserts = await store.by_number(den.id, 1)
        assert deserts is not None and deserts.phase == "submitting" and deserts.number == rivers.number == 1
        status = await answer(await fake.slash("contest status", user="dave", guild="Pixel Den", channel="contests"))
        assert status.content.startswith("**Deserts** (contest #1): entries open · 2 entries")
        river_entries = sorted(await store.entries(rivers.id, active=True), key=lambda e: e.prompt)
        await vote(fake, rivers, river_entries[0], "dave")  # alice's
        cog = bot.get_cog("Contests")  # a Vote button of Art Club replayed from Pixel Den is refused
        assert cog is not None
        with pytest.raises(ContestProblem, match="belongs to another server"):
            await cog.service.vote(Requester(fake.user("erin").id, den.id), river_entries[1].id, None)
        await clock.advance(3600)  # Rivers closes, Deserts votes
        await results_of(fake, "Rivers")
        deserts = await gallery_of(fake, bot, deserts.id)
        assert fake.channel(deserts.gallery_channel_id).parent_id == fake.channel("contests").id
        desert_entries = sorted(await store.entries(deserts.id, active=True), key=lambda e: e.prompt)
        await vote(fake, deserts, desert_entries[1], "dave")  # carol's
        await clock.advance(3600)
        await results_of(fake, "Deserts")
        art_board = await answer(await fake.slash("contest leaderboard", user="erin"))
        den_board = await answer(await fake.slash("contest leaderboard", user="erin", guild="Pixel Den",
                                                  channel="contests"))
    assert art_board.content.splitlines()[1] == f"1. <@{fake.user('alice').id}> · 3 points, 1 win"
    assert den_board.content.splitlines()[1] == f"1. <@{fake.user('carol').id}> · 3 points, 1 win"
    assert len(art_board.content.splitlines()) == len(den_board.content.splitlines()) == 3


async def test_a_moderator_cancels_a_round(fake: FakeDiscord, clock: FrozenClock, tmp_path: Path) -> None:
    async with contest_bot(fake, tmp_path, contest_config(fake), PaintExecutor()) as bot:
        store, _ = stores(bot)
        await start(fake, "Volcanoes")
        refused = await answer(await fake.slash("contest cancel", user="alice"))
        assert refused.content == "🚫 Only moderators of this server can do that."
        done = await answer(await fake.slash("contest cancel", {"reason": "wrong theme"}, user="bob"))
        assert done.content == "Contest #1 is cancelled; its channel has been told."
        told = await fake.wait_until(lambda: next((m for m in public_messages(fake) if m.content.startswith("✖")),
                                                  None))
        assert told.content == "✖ **Volcanoes** (contest #1) was cancelled by a moderator."
        late = await fake.slash("contest enter", {"prompt": "lava", "contest": 1}, user="alice")
        assert (await late.wait_original()).content == "Contest #1 has ended."
        await clock.advance(4 * 3600)  # its deadlines pass: nothing more is posted for it
        contest = (await store.in_guild(fake.guild("Art Club").id))[0]
        assert contest.phase == "cancelled"
        assert await store.audit(contest.id) == [("start", fake.user("bob").id, None, None),
                                                 ("cancel", fake.user("bob").id, None, "wrong theme")]
        listed = await answer(await fake.slash("contest list", user="carol"))
    assert listed.content.splitlines()[1].startswith("#1 · Volcanoes · cancelled <t:")
    assert [m.content[:1] for m in public_messages(fake)] == ["🎨", "✖"]
