"""/queue and /help: what is waiting, and what the bot does and allows you. Thin: the texts are in ``texts``."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.config import resolve_limits
from bot.core.config_store import ConfigStore
from bot.discord_ui.interactions import NO_MENTIONS, requester_of
from bot.features.info.texts import help_text, queue_text
from bot.scheduler import Scheduler


class InfoCog(commands.Cog, name="Info"):
    def __init__(self, config: ConfigStore, scheduler: Scheduler) -> None:
        self._config = config
        self._scheduler = scheduler

    @app_commands.command(name="queue", description="Your requests and how long this server's queue is")
    async def queue(self, interaction: discord.Interaction[Any]) -> None:
        requester = requester_of(interaction)
        scheduler = self._scheduler
        snapshot = scheduler.snapshot(guild_id=requester.guild_id)
        text = queue_text(
            requester.user_id, not requester.in_dm, snapshot.running, snapshot.queued,
            here_waiting=snapshot.guild_lengths.get(requester.guild_id, 0),
            total_waiting=scheduler.snapshot().total_queued, paused=requester.guild_id in snapshot.paused_guilds)
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="help", description="What /imagine does, its flags and your limits")
    async def help(self, interaction: discord.Interaction[Any]) -> None:
        requester = requester_of(interaction)
        config = self._config.current
        limits = resolve_limits(config, requester.guild_id, requester.role_ids)
        daily = self._scheduler.daily_images(requester.guild_id, requester.user_id, requester.role_ids)
        await interaction.response.send_message(help_text(config, limits, daily), ephemeral=True,
                                                allowed_mentions=NO_MENTIONS)
