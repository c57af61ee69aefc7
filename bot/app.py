"""The Discord client: owns the scheduler, storage and presenter for its lifetime.

Dependencies come in through the constructor (``bot.__main__`` builds them); ``setup_hook`` opens
storage, starts the scheduler, resumes interrupted jobs, registers cogs and persistent buttons and
syncs commands; ``close`` drains the queue (queued jobs stay stored and resume on the next start).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.buttons import DYNAMIC_ITEMS
from bot.cogs.imagine import ImagineCog
from bot.cogs.info import InfoCog
from bot.config import ConfigStore
from bot.custom_ids import Action
from bot.lifecycle import JobRecorder
from bot.presenter import DiscordPresenter
from bot.replies import reply_error
from bot.scheduler import Clock, Scheduler
from bot.service import ImagineService
from bot.storage import Storage
from generation.interface import Executor

_log = logging.getLogger(__name__)


def _no_prefix(bot: commands.Bot, message: discord.Message) -> list[str]:
    return []


class ImagineBot(commands.Bot):
    def __init__(self, *, config: ConfigStore, storage: Storage, executor: Executor, clock: Clock | None = None,
                 drain_timeout_s: float = 30.0, watch_config: bool = True, **options: Any) -> None:
        # No prefix commands: a prefix that never matches keeps @mentions of the bot out of the error log.
        super().__init__(command_prefix=_no_prefix, intents=discord.Intents.default(),
                         allowed_mentions=discord.AllowedMentions.none(), help_command=None, **options)
        self.config = config
        self.executor = executor
        self.presenter = DiscordPresenter(self, storage, progress_interval_s=config.current.bot.progress_interval_s)
        self.recorder = JobRecorder(storage, self.presenter)
        self.service = ImagineService(config, storage, Scheduler(executor, config, clock=clock, listener=self.recorder))
        self._drain_timeout_s = drain_timeout_s
        self._watch_config = watch_config
        self._watcher: asyncio.Task[None] | None = None
        self._imagine: ImagineCog | None = None
        self._shutdown: asyncio.Future[None] | None = None
        self.tree.error(self._on_tree_error)

    async def setup_hook(self) -> None:
        await self.service.storage.open()
        await self.service.scheduler.start()
        self._imagine = ImagineCog(self)
        await self.add_cog(self._imagine)
        await self.add_cog(InfoCog(self))
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        await self._resume_jobs()
        await self._sync_commands()
        if self._watch_config and self.config.path is not None:
            self._watcher = asyncio.create_task(self.config.watch(asyncio.sleep), name="config-watch")
            self.config.install_sighup(asyncio.get_running_loop())

    async def button_handler(self, interaction: discord.Interaction[Any], action: Action, job_id: str,
                             index: int | None) -> None:
        assert self._imagine is not None
        await self._imagine.on_button(interaction, action, job_id, index)

    async def _on_tree_error(self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError) -> None:
        await reply_error(interaction, error)

    async def _sync_commands(self) -> None:
        dev_guilds = self.config.current.discord.dev_guilds
        if dev_guilds:
            for guild_id in dev_guilds:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                try:
                    await self.tree.sync(guild=guild)
                except discord.HTTPException as exc:  # e.g. the bot is not in that server
                    _log.error("could not sync commands to discord.dev_guilds entry %s: %s", guild_id, exc)
                    continue
                _log.info("commands synced to development guild %s", guild_id)
        else:
            await self.tree.sync()
            _log.info("commands synced globally (may take up to an hour to appear everywhere)")

    async def _resume_jobs(self) -> None:
        # Resumed jobs need nothing here: the presenter finds their status messages in storage.
        _, dropped = await self.service.resume()
        for stored, _reason in dropped:
            if stored.status_message_id is None:
                continue  # nothing on Discord to update
            refreshed = await self.service.storage.require_job(stored.id)  # its status and error say why
            await self.presenter.finished(refreshed, None)

    async def close(self) -> None:
        """Stop admitting, let the running batch finish (or interrupt it), keep queued jobs stored.

        SIGTERM and ``async with bot`` may both call this: every caller waits for the one shutdown."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._shut_down())
        await asyncio.shield(self._shutdown)

    async def _shut_down(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self.recorder.shutting_down = True
        try:
            handed_back = await self.service.scheduler.drain(timeout_s=self._drain_timeout_s)
            await self.service.scheduler.flush_notifications()
            _log.info("shutdown: %d queued job(s) kept for the next start", len(handed_back))
            for job in handed_back:  # their queue position no longer means anything until the restart
                await self.presenter.interrupted(job.id)
            await self.executor.close(cancel_running=True)
        finally:
            await self.service.storage.close()
            await super().close()
