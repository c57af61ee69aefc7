"""README claims about limits, /queue and cancel, proved through Discord: the real bot and discord.py client
against the fake Discord, the real scheduler and SQLite, the tiny model or ``GateExecutor``, on a frozen clock
(so every "try again in ..." is exact)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.core.config import Bucket, GuildConfig, Limits
from tests.bot_harness import (
    UNLIMITED,
    GateExecutor,
    WatchedStorage,
    button,
    is_result,
    public,
    running_bot,
    tiny_app_config,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.frozen_clock import FrozenClock

NOT_YOURS = "🚫 Only the person who asked for this image or a moderator of this server can cancel it."


def moderator_role(fake: FakeDiscord) -> list[int]:
    role = fake.guild().role("Moderator")
    assert role is not None
    return [role.id]


def with_guild(fake: FakeDiscord, **overrides: Any) -> dict[int, GuildConfig]:
    """The guild's config: its Moderator role plus ``overrides`` (channels, limits...)."""
    return {fake.guild().id: GuildConfig(moderator_roles=moderator_role(fake), **overrides)}


def results(fake: FakeDiscord) -> list[StoredMessage]:
    return [message for message in public(fake) if is_result(message)]


async def test_every_button_goes_through_the_same_limits_as_imagine(fake: FakeDiscord, clock: FrozenClock,
                                                                    tmp_path: Path) -> None:
    """README: "Every button goes through the same limits as `/imagine`." """
    limits = UNLIMITED.model_copy(update={"user_rate": Bucket(amount=2, window_s=3600, burst=2)})
    async with running_bot(fake, tmp_path, tiny_app_config(fake, limits=limits)):
        first = await (await fake.slash("imagine", {"prompt": "a red fox --seed 5"}, user="alice")).wait_original(
            is_result)
        await (await fake.slash("imagine", {"prompt": "a blue owl"}, user="alice")).wait_original(is_result)

        limited = await (await fake.slash("imagine", {"prompt": "a third"}, user="alice")).wait_original()
        expected = "⏳ You can make 2 requests an hour; try again in 30 min."
        assert limited.ephemeral and limited.content == expected
        shown = [(m.id, m.content) for m in public(fake)]

        for label in ("🔄", "V1", "U1"):
            click = await fake.click(first, button(first, label), user="alice")
            reply = await click.wait_followup(lambda m: m.ephemeral)
            assert reply.content == expected, label  # the very text /imagine gave
            assert click.original is None or click.original.deleted  # the "thinking…" placeholder is gone
        assert [(m.id, m.content) for m in public(fake)] == shown  # nothing public appeared, nothing changed

        await clock.advance(30 * 60)  # the bucket refills one request
        reroll = await fake.click(first, button(first, "🔄"), user="alice")
        rerolled = await reroll.wait_original(is_result)
        assert not rerolled.ephemeral and rerolled.content.startswith("**a red fox**")
        assert "Rerolled" in rerolled.content
        assert len(results(fake)) == 3


async def test_daily_quota_refusal_says_what_is_left_and_when_it_resets(fake: FakeDiscord, clock: FrozenClock,
                                                                             tmp_path: Path) -> None:
    """README: "`limits:` per-user and per-server token buckets, queue caps, daily image quota with its reset
    hour and time zone." """
    await clock.advance((22.5 * 3600 - clock.time()) % 86400)  # 22:30 UTC: the quota resets in 1 h 30 min
    limits = UNLIMITED.model_copy(update={"daily_images_per_user": 3})
    async with running_bot(fake, tmp_path, tiny_app_config(fake, limits=limits)):
        handle = await fake.slash("imagine", {"prompt": "two foxes --count 2"}, user="alice")
        await handle.wait_original(is_result)

        refused = await (await fake.slash("imagine", {"prompt": "two owls --count 2"}, user="alice")).wait_original()
        assert refused.ephemeral
        assert refused.content == (
            "⏳ You have 1 of your 3 daily images left, and this request makes 2. They reset at 00:00 UTC, "
            "in 1 h 30 min.")
        assert not any("two owls" in m.content for m in public(fake))

        await clock.advance(90 * 60 + 1)  # a new quota day
        again = await fake.slash("imagine", {"prompt": "two owls --count 2"}, user="alice")
        assert "two owls" in (await again.wait_original(is_result)).content


async def test_the_server_bucket_is_shared_by_its_members(fake: FakeDiscord, clock: FrozenClock,
                                                          tmp_path: Path) -> None:
    """README: "`limits:` per-user and per-server token buckets ... `guilds: {"<id>": …}` overrides them per
    server"."""
    server_limits = Limits(guild_rate=Bucket(amount=1, window_s=600))  # only guild_rate is overridden
    config = tiny_app_config(fake, guilds=with_guild(fake, limits=server_limits))
    async with running_bot(fake, tmp_path, config):
        await (await fake.slash("imagine", {"prompt": "alice's fox"}, user="alice")).wait_original(is_result)

        refused = await (await fake.slash("imagine", {"prompt": "carol's owl"}, user="carol")).wait_original()
        assert refused.ephemeral
        assert refused.content == "⏳ This server can make 1 request every 10 min; try again in 10 min."
        assert not any("carol" in m.content for m in public(fake))

        await clock.advance(10 * 60)
        again = await fake.slash("imagine", {"prompt": "carol's owl"}, user="carol")
        assert "carol's owl" in (await again.wait_original(is_result)).content


