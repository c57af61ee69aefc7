"""/imagine: prompt to images, with live status, result buttons (U, V, reroll, delete, cancel) and
restart recovery. A discord.py extension: ``setup`` builds the feature from the bot's services.

- ``cog``: the slash command and button clicks (parse, call the service, show)
- ``service``: the rules (store and admit, follow-ups, cancel, delete, resume after a restart)
- ``gate``: the server's content rules, checked before anything is stored or downloaded
- ``compose``/``flags``: what the user typed, as a validated request
- ``recorder``: the job-event subscriber that stores each transition, then has the presenter show it
- ``views``: the persistent buttons
"""

from __future__ import annotations

from datetime import UTC, datetime

from discord.ext import commands

from bot.core.policy import SafetyMode
from bot.core.safety import resolve_safety
from bot.discord_ui.channel_access import ChannelAccess
from bot.discord_ui.interactions import channel_is_nsfw
from bot.discord_ui.outbox import Outbox
from bot.discord_ui.presenter import DiscordPresenter
from bot.features.imagine.cog import ImagineCog
from bot.features.imagine.gate import ContentGate
from bot.features.imagine.recorder import JobRecorder
from bot.features.imagine.service import IMAGINE_KINDS, ImagineService
from bot.features.imagine.views import DYNAMIC_ITEMS, ImagineViews
from bot.services import services_of
from bot.storage import JobRecord


async def setup(bot: commands.Bot) -> None:
    services = services_of(bot)
    clock = services.clock

    def safety_mode(stored: JobRecord) -> SafetyMode:
        # When the result is shown: today's setting of its server, for its channel as Discord now marks it.
        channel = bot.get_channel(stored.channel_id) if stored.channel_id else None
        return resolve_safety(services.config.current, stored.guild_id or 0, channel_is_nsfw(channel))

    presenter = DiscordPresenter(bot, services.storage, ImagineViews(),
                                 progress_interval_s=services.config.current.bot.progress_interval_s,
                                 monotonic=clock.monotonic, now=lambda: datetime.fromtimestamp(clock.time(), UTC),
                                 checkpoints=services.checkpoints,
                                 loading_line=services.warmup.loading_line if services.warmup else lambda: None,
                                 safety_mode=safety_mode)
    recorder = JobRecorder(services.storage, presenter, services.scheduler, services.checkpoints)
    service = ImagineService(services.config, services.storage, services.scheduler, clock, services.checkpoints,
                             gate=ContentGate(services.content_stats))
    outbox = Outbox(services.storage, presenter, clock, kinds=IMAGINE_KINDS)
    presenter.on_failed_attempt(outbox.wake)
    # The cog subscribes the recorder to job events in cog_load, before any job is resumed below.
    await bot.add_cog(ImagineCog(services.config, service, presenter, events=services.events, recorder=recorder,
                                 outbox=outbox, access=ChannelAccess()))
    bot.add_dynamic_items(*DYNAMIC_ITEMS)
    await service.resume(presenter.adopt_original)  # resumed jobs' status messages are found in storage
    outbox.start()  # owed ends (dropped jobs' explanations too) are shown from storage, at once


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(*DYNAMIC_ITEMS)  # discord.py removes the cog itself, which unsubscribes
