"""Run the real bot (real discord.py client, real tiny model, real SQLite) against the fake Discord."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from bot.app import ImagineBot
from bot.config import AppConfig, BotConfig, ConfigStore, SchedulerConfig
from bot.storage import Storage
from generation.config import ExecutorConfig, GenerationConfig
from generation.interface import Executor
from tests.fake_discord import FakeDiscord, StoredMessage, run_client


def tiny_app_config(**sections: Any) -> AppConfig:
    """builtin:tiny on the CPU with a preview every step; no batching wait, progress edits unthrottled."""
    sections.setdefault("generation", GenerationConfig(executor=ExecutorConfig(device="cpu", preview_every_steps=1)))
    sections.setdefault("scheduler", SchedulerConfig(batch_window_ms=0))
    sections.setdefault("bot", BotConfig(progress_interval_s=0.0))
    return AppConfig(**sections)


def tiny_executor(config: AppConfig) -> Executor:
    from generation.executor import GpuExecutor

    return GpuExecutor.from_config(config.generation)


@asynccontextmanager
async def running_bot(fake: FakeDiscord, data_dir: Path, config: AppConfig | None = None, *,
                      executor: Executor | None = None, store: ConfigStore | None = None) -> AsyncIterator[ImagineBot]:
    """A started bot; closing it drains the queue like a real shutdown."""
    store = store or ConfigStore(initial=config or tiny_app_config())
    bot = ImagineBot(config=store, storage=Storage(data_dir), executor=executor or tiny_executor(store.current),
                     guild_ready_timeout=0.05, watch_config=False)
    async with run_client(fake, bot):
        yield bot


def is_result(message: StoredMessage) -> bool:
    return bool(message.attachments) and any(cid.startswith("imagine:u:") for cid in message.custom_ids())


def decode(message: StoredMessage) -> Image.Image:
    image = Image.open(io.BytesIO(message.attachments[0].data))
    image.load()
    return image
