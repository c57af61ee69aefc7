"""The Discord client: loads the feature extensions, syncs commands, and closes everything in order.

Dependencies come in through the constructor as one ``Services`` object (``bot.__main__`` builds it).
``setup_hook`` opens storage, lays the servers' stored settings over the config, starts the scheduler,
loads each feature in ``FEATURES`` (each a discord.py extension that subscribes to job events, resumes
its work and registers its commands and buttons), then syncs. ``close`` drains the queue (queued jobs
stay stored and resume on the next start), stops the executor, unloads the features and closes storage
last.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_ui.invite import INVITE_LABELS, SCOPES, invite_url
from bot.discord_ui.replies import reply_error
from bot.observability import Health, OperationsServer, ReadinessCheck, database_check, model_check
from bot.services import Services

_log = logging.getLogger(__name__)

# Loaded in this order; a new feature is one more entry (see docs/architecture.md). Moderation comes first: the
# servers its moderators paused are paused again before imagine resumes the jobs that were queued at the restart.
FEATURES: tuple[str, ...] = ("bot.features.moderation", "bot.features.imagine", "bot.features.info",
                             "bot.features.retention", "bot.features.stats", "bot.features.contests")


def intents() -> discord.Intents:
    """The one gateway intent the bot asks for: Guilds (servers, channels, threads and roles in the cache,
    which interactions are resolved against). Slash commands and buttons arrive without any intent, so no
    message events are requested at all, and nothing privileged (Message Content, Server Members, Presence)."""
    return discord.Intents(guilds=True)


def heartbeat_detail(text: str, latency: float) -> str:
    """``text`` with the heartbeat's round trip, once there is one (discord.py says inf or nan before)."""
    return f"{text}, heartbeat {latency * 1000:.0f} ms" if math.isfinite(latency) else text


class ImagineBot(commands.Bot):
    def __init__(self, services: Services, *, features: Sequence[str] = FEATURES, drain_timeout_s: float = 30.0,
                 watch_config: bool = True, **options: Any) -> None:
        # commands.Bot for its extensions and cogs only. No prefix commands: an empty prefix list never matches
        # (and no message events arrive to match against); discord.py warns about the Message Content intent
        # only for a bot that has a prefix, so this bot starts without that misleading warning.
        # This bot never joins voice: discord.py's one-time "PyNaCl/davey is not installed" warnings do not
        # apply, and these class switches are discord.py's own way to turn them off.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        super().__init__(command_prefix=(), intents=intents(),
                         allowed_mentions=discord.AllowedMentions.none(), help_command=None, **options)
        self.services = services
        self._features = tuple(features)
        self._drain_timeout_s = drain_timeout_s
        self._watch_config = watch_config
        self._watcher: asyncio.Task[None] | None = None
        self._sighup = False
        self._shutdown: asyncio.Future[None] | None = None
        self._operations: OperationsServer | None = None
        self.tree.error(self._on_tree_error)

    async def setup_hook(self) -> None:
        services = self.services
        await self._serve_operations()  # first: /healthz answers, and /readyz says what is not up yet, during start-up
        await services.storage.open()
        # Moderators' stored settings (/mod) apply before anything reads the config: no job is admitted or
        # resumed under the file's values alone.
        services.config.load_overrides(await services.storage.all_guild_settings())
        await services.scheduler.start()
        if services.warmup is not None:
            services.warmup.start()  # the default model loads while the bot connects; requests queue meanwhile
        for feature in self._features:
            await self.load_extension(feature)
        await self._sync_commands()
        self._say_invite()
        config = services.config
        if self._watch_config and config.path is not None:
            self._watcher = asyncio.create_task(config.watch(asyncio.sleep), name="config-watch")
            self._sighup = config.install_sighup(asyncio.get_running_loop())

    async def _serve_operations(self) -> None:
        services = self.services
        settings, metrics = services.config.current.observability, services.metrics
        if metrics is None or settings.http_port is None:  # observability.http_port: null (the default)
            return
        self._operations = OperationsServer(
            host=settings.http_host, port=settings.http_port, metrics=metrics,
            checks=(ReadinessCheck("gateway", self._gateway_health), model_check(services.warmup),
                    database_check(services.storage)))
        await self._operations.start()

    async def _gateway_health(self) -> Health:
        """Connected to Discord's gateway: discord.py stays "ready" while it reconnects, so the socket counts."""
        if self.is_closed():
            return Health(False, "the client is closed")
        if not self.is_ready():
            return Health(False, "not connected yet")
        return self._connection_health()

    def _connection_health(self) -> Health:
        """The one gateway connection (``bot.sharding.ShardedImagineBot`` checks each shard's)."""
        socket = self.ws
        if socket is None or not socket.open:
            return Health(False, "disconnected; reconnecting")
        return Health(True, heartbeat_detail("connected", self.latency))

    def _say_invite(self) -> None:
        """The link that adds this very bot to a server, with the scopes and permissions it needs: built from
        the application id Discord returned at login, so an admin never assembles it by hand."""
        if self.application_id is None:  # discord.py sets it at login, before setup_hook; never None in practice
            return
        _log.info("invite link (scopes %s; permissions %s): %s", " and ".join(SCOPES),
                  ", ".join(INVITE_LABELS.values()), invite_url(self.application_id))

    async def _on_tree_error(self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError) -> None:
        await reply_error(interaction, error)

    async def _sync_commands(self) -> None:
        dev_guilds = self.services.config.current.discord.dev_guilds
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

    async def close(self) -> None:
        """Stop admitting, let the running batch finish (or interrupt it), keep queued jobs stored.

        SIGTERM and ``async with bot`` may both call this: every caller waits for the one shutdown."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._shut_down())
        await asyncio.shield(self._shutdown)

    async def _shut_down(self) -> None:
        services = self.services
        if self._watcher is not None:
            self._watcher.cancel()
        if self._sighup:
            services.config.uninstall_sighup(asyncio.get_running_loop())
        if services.warmup is not None:
            await services.warmup.stop()
        try:
            # Subscribers hear "handed_back" for each queued job (their status says they resume later).
            handed_back = await services.scheduler.drain(timeout_s=self._drain_timeout_s)
            await services.scheduler.flush_notifications()
            _log.info("shutdown: %d queued job(s) kept for the next start", len(handed_back))
            await services.executor.close(cancel_running=True)
        finally:
            try:
                await super().close()  # unloads the features, then closes the gateway and HTTP session
            finally:
                if self._operations is not None:  # before storage closes: no scrape reads a closed database
                    await self._operations.stop()
                await services.storage.close()
