"""Refuse /imagine where the bot could not show its results, and tell the server's admins once.

An interaction carries ``app_permissions``: what the bot may do in the channel it came from. A reply to
the interaction itself needs none of them, so a channel that withholds Send Messages or Attach Files
seems to work until the bot has to post there (a result after the interaction's 15 minutes, a restart, a
retry) and fails where nobody sees it. Checked before a job is stored, the member gets a private answer
at once, and the log gets one line per server saying what to change.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.core.errors import BotLacksPermissions
from bot.discord_ui.invite import LABELS, invite_url, missing_labels, needed_in

_log = logging.getLogger(__name__)


class ChannelAccess:
    """The check, and the servers already warned about (held by the feature that uses it, for its lifetime)."""

    def __init__(self) -> None:
        self._warned: set[int] = set()

    def check(self, interaction: discord.Interaction[Any]) -> None:
        """Raise ``BotLacksPermissions`` when the bot lacks a permission it needs where ``interaction`` was
        used. Direct messages need none (the bot may always answer there)."""
        guild_id = interaction.guild_id
        if guild_id is None:
            return
        needed = needed_in(interaction.channel)
        missing = missing_labels(interaction.app_permissions, needed)
        if not missing:
            return
        wanted = [label for flag, label in LABELS.items() if getattr(needed, flag)]
        if guild_id not in self._warned:
            self._warned.add(guild_id)
            guild = interaction.guild
            channel = interaction.channel
            _log.warning(
                "server %s (id %d): the bot lacks %s in channel #%s (id %s), so /imagine is refused there; a server "
                "admin should allow the bot %s in that channel (Edit Channel > Permissions), or add it again with "
                "%s to grant them server-wide (said once per server)",
                guild.name if guild is not None else "?", guild_id, ", ".join(missing),
                getattr(channel, "name", "?"), interaction.channel_id, ", ".join(wanted),
                invite_url(interaction.application_id))
        raise BotLacksPermissions(missing, wanted)
