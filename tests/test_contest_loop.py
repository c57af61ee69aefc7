"""Issue 13, "Must show": the full loop of a prompt contest through the fake Discord, several members over
simulated hours: start; entries (and a blind, same-seed round beside it); withdrawal; the gallery; votes;
close; results; the leaderboard. The podium of the first round is saved as docs/contest-podium-sample.png."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from PIL import Image

from tests.contest_helpers import (
    PaintExecutor,
    answer,
    button_id,
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
    results_of,
    start,
    stores,
    vote,
)
from tests.fake_discord import FakeDiscord
from tests.frozen_clock import FrozenClock

REPO = Path(__file__).resolve().parents[1]


@pytest_asyncio.fixture
async def fake(clock: FrozenClock) -> AsyncIterator[FakeDiscord]:
    async with contest_fake(clock) as started:
        yield started


async def test_a_round_from_start_to_leaderboard(fake: FakeDiscord, clock: FrozenClock, tmp_path: Path) -> None:
    async with contest_bot(fake, tmp_path, contest_config(fake), PaintExecutor()) as bot:
        store, phases = stores(bot)
        # Start: the announcement names the theme, the rules and both deadlines as Discord timestamps.
        announced = await start(fake, "Autumn lanterns", max_entries=2, size="256x256", prize="A custom role")
        assert "**Autumn lanterns** (contest #1)" in announced.content
        assert "Rules: model tiny · 256×256 · 2 steps · 2 images to pick from per try · up to 2 entries each" \
            in announced.content
        assert announced.content.count("<t:") == 4 and "/contest enter" in announced.content
        assert "Prize: A custom role" in announced.content and announced.allowed_mentions == {"parse": []}
        # A second round runs beside it in #gallery: blind, and the same seed for everyone.
        blind = await start(fake, "Night trains", channel="gallery", seed=42, blind=True)
        assert "the same seed for everyone (42), so only the prompt differs" in blind.content
        assert "prompts stay hidden until the results" in blind.content

        # Entries: private images, a Submit button each, and Try again.
        _, alice_try = await enter(fake, "alice", "a paper lantern on a lake", contest=1)
        assert alice_try.custom_ids()[-1].startswith("contest:retry:")
        assert [a.filename for a in alice_try.attachments] == ["image_1.png", "image_2.png"]
        assert "Only you see this." in alice_try.content
        assert (await click(fake, alice_try, "Submit 1", "alice")).startswith("✅ Entered! You have 1 of 2 entries")
        _, carol_try = await enter(fake, "carol", "lanterns in the rain", contest=1)
        await click(fake, carol_try, "Submit 2", "carol")
        await clock.advance(60)  # a minute later (the tie-break below goes to the entry submitted first)
        # dave enters twice, withdraws one (its slot is free again), and enters his Try again instead.
        _, dave_try = await enter(fake, "dave", "a lantern festival", contest=1)
        await click(fake, dave_try, "Submit 1", "dave")
        assert "2 of 2 entries" in await click(fake, dave_try, "Submit 2", "dave")
        again = await fake.click(dave_try, button_id(dave_try, "Try again"), user="dave")
        modal = await again.wait_response()
        assert modal.modal is not None
        retried = await again.submit_modal({"contest:prompt": "one lantern, seen from above"})
        second_try = await retried.wait_followup(lambda m: bool(m.attachments))
        assert "one lantern, seen from above" in second_try.content
        assert "You already have 2 of 2 entries" in await click(fake, second_try, "Submit 1", "dave")
        mine = await fake.slash("contest my-entries", {"contest": 1}, user="dave")
        listed = await answer(mine)
        assert len(listed.attachments) == 2 and listed.ephemeral
        assert (await click(fake, listed, "Withdraw 1", "dave")).startswith("↩ Withdrawn. You have 1 of 2")
        assert "2 of 2 entries" in await click(fake, second_try, "Submit 1", "dave")
        # The blind round: one image per try, all on seed 42.
        for user, prompt in (("alice", "a sleeper train at night"), ("erin", "a tram in fog")):
            _, tried = await enter(fake, user, prompt, channel="gallery", contest=2)
            assert len(tried.attachments) == 1 and button_id(tried, "Submit")
            await click(fake, tried, "Submit", user)
        # Nothing public names an entry, an author or a prompt yet.
        for message in public_messages(fake):
            assert "lantern on a lake" not in message.content and "sleeper train" not in message.content

        # Voting opens on schedule: a gallery in a thread, shuffled, numbered, without authors.
        await clock.advance(3600)
        first = await gallery_of(fake, bot, (await store.by_number(fake.guild("Art Club").id, 1)).id)
        second = await gallery_of(fake, bot, (await store.by_number(fake.guild("Art Club").id, 2)).id)
        assert fake.channel(first.gallery_channel_id).type == 11  # a public thread of #general
        entries = {entry.prompt: entry for entry in await store.entries(first.id, active=True)}
        assert sorted(entry.number or 0 for entry in entries.values()) == [1, 2, 3, 4]
        shown = gallery_messages(fake, first)
        assert [m.content.split("\n")[0] for m in shown[:4]] == [f"**Entry {n}**" for n in range(1, 5)]
        assert all("<@" not in m.content for m in shown) and all(m.attachments for m in shown[:4])
        dave = entries["one lantern, seen from above"]
        assert "> one lantern, seen from above" in entry_message(fake, first, dave).content
        blind_entries = await store.entries(second.id, active=True)
        assert {entry.seed for entry in blind_entries} == {42}
        for message in gallery_messages(fake, second):
            assert "train" not in message.content and "tram" not in message.content

        alice, carol = entries["a paper lantern on a lake"], entries["lanterns in the rain"]
        assert (await vote(fake, first, carol, "alice")).startswith(f"🗳 Your vote is on entry {carol.number}.")
        await vote(fake, first, alice, "carol")
        await vote(fake, first, alice, "dave")
        await vote(fake, first, dave, "bob")
        await vote(fake, first, carol, "erin")
        assert f"moved from entry {carol.number} to entry {alice.number}" in await vote(fake, first, alice, "erin")
        assert await vote(fake, first, alice, "alice") == "You can't vote for your own entry."
        end = next(m for m in gallery_messages(fake, first) if m.content.startswith("That's all"))
        assert await click(fake, end, "My vote", "erin") == \
            f"Your vote is on entry {alice.number} in **Autumn lanterns** (contest #1)."
        blind_by_user = {entry.user_id: entry for entry in blind_entries}
        await vote(fake, second, blind_by_user[fake.user("erin").id], "carol")
        # Tallies stay hidden until close: nothing public counts votes.
        assert not any("vote" in m.content and "votes" in m.content for m in public_messages(fake)
                       if m.content.startswith("**Entry"))

        # Close: the winners on a podium, authors and prompts revealed, points on the leaderboard.
        await clock.advance(1800)
        results = await results_of(fake, "Autumn lanterns")
        assert results.channel_id == fake.channel("general").id
        assert results.content.splitlines()[1:5] == [
            f"🥇 <@{fake.user('alice').id}> with entry {alice.number} · 3 votes", "> a paper lantern on a lake",
            f"🥈 <@{fake.user('carol').id}> with entry {carol.number} · 1 vote", "> lanterns in the rain"]
        # dave's entry has as many votes as carol's: the tie goes to carol's, submitted first.
        assert results.content.splitlines()[5] == f"🥉 <@{fake.user('dave').id}> with entry {dave.number} · 1 vote"
        assert results.attachments[0].filename == "podium.png" and results.allowed_mentions == {"parse": []}
        podium = Image.open(io.BytesIO(results.attachments[0].data))
        assert podium.size[0] > podium.size[1]
        reveal = await fake.wait_until(lambda: next((m for m in gallery_messages(fake, first)
                                                     if m.content.startswith("**Every entry")), None))
        assert "> a lantern festival" in reveal.content and f"<@{fake.user('dave').id}>" in reveal.content
        blind_results = await results_of(fake, "Night trains")
        assert "a tram in fog" in blind_results.content  # the blind round's prompts, revealed at last
        board = await answer(await fake.slash("contest leaderboard", user="carol"))
        assert board.content.splitlines()[1:5] == [
            f"1. <@{fake.user('alice').id}> · 3 points, 1 win", f"2. <@{fake.user('erin').id}> · 3 points, 1 win",
            f"3. <@{fake.user('carol').id}> · 2 points", f"4. <@{fake.user('dave').id}> · 1 point"]
        await phases_of(bot).next_pass()  # the results are shown before their post is stored as sent
        assert (await phases.posts(first.id))[-1].state == "posted"
    if os.environ.get("UPDATE_CONTEST_SAMPLE"):  # refresh the README's sample: UPDATE_CONTEST_SAMPLE=1 pytest ...
        (REPO / "docs" / "contest-podium-sample.png").write_bytes(results.attachments[0].data)
