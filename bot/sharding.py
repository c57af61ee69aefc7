"""Sharding: the same ``ImagineBot`` on discord.py's AutoShardedClient, for a bot in thousands of servers.

``discord.shards`` picks the client (``build_bot``, called by ``bot.__main__``): none runs ``ImagineBot`` on one
gateway connection, as before; ``auto`` asks Discord how many shards it recommends (``GET /gateway/bot``) at each
start; a number fixes the count. Every shard runs in this process and shares the rest (scheduler, storage,
features): discord.py sends each shard's events through the one client, so no feature knows about shards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord.ext import commands

from bot.app import ImagineBot, heartbeat_detail
from bot.observability import Health
from bot.services import Services

_log = logging.getLogger(__name__)
IDENTIFY_WINDOW_S = 5.0  # Discord: max_concurrency IDENTIFYs per 5 s


class IdentifyPacer:
    """Discord's session start limit: one IDENTIFY every 5 s per rate-limit key (``shard_id % max_concurrency``).

    discord.py's default waits 5 s before every shard but the first; this waits only while that shard's key
    identified less than 5 s ago, so shards of different keys (a bot Discord gives a higher concurrency) start
    together, and a shard that identifies again waits only as long as Discord asks."""

    def __init__(self, max_concurrency: int = 1, *, window_s: float = IDENTIFY_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.max_concurrency = max(1, max_concurrency)
        self._window_s, self._clock, self._sleep = window_s, clock, sleep
        self._last: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def wait(self, shard_id: int) -> None:
        key = shard_id % self.max_concurrency
        async with self._locks.setdefault(key, asyncio.Lock()):  # two shards of one key: one after the other
            last = self._last.get(key)
            if last is not None and (delay := last + self._window_s - self._clock()) > 0:
                await self._sleep(delay)
            self._last[key] = self._clock()


class ShardedImagineBot(ImagineBot, commands.AutoShardedBot):
    """``ImagineBot`` over several gateway connections; discord.py routes each server's events to the client."""

    def __init__(self, services: Services, *, shard_count: int | None = None, **options: Any) -> None:
        super().__init__(services, shard_count=shard_count, **options)
        self._pacer = IdentifyPacer()

    async def connect(self, *, reconnect: bool = True) -> None:
        # The count is settled here, not in discord.py's launch_shards: that would connect to the gateway URL
        # Discord names, past discord.gateway_url. The same answer gives the identify concurrency.
        try:
            recommended, _, limits = await self.http.get_bot_gateway()
        except discord.GatewayNotFound:
            if self.shard_count is None:
                raise
            _log.warning("GET /gateway/bot failed; starting %d shard(s) one per 5 s", self.shard_count)
        else:
            self._pacer = IdentifyPacer(limits["max_concurrency"])
            if self.shard_count is None:
                self.shard_count = recommended
            elif self.shard_count < recommended:
                _log.warning("discord.shards is %d but Discord recommends %d; set discord.shards: auto",
                             self.shard_count, recommended)
            _log.info("%d shard(s) (Discord recommends %d), %d identifying at a time", self.shard_count,
                      recommended, self._pacer.max_concurrency)
        await super().connect(reconnect=reconnect)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        await self._pacer.wait(shard_id or 0)

    def _connection_health(self) -> Health:
        shards = self.shards
        count = self.shard_count or len(shards)
        down = [str(shard_id) for shard_id in range(count) if shard_id not in shards or shards[shard_id].is_closed()]
        if down:
            return Health(False, f"shard {', '.join(down)} of {count} disconnected; reconnecting")
        return Health(True, heartbeat_detail(f"{count} shards connected", self.latency))


def build_bot(services: Services, **options: Any) -> ImagineBot:
    """The client ``discord.shards`` asks for (read once, at start-up): ``ImagineBot`` on one connection, or
    ``ShardedImagineBot`` with Discord's recommended count (``auto``) or the configured one."""
    shards = services.config.current.discord.shards
    if shards is None:
        return ImagineBot(services, **options)
    return ShardedImagineBot(services, shard_count=None if shards == "auto" else shards, **options)
