"""Community prompt contests: themed rounds, entries made by the bot under the round's rules, an anonymous
gallery, votes, winners on a podium and a per-server leaderboard. A discord.py extension: ``setup`` builds
the feature from the bot's services; it meets the rest of the bot only through them and the job events.

- ``cog``: /contest and the buttons (thin: read, call the service, answer privately)
- ``service``: the rules, Discord-free (start, enter under the rules, submit, withdraw, vote, moderate, resume)
- ``store``/``phase_store``/``tables``: the feature's own tables (schema v8); phase changes and the outbox of
  posts a round owes its channel
- ``phases``: the loop that moves rounds on when the database says they are due
- ``poster``: sends the owed posts exactly once (nonces); ``podium``: the results' image
- ``recorder``/``delivery``: the job-event listener for entry images, and showing them to their member only
- ``tally``: the count and its tie-break; ``texts``/``refusals``: what members read; ``views``/``custom_ids``:
  persistent buttons
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from discord.ext import commands

from bot.features.contests.cog import ContestCog
from bot.features.contests.delivery import PrivateDelivery
from bot.features.contests.phase_store import PhaseStore
from bot.features.contests.phases import PhaseLoop
from bot.features.contests.poster import ContestPoster
from bot.features.contests.recorder import ContestRecorder
from bot.features.contests.service import ContestService
from bot.features.contests.store import ContestStore
from bot.features.contests.texts import reveal_parts
from bot.features.contests.views import DYNAMIC_ITEMS
from bot.services import services_of


async def setup(bot: commands.Bot) -> None:
    services = services_of(bot)
    clock = services.clock

    def now() -> datetime:
        return datetime.fromtimestamp(clock.time(), UTC)

    store = ContestStore(services.storage, now)
    # The gallery's order is drawn once, when voting opens, and stored with the entries' numbers.
    phases = PhaseStore(services.storage, now, shuffle=random.SystemRandom().shuffle, reveal_parts=reveal_parts)
    service = ContestService(services.config, services.storage, services.scheduler, store, clock)
    delivery = PrivateDelivery(bot, services.storage, store, now)
    poster = ContestPoster(bot, store, phases, images_per_try=lambda guild: service.settings(guild).images_per_try,
                           now=now, checkpoints=services.checkpoints)
    loop = PhaseLoop(phases, poster, clock, services.checkpoints)
    recorder = ContestRecorder(services.storage, services.scheduler, delivery)
    cog = ContestCog(services.config, service, store, poster=poster, loop=loop, delivery=delivery,
                     recorder=recorder, events=services.events)
    await bot.add_cog(cog)  # subscribes the recorder before any entry job is resumed
    bot.add_dynamic_items(*DYNAMIC_ITEMS)
    await service.resume()
    cog.start_background()


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(*DYNAMIC_ITEMS)  # discord.py removes the cog itself, which stops the loop
