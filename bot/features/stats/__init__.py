"""/stats (a server's use of the bot) and /me (a member's own), each with a chart of images per day.
A discord.py extension: ``setup`` builds the feature from the bot's services.

- ``cog``: the two commands (ask the service, draw the chart off the loop, reply)
- ``service``: which figures over which periods (the server's quota days), Discord-free
- ``queries``: the SQL aggregates over stored jobs (SQLite and PostgreSQL; never an image blob)
- ``chart``: images per day as a Pillow-drawn PNG
- ``texts``: what the replies say
"""

from __future__ import annotations

from discord.ext import commands

from bot.features.stats.cog import StatsCog
from bot.features.stats.service import StatsService
from bot.services import services_of


async def setup(bot: commands.Bot) -> None:
    services = services_of(bot)
    await bot.add_cog(StatsCog(StatsService(services.storage, services.scheduler), services.clock))
