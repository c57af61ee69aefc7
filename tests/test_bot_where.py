"""Where /imagine works: direct messages (off unless ``bot.allow_dms``) and threads (they inherit their
channel's place in ``guilds.<id>.channels``). End to end through the fake Discord."""

from __future__ import annotations

from pathlib import Path

from bot.core.config import BotConfig, Bucket, GuildConfig, Limits
from tests.bot_harness import UNLIMITED, GateExecutor, WatchedStorage, is_result, public, running_bot, tiny_app_config
from tests.fake_discord import FakeChannel, FakeDiscord
from tests.fake_discord.models import PUBLIC_THREAD
from tests.scheduler_helpers import make_job
from tests.test_scheduler_limits import build

DMS_OFF = "🚫 /imagine works only in servers on this bot; use it in a channel of a server the bot is in."


async def test_imagine_in_a_direct_message_is_refused_by_default(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "In direct messages it answers that it works in servers only, unless `bot.allow_dms: true`"
    (privately, and nothing is stored or run)."""
    async with running_bot(fake, tmp_path) as bot:
        handle = await fake.slash("imagine", {"prompt": "a fox"}, user="alice", dm=True)
        reply = await handle.wait_original()
        assert reply.ephemeral and reply.content == DMS_OFF
        assert await bot.services.storage.jobs_in_states(["queued", "running", "done", "refused"]) == []
    assert public(fake) == []
    assert not fake.downloads


async def test_with_dms_allowed_each_dm_user_has_their_own_bucket_and_queue(fake: FakeDiscord,
                                                                          tmp_path: Path) -> None:
    """README: "then each DM user counts as a server of their own (their own server bucket, queue cap and
    fair share)", not one server of everyone who writes to the bot privately (guild id 0)."""
    limits = UNLIMITED.model_copy(update={"guild_rate": Bucket(amount=1, window_s=600), "max_queued_per_guild": 1})
    config = tiny_app_config(fake, limits=limits, bot=BotConfig(progress_interval_s=0.0, allow_dms=True))
    gpu = GateExecutor()
    async with running_bot(fake, tmp_path, config, executor=gpu) as bot:
        storage = bot.services.storage
        assert isinstance(storage, WatchedStorage)
        alice = await fake.slash("imagine", {"prompt": "alice's fox"}, user="alice", dm=True)
        await alice.wait_original(lambda m: "Starting" in m.content)
        await storage.wait_until(lambda: storage.jobs_in_states(["running"]), what="alice's job running")
        carol = await fake.slash("imagine", {"prompt": "carol's owl"}, user="carol", dm=True)
        queued = await carol.wait_original(lambda m: "Queued" in m.content)
        assert not queued.ephemeral  # admitted: alice's DMs used neither carol's bucket nor her queue

        again = await (await fake.slash("imagine", {"prompt": "alice's owl"}, user="alice", dm=True)).wait_original()
        # In DMs the "server" bucket is alice's own: it is her limit, in the same words.
        assert again.ephemeral and again.content == "⏳ You can make 1 request every 10 min; try again in 10 min."
        gpu.gate.set()
        assert "alice's fox" in (await alice.wait_original(is_result)).content
        assert "carol's owl" in (await carol.wait_original(is_result)).content
    assert {message.channel_id for message in public(fake)} == {fake.state.dm_channel_for(fake.user(name)).id
                                                                for name in ("alice", "carol")}


def test_each_dm_user_takes_a_fair_share_like_a_server() -> None:
    """The fair queue: two DM users asking while a server member floods the queue each go before the flood's
    second job, as two servers would; sharing one lane for all DMs, the second DM user waited behind it."""
    scheduler, _, _ = build()
    flood = [scheduler.submit(make_job(guild=1, user=10)) for _ in range(4)]
    alice = scheduler.submit(make_job(guild=0, user=20))
    carol = scheduler.submit(make_job(guild=0, user=30))
    positions = [scheduler.position(job.id) for job in (*flood, alice, carol)]
    assert positions == [1, 4, 5, 6, 2, 3]


def _thread(fake: FakeDiscord, name: str, parent: str) -> FakeChannel:
    """A public thread under ``parent``, in the guild before the bot connects (GUILD_CREATE lists it)."""
    guild = fake.guild()
    thread = FakeChannel(name, type=PUBLIC_THREAD, parent_id=fake.channel(parent).id, guild_id=guild.id)
    guild.channels.append(thread)
    return thread


async def test_a_thread_follows_its_channels_place_in_the_allow_list(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "`/imagine` works in server channels, and in threads wherever their channel is allowed." The
    result goes to the thread; a thread under a channel off the allow-list is refused."""
    allowed_thread = _thread(fake, "fox ideas", parent="imagine")
    other_thread = _thread(fake, "chatter", parent="general")
    imagine = fake.channel("imagine")
    guilds = {fake.guild().id: GuildConfig(channels=[imagine.id], limits=Limits())}
    async with running_bot(fake, tmp_path, tiny_app_config(fake, guilds=guilds)):
        handle = await fake.slash("imagine", {"prompt": "a fox in a thread"}, user="alice", channel=allowed_thread)
        result = await handle.wait_original(is_result)
        assert result.channel_id == allowed_thread.id and "a fox in a thread" in result.content

        refused = await (await fake.slash("imagine", {"prompt": "an owl"}, user="alice",
                                          channel=other_thread)).wait_original()
        assert refused.ephemeral and refused.content == (
            f"🚫 /imagine isn't enabled in this channel; use it in <#{imagine.id}>.")
    assert [m.channel_id for m in public(fake)] == [allowed_thread.id]
