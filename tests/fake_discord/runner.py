"""Run a real discord.py client against a started, patched-in ``FakeDiscord``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import discord

from .server import FakeDiscord


@contextlib.asynccontextmanager
async def run_client(
    fake: FakeDiscord,
    client: discord.Client,
    *,
    timeout: float | None = None,  # noqa: ASYNC109
) -> AsyncIterator[discord.Client]:
    """Start ``client`` against ``fake`` (already patched in), wait for on_ready, close on exit."""
    task = asyncio.create_task(client.start(fake.token), name="fake-discord-client")
    ready = asyncio.create_task(fake.wait_ready(timeout, identified=fake.identify_count + 1))
    try:
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # login or connect failed: raise it here
            raise RuntimeError("client.start() returned before the bot was ready")
        ready.result()
        # READY and GUILD_CREATEs are sent; on_ready follows after guild_ready_timeout.
        await asyncio.wait_for(client.wait_until_ready(), timeout or fake.state.default_timeout)
        yield client
    finally:
        ready.cancel()
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task
