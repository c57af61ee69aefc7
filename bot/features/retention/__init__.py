"""Retention: old images, job records and interaction tokens are purged in the background, as
``retention:`` in config.yaml says. A discord.py extension without commands; ``setup`` starts the
purge and unloading the extension stops it.

- ``purger``: the loop (Discord-free): purge, then sleep until the next run is due
- ``cog``: owns the loop for as long as the extension is loaded
"""

from __future__ import annotations

from discord.ext import commands

from bot.features.retention.cog import RetentionCog
from bot.features.retention.purger import Purger
from bot.services import services_of


async def setup(bot: commands.Bot) -> None:
    services = services_of(bot)
    await bot.add_cog(RetentionCog(Purger(services.storage, services.config, services.clock)))