async def test_the_channel_allow_list_refuses_other_channels(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "`guilds: {"<id>": …}` overrides them per server (and per role within a server), with the
    server's fair-share `weight`, its channel allow-list, moderator roles and banned members" """
    imagine = fake.channel("imagine")
    async with running_bot(fake, tmp_path, tiny_app_config(fake, guilds=with_guild(fake, channels=[imagine.id]))):
        handle = await fake.slash("imagine", {"prompt": "a fox in general"}, user="alice", channel="general")
        refused = await handle.wait_original()
        assert refused.ephemeral
        assert refused.content == f"🚫 /imagine isn't enabled in this channel; use it in <#{imagine.id}>."
        assert public(fake) == []

        allowed = await fake.slash("imagine", {"prompt": "a fox in imagine"}, user="alice", channel="imagine")
        result = await allowed.wait_original(is_result)
        assert result.channel_id == imagine.id and "a fox in imagine" in result.content


async def test_queue_lists_your_jobs_and_the_queue_length(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "`/queue` lists your jobs and the queue length" """
    gpu = GateExecutor()
    async with running_bot(fake, tmp_path, executor=gpu) as bot:
        running = await fake.slash("imagine", {"prompt": "alice castle"}, user="alice")
        await running.wait_original(lambda m: "Starting" in m.content)
        mine = await fake.slash("imagine", {"prompt": "alice tower"}, user="alice")
        await mine.wait_original(lambda m: "Queued" in m.content)
        theirs = await fake.slash("imagine", {"prompt": "carol secret garden"}, user="carol")
        await theirs.wait_original(lambda m: "Queued" in m.content)
        storage = bot.services.storage
        assert isinstance(storage, WatchedStorage)
        await storage.wait_until(lambda: storage.jobs_in_states(["running"]), what="alice's first job running")

        reply = await (await fake.slash("queue", user="alice")).wait_original()
        assert reply.ephemeral
        lines = reply.content.split("\n")
        assert lines[0] == "▶ Running: alice castle"
        # The tiny model's estimate is a few milliseconds and the clock stands still: it starts now, never
        # "in about 0.0 s".
        assert lines[1:] == ["⏳ Next in line · starting now: alice tower",
                             "This server: 2 waiting, 1 running · all servers: 2 waiting"]
        assert "carol" not in reply.content

        carol = await (await fake.slash("queue", user="carol")).wait_original()
        assert carol.ephemeral and carol.content.split("\n") == ["⏳ 2nd in line · starting now: carol secret garden",
                                                                 lines[2]]
        gpu.gate.set()
        for handle in (running, mine, theirs):
            await handle.wait_original(is_result)
    assert [m for m in public(fake) if "Running:" in m.content or "waiting," in m.content] == []


async def test_cancel_while_running_and_by_a_moderator(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "**✖ Cancel** on the status message while queued or running." """
    gpu = GateExecutor()
    async with running_bot(fake, tmp_path, executor=gpu) as bot:
        storage = bot.services.storage
        assert isinstance(storage, WatchedStorage)
        running = await fake.slash("imagine", {"prompt": "a slow castle"}, user="alice")
        running_status = await running.wait_original(lambda m: "Starting" in m.content)
        await storage.wait_until(lambda: storage.jobs_in_states(["running"]), what="the castle running")
        queued = await fake.slash("imagine", {"prompt": "a waiting tower"}, user="alice")
        queued_status = await queued.wait_original(lambda m: "Queued" in m.content)

        # Another member may not cancel it; a moderator of the server may.
        refused = await (await fake.click(queued_status, button(queued_status, "Cancel"), user="carol")).wait_original()
        assert refused.ephemeral and refused.content == NOT_YOURS
        assert "Queued" in fake.message(queued_status.id).content
        by_moderator = await fake.click(queued_status, button(queued_status, "Cancel"), user="bob")
        reply = await by_moderator.wait_original()
        assert reply.ephemeral and reply.content == "Cancelled."
        tower = await queued.wait_original(lambda m: m.content.startswith("✖ Cancelled."))
        assert tower.content == "✖ Cancelled." and tower.components == []  # said once

        # The owner cancels the running job: the batch drops it when the executor returns.
        refused = await (await fake.click(running_status, button(running_status, "Cancel"),
                                          user="carol")).wait_original()
        assert refused.ephemeral and refused.content == NOT_YOURS
        by_owner = await fake.click(running_status, button(running_status, "Cancel"), user="alice")
        reply = await by_owner.wait_original()
        assert reply.ephemeral and reply.content == "Cancelled."
        gpu.gate.set()
        castle = await running.wait_original(lambda m: m.content.startswith("✖ Cancelled."))
        assert castle.components == [] and castle.attachments == []
        cancelled = await storage.wait_until(
            lambda: _all_cancelled(storage, 2), what="both jobs cancelled in the database")
        assert len(cancelled) == 2
    assert results(fake) == []  # no result was posted for either job
    assert [batch[0].prompt for batch in gpu.batches] == ["a slow castle"]  # the tower never ran


async def _all_cancelled(storage: WatchedStorage, count: int) -> list[object] | None:
    found = await storage.jobs_in_states(["cancelled"])
    return list(found) if len(found) == count else None
