"""Sharding (README, Scaling out: "`discord.shards`"): the bot as discord.py's AutoShardedClient against the
fake Discord, which recommends shards and sends each guild's events to its own shard, as Discord does."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.app import ImagineBot
from bot.core.config import DiscordConfig, ObservabilityConfig, parse_config
from bot.sharding import IdentifyPacer, ShardedImagineBot
from generation.errors import ConfigError
from tests.bot_harness import WAIT_S, is_result, running_bot, tiny_app_config
from tests.fake_discord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, FakeUser, id_on_shard
from tests.frozen_clock import FrozenClock
from tests.test_bot_observability import free_port, readiness
from tests.test_bot_process import ROOT, SMALL_CONFIG, bot_env, bot_process, stop, until_synced


def test_shards_setting_accepts_none_auto_or_a_count_and_says_what_is_allowed() -> None:
    assert parse_config("discord: {}\n").discord.shards is None  # default: one connection, as before
    assert parse_config("discord: {shards: none}\n").discord.shards is None
    assert parse_config("discord: {shards: auto}\n").discord.shards == "auto"
    assert parse_config("discord: {shards: 4}\n").discord.shards == 4
    allowed = ("allowed: none (one gateway connection, the default), auto (as many shards as Discord recommends) "
               "or a number of shards from 1 to 10000")
    shown = {"many": "'many'", "0": "0", "-2": "-2", "2.5": "2.5", "true": "True", "10001": "10001"}
    for value, echoed in shown.items():
        with pytest.raises(ConfigError) as refused:
            parse_config(f"discord:\n  dev_guilds: []\n  shards: {value}\n")
        assert str(refused.value) == (f"config.yaml: invalid configuration: discord.shards (line 3): {echoed} is not "
                                      f"a shard setting; {allowed}")
    # discord.py's own name would otherwise be kept as an unknown key and silently run one shard.
    with pytest.raises(ConfigError, match=r"discord \(line 1\): shard_count is not a setting; use shards: none"):
        parse_config("discord:\n  shard_count: 2\n")


def two_shard_world() -> list[FakeGuild]:
    """Two servers whose ids land on shards 0 and 1 of two; alice is in both."""
    alice, owner = FakeUser("alice"), FakeUser("olive")
    return [FakeGuild(name, id=id_on_shard(shard, 2), channels=[FakeChannel("imagine")], owner_id=owner.id,
                      members=[FakeMember(alice), FakeMember(owner)])
            for name, shard in (("Even", 0), ("Odd", 1))]


@asynccontextmanager
async def sharded_fake(clock: FrozenClock, *, max_concurrency: int) -> AsyncIterator[FakeDiscord]:
    """A fake Discord that recommends two shards; shards of different rate-limit keys may identify together."""
    async with FakeDiscord(guilds=two_shard_world(), recommended_shards=2, max_concurrency=max_concurrency,
                           default_timeout=WAIT_S, clock=clock) as fake:
        with fake.patch_discord():
            yield fake
    fake.assert_no_failures()


async def imagine_in_each_guild(fake: FakeDiscord) -> None:
    """/imagine from each server, both queued before either is awaited: every result reaches its own server."""
    handles = [await fake.slash("imagine", {"prompt": f"a lighthouse in {guild.name} --seed 3"}, guild=guild,
                                user="alice") for guild in fake.guilds]
    for guild, handle in zip(fake.guilds, handles, strict=True):
        result = await handle.wait_original(is_result)
        assert result.guild_id == guild.id and f"a lighthouse in {guild.name}" in result.content


async def test_auto_runs_the_shards_discord_recommends_and_imagine_works_on_each(clock: FrozenClock,
                                                                                 tmp_path: Path) -> None:
    """README: "`auto` asks Discord how many shards to run"; members on every shard get their images."""
    port = free_port()
    config = tiny_app_config(discord=DiscordConfig(shards="auto"),
                             observability=ObservabilityConfig(http_port=port))
    async with sharded_fake(clock, max_concurrency=2) as fake, running_bot(fake, tmp_path, config) as bot:
        assert fake.shards == [(0, 2), (1, 2)]  # one gateway connection per recommended shard
        assert isinstance(bot, ShardedImagineBot) and bot.shard_count == 2
        assert {guild.name: guild.shard_id for guild in bot.guilds} == {"Even": 0, "Odd": 1}
        await imagine_in_each_guild(fake)
        status, body = await readiness(port)  # operators see every shard up, not one socket
        assert status == 200 and body["checks"]["gateway"]["ok"]
        assert body["checks"]["gateway"]["detail"].startswith("2 shards connected")


async def test_a_fixed_shard_count_is_used_as_configured(clock: FrozenClock, tmp_path: Path) -> None:
    """README: "a number fixes the count": three shards although Discord recommends two."""
    config = tiny_app_config(discord=DiscordConfig(shards=3))
    async with sharded_fake(clock, max_concurrency=4) as fake, running_bot(fake, tmp_path, config) as bot:
        assert fake.shards == [(0, 3), (1, 3), (2, 3)]
        assert bot.shard_count == 3
        await imagine_in_each_guild(fake)


async def test_the_default_stays_one_unsharded_connection(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, tmp_path) as bot:
        assert fake.shards == [(0, 1)] and fake.identify is not None and "shard" not in fake.identify
        assert type(bot) is ImagineBot and fake.requests_to("GET", "/gateway/bot") == []


async def test_shards_of_one_rate_limit_key_identify_five_seconds_apart() -> None:
    """Discord's session start limit, on a simulated clock: max_concurrency 1 spaces every shard by 5 s; with 2,
    shards 0 and 1 start together and shard 2 waits for shard 0's key."""
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    one = IdentifyPacer(1, clock=lambda: now[0], sleep=sleep)
    for shard in range(3):
        await one.wait(shard)
    assert waits == [5.0, 5.0]
    waits.clear()
    two = IdentifyPacer(2, clock=lambda: now[0], sleep=sleep)
    await two.wait(0)
    await two.wait(1)
    now[0] += 2.0
    await two.wait(2)
    assert waits == [3.0]


async def test_python_m_bot_in_too_many_servers_says_to_shard_and_runs_with_auto(tmp_path: Path) -> None:
    """README: "Discord requires sharding from 2,500 servers" (one server per connection in this fake): the
    unsharded bot exits 2 saying which setting to change; with it, it serves every server."""
    async with FakeDiscord(guilds=two_shard_world(), recommended_shards=2, max_concurrency=2, guilds_per_shard=1,
                           default_timeout=WAIT_S) as fake:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=ROOT, env=bot_env(tmp_path, **fake.env),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(process.communicate(), WAIT_S)
        assert process.returncode == 2, stderr.decode()
        assert stderr.decode().splitlines() == [
            "imagine: Discord requires sharding: a gateway connection may hold at most 2,500 servers; set "
            "discord.shards: auto in the config (or a larger number of shards)"]
        assert [failure for failure in fake.pop_failures() if "sharding required" not in failure] == []

        (tmp_path / "config.yaml").write_text(SMALL_CONFIG + "discord: {shards: auto}\n")
        log_path = tmp_path / "bot.log"
        async with bot_process(bot_env(tmp_path, **fake.env), log_path) as process:
            await until_synced(fake, process, log_path, "imagine")
            await fake.wait_until(lambda: fake.shards == [(0, 2), (1, 2)], what="both shards to connect")
            await imagine_in_each_guild(fake)
            code = await stop(process)
        assert code == 0, log_path.read_text()
    fake.assert_no_failures()
