"""/queue and /help: what is waiting, and what the bot does and allows you."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.config import Bucket, ConfigStore, resolve_limits
from bot.core.text import format_duration
from bot.discord_ui.interactions import NO_MENTIONS, requester_of
from bot.discord_ui.texts import sanitize_user_text
from bot.scheduler import Scheduler
from generation.config import LORA_WEIGHT_LIMIT

FLAGS_HELP = (
    "`--ar W:H` aspect ratio · `--size WxH` · `--seed N` · `--no words` things to avoid · `--steps N` · "
    "`--count N` (1-4) · `--cfg N` guidance · `--model NAME` · `--style NAME` · `--strength F` (with an image)"
)


def _loras_help(names: list[str], cap: int) -> str:
    shown = ", ".join(f"`{name}`" for name in names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
    weights = f"{-LORA_WEIGHT_LIMIT:g} to {LORA_WEIGHT_LIMIT:g}"
    return (f"LoRAs: `<lora:NAME:WEIGHT>` in the prompt (weight {weights}; left out: the LoRA's default) or the "
            f"`lora` option, at most {cap} per request: {shown}")


def _bucket(bucket: Bucket | None) -> str:
    return bucket.describe() if bucket is not None else "no limit"


def _cap(value: int | None) -> str:
    return "no limit" if value is None else str(value)


class InfoCog(commands.Cog, name="Info"):
    def __init__(self, config: ConfigStore, scheduler: Scheduler) -> None:
        self._config = config
        self._scheduler = scheduler

    @app_commands.command(name="queue", description="Your jobs and how long this server's queue is")
    async def queue(self, interaction: discord.Interaction[Any]) -> None:
        requester = requester_of(interaction)
        scheduler = self._scheduler
        snapshot = scheduler.snapshot(guild_id=requester.guild_id)
        lines = []
        mine_running = [job for job in snapshot.running if job.user_id == requester.user_id]
        mine_queued = [entry for entry in snapshot.queued if entry.job.user_id == requester.user_id]
        for job in mine_running:
            lines.append(f"▶ running: {sanitize_user_text(job.request.prompt)[:80]}")
        for entry in mine_queued:
            where = f"#{entry.position}" if entry.position is not None else "paused"
            eta = f", starts in about {format_duration(entry.eta_s)}" if entry.eta_s is not None else ""
            lines.append(f"⏳ {where}{eta}: {sanitize_user_text(entry.job.request.prompt)[:80]}")
        if not lines:
            lines.append("You have no jobs waiting or running.")
        here = snapshot.guild_lengths.get(requester.guild_id, 0)
        total = scheduler.snapshot().total_queued
        lines.append(f"This server: {here} queued, {len(snapshot.running)} running · all servers: {total} queued")
        if requester.guild_id in snapshot.paused_guilds:
            lines.append("This server's queue is paused by a moderator.")
        await interaction.response.send_message("\n".join(lines)[:2000], ephemeral=True, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="help", description="What /imagine does, its flags and your limits")
    async def help(self, interaction: discord.Interaction[Any]) -> None:
        requester = requester_of(interaction)
        config = self._config.current
        limits = resolve_limits(config, requester.guild_id, requester.role_ids)
        models = ", ".join(config.generation.enabled_names())
        text = "\n".join([
            "**/imagine** turns a prompt into images. Options or flags in the prompt set the details:",
            FLAGS_HELP,
            f"Models: {models} · aspects: {', '.join(config.bot.aspects)} · "
            f"styles: {', '.join(config.bot.styles) or 'none'}",
            *([_loras_help(sorted(config.generation.loras), config.generation.max_loras_per_request)]
              if config.generation.loras else []),
            "Under each result: **U** one image at full size (2× upscaled where the model allows), "
            "**V** variations of it, 🔄 new seed, 🗑 delete (yours, or as a moderator).",
            f"Your limits here: {_bucket(limits.user_rate)}; at most {_cap(limits.max_queued_per_user)} queued; "
            f"{_cap(limits.daily_images_per_user)} images a day (resets {limits.quota_reset_hour:02d}:00 "
            f"{limits.quota_timezone}).",
        ])
        await interaction.response.send_message(text[:2000], ephemeral=True, allowed_mentions=NO_MENTIONS)

