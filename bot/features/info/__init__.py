"""/queue and /help: what is waiting, and what the bot does and allows you. A discord.py extension."""

from __future__ import annotations

from discord.ext import commands

from bot.features.info.cog import InfoCog
from bot.services import services_of


async def setup(bot: commands.Bot) -> None:
    services = services_of(bot)
    await bot.add_cog(InfoCog(services.config, services.scheduler))
