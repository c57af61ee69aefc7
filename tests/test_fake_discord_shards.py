"""The fake Discord shards as Discord does: a real discord.py AutoShardedClient, and raw gateway frames for
what discord.py never sends (a bad shard, identifies too close together)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.fake_discord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, FakeUser, id_on_shard, run_client
from tests.fake_discord.gateway import DISPATCH, HELLO, IDENTIFY, INVALID_SESSION

WAIT_S = 30.0


def two_shard_world() -> list[FakeGuild]:
    alice = FakeUser("alice")
    return [FakeGuild(name, id=id_on_shard(shard, 2), channels=[FakeChannel("general")], members=[FakeMember(alice)])
            for name, shard in (("Even", 0), ("Odd", 1))]


class ShardedEcho(discord.AutoShardedClient):
    """Answers /where with the guild it was asked in; identifies its shards at once (the fake allows 16 together)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05, **options)
        self.tree = app_commands.CommandTree(self)

        @self.tree.command(description="Where was this asked?")
        async def where(interaction: discord.Interaction) -> None:
            guild = interaction.guild
            await interaction.response.send_message(f"{guild.name} on shard {guild.shard_id}" if guild else "a DM")

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        pass  # max_concurrency 16: every shard here may identify together


@pytest.fixture
async def sharded_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(guilds=two_shard_world(), recommended_shards=2, max_concurrency=16,
                           default_timeout=WAIT_S) as fake:
        with fake.patch_discord():
            yield fake
    fake.assert_no_failures()


def dispatched(fake: FakeDiscord, shard: tuple[int, int], event: str) -> list[str | None]:
    """The guild ids of ``event``s the fake sent on ``shard`` (None for a DM)."""
    assert fake.gateway is not None
    key = "id" if event == "GUILD_CREATE" else "guild_id"
    return [p["d"].get(key) for p in fake.gateway.shards[shard].sent if p["t"] == event]


async def test_each_shard_gets_its_own_guilds_and_their_interactions(sharded_fake: FakeDiscord) -> None:
    fake = sharded_fake
    even, odd = fake.guild("Even"), fake.guild("Odd")
    async with run_client(fake, ShardedEcho()) as client:
        assert fake.shards == [(0, 2), (1, 2)]  # asked /gateway/bot, connected once per recommended shard
        assert len(fake.requests_to("GET", "/gateway/bot")) == 1
        assert dispatched(fake, (0, 2), "GUILD_CREATE") == [str(even.id)]
        assert dispatched(fake, (1, 2), "GUILD_CREATE") == [str(odd.id)]

        for guild, shard in ((even, 0), (odd, 1)):
            handle = await fake.slash("where", guild=guild, user="alice")
            assert (await handle.wait_original()).content == f"{guild.name} on shard {shard}"
        assert dispatched(fake, (0, 2), "INTERACTION_CREATE") == [str(even.id)]
        assert dispatched(fake, (1, 2), "INTERACTION_CREATE") == [str(odd.id)]

        handle = await fake.slash("where", user="alice", dm=True)
        assert (await handle.wait_original()).content == "a DM"
        assert dispatched(fake, (0, 2), "INTERACTION_CREATE") == [str(even.id), None]  # DMs: shard 0
        assert client.shard_count == 2


async def test_a_fixed_count_needs_no_recommendation(sharded_fake: FakeDiscord) -> None:
    fake = sharded_fake
    async with run_client(fake, ShardedEcho(shard_count=3)):
        assert fake.shards == [(0, 3), (1, 3), (2, 3)]
        assert fake.requests_to("GET", "/gateway/bot") == []
        for guild in fake.guilds:  # wherever its id lands among three shards, it is answered there
            handle = await fake.slash("where", guild=guild, user="alice")
            assert (await handle.wait_original()).content.startswith(guild.name)


async def identify(session: aiohttp.ClientSession, fake: FakeDiscord, shard: Any) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(fake.gateway_url + "?v=10&encoding=json")
    assert json.loads((await ws.receive()).data)["op"] == HELLO
    await ws.send_str(json.dumps({"op": IDENTIFY, "d": {"token": f"Bot {fake.token}", "intents": 1, "shard": shard,
                                                        "properties": {}}}))
    return ws


async def test_a_bad_shard_is_refused_with_4010() -> None:
    async with FakeDiscord(guilds=two_shard_world()) as fake, aiohttp.ClientSession() as http:
        for shard in ([2, 2], [0, 0], [-1, 2], [0], "0,1"):
            ws = await identify(http, fake, shard)
            assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4010
        assert len(fake.pop_failures()) == 5


async def test_shards_of_one_rate_limit_key_may_not_identify_together() -> None:
    """max_concurrency 1: one IDENTIFY per 5 s; the second shard is told its session is invalid."""
    async with FakeDiscord(guilds=two_shard_world(), recommended_shards=2) as fake, aiohttp.ClientSession() as http:
        first = await identify(http, fake, [0, 2])
        ready = json.loads((await first.receive()).data)
        assert (ready["op"], ready["t"], ready["d"]["shard"]) == (DISPATCH, "READY", [0, 2])
        second = await identify(http, fake, [1, 2])
        assert json.loads((await second.receive()).data) == {"op": INVALID_SESSION, "d": False, "s": None, "t": None}
        [failure] = fake.pop_failures()
        assert "rate-limit key 0 (max_concurrency 1" in failure


async def test_a_bot_in_too_many_guilds_for_one_shard_is_told_to_shard() -> None:
    async with FakeDiscord(guilds=two_shard_world(), guilds_per_shard=1, max_concurrency=2) as fake:
        with fake.patch_discord():
            client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
            with pytest.raises(discord.ConnectionClosed) as closed:
                async with run_client(fake, client):
                    pass
        assert closed.value.code == 4011
        [failure] = fake.pop_failures()
        assert "would hold 2 guilds (at most 1): sharding required" in failure
        # Sharded, each shard holds one guild: accepted.
        with fake.patch_discord():
            async with run_client(fake, ShardedEcho(shard_count=2)):
                assert fake.shards == [(0, 2), (1, 2)]
