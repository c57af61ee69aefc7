"""/mod: moderators' commands, their stored settings layered over config.yaml, and the audit log. A
discord.py extension: ``setup`` builds the feature from the bot's services.

- ``cog``: the ``/mod`` command group (read the interaction, call the service, answer privately)
- ``service``: the rules (who moderates, what each command changes, stored and audited together)
- ``settings``: a server's stored settings edited as plain mappings, and where each limit comes from
- ``values``: values as moderators type them (``6/60s burst 3``) and as /mod shows them
- ``repository``/``tables``: the audit log and paused servers (migration 6); settings go to ``guild_settings``
- ``texts``: the answers

Stored settings reach the rest of the bot only through the config store (``ConfigStore.set_overrides``),
which every feature and the scheduler already read: no other feature imports this one.
"""

from __future__ import annotations

from datetime import UTC, datetime

from discord.ext import commands

from bot.features.moderation.cog import ModerationCog
from bot.features.moderation.repository import ModerationStore
from bot.features.moderation.service import ModerationService
from bot.services import services_of


async def setup(bot: commands.Bot) -> None:
    services = services_of(bot)
    clock = services.clock
    store = ModerationStore(services.storage, now=lambda: datetime.fromtimestamp(clock.time(), UTC))
    service = ModerationService(services.config, services.storage, services.scheduler, store)
    await service.start()  # paused servers stay paused across a restart
    await bot.add_cog(ModerationCog(service))
