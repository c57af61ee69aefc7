"""/imagine end to end: the real bot and discord.py client against the fake Discord, tiny model, SQLite."""

from __future__ import annotations

from pathlib import Path

from bot.render import read_parameters
from tests.bot_harness import decode, is_result, running_bot
from tests.fake_discord import FakeDiscord

pytest_plugins = ["tests.fake_discord.fixtures"]


async def test_imagine_posts_a_grid_with_buttons_and_parameters(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake_discord, tmp_path):
        handle = await fake_discord.slash("imagine", {"prompt": "a red fox in snow @everyone --seed 5 --count 2"},
                                          user="alice")
        result = await handle.wait_original(is_result)
        grid = decode(result)
        assert grid.size == (128, 64)  # two 64x64 images side by side
        assert "Seeds 5, 6" in result.content
        assert "--seed" not in result.content
        assert "@\u200beveryone" in result.content or "@everyone" not in result.content.replace("@\u200b", "")
        parameters = read_parameters(result.attachments[0].data)
        assert parameters is not None and "Seed: 5" in parameters
        assert {"U1", "U2", "V1", "V2"} <= {c.get("label") for row in result.components for c in row["components"]}
        # Every message the bot sent or edited had mentions switched off.
        assert fake_discord.allowed_mentions
        assert all(entry.sent and entry.value == {"parse": []} for entry in fake_discord.allowed_mentions)
