"""/stats and /me: figures as text with a chart of images per day. Thin: ask the service, draw, reply.

/me is private (ephemeral): a member's own use is nobody else's business. /stats is private too by default, so
that looking at the figures posts nothing into the channel; ``share: True`` posts them for everyone (the top
users are shown as mentions that never ping).
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_ui.interactions import NO_MENTIONS, requester_of
from bot.features.stats import chart
from bot.features.stats.service import StatsService, Usage
from bot.features.stats.texts import CHART_TITLE, MY_CHART_TITLE, member_text, server_text
from bot.scheduler import Clock

CHART_FILE = "images-per-day.png"


async def _chart_file(usage: Usage, title: str) -> discord.File:
    data = await asyncio.to_thread(chart.png, usage.days, title)  # drawing and PNG encoding: off the event loop
    return discord.File(io.BytesIO(data), filename=CHART_FILE)


class StatsCog(commands.Cog, name="Stats"):
    def __init__(self, service: StatsService, clock: Clock) -> None:
        self._service = service
        self._clock = clock

    @app_commands.command(name="stats", description="How this server uses /imagine: images, top users, waits")
    @app_commands.describe(share="Post the figures for everyone in this channel (default: only you see them)")
    @app_commands.guild_only()
    async def stats(self, interaction: discord.Interaction[Any], share: bool = False) -> None:
        requester = requester_of(interaction)
        # The queries and the chart can outlast Discord's 3 s window on a busy database: acknowledge first.
        await interaction.response.defer(ephemeral=not share, thinking=True)
        figures = await self._service.server(requester.guild_id)
        name = interaction.guild.name if interaction.guild is not None else None
        await interaction.edit_original_response(content=server_text(name, figures),
                                                 attachments=[await _chart_file(figures.usage, CHART_TITLE)],
                                                 allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="me", description="Your /imagine use here: images, quota left, your latest images")
    async def me(self, interaction: discord.Interaction[Any]) -> None:
        requester = requester_of(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        figures = await self._service.member(requester.guild_id, requester.user_id, requester.role_ids)
        resets_in_s = max(0.0, figures.quota.resets_at - self._clock.time())
        await interaction.edit_original_response(content=member_text(requester.guild_id, figures, resets_in_s),
                                                 attachments=[await _chart_file(figures.usage, MY_CHART_TITLE)],
                                                 allowed_mentions=NO_MENTIONS)
