"""The retention feature's cog: no commands, it owns the purge loop (started on load, stopped on unload)."""

from __future__ import annotations

from discord.ext import commands

from bot.features.retention.purger import Purger


class RetentionCog(commands.Cog, name="Retention"):
    def __init__(self, purger: Purger) -> None:
        self.purger = purger

    async def cog_load(self) -> None:
        self.purger.start()

    async def cog_unload(self) -> None:
        await self.purger.stop()
