"""What every feature reads off an interaction: who asked, where, with which roles."""

from __future__ import annotations

from typing import Any

import discord

from bot.core.identity import Requester

NO_MENTIONS = discord.AllowedMentions.none()


def requester_of(interaction: discord.Interaction[Any]) -> Requester:
    """The requester behind ``interaction``; Manage Server in that guild makes them an admin there."""
    member = interaction.user
    roles = frozenset(role.id for role in member.roles) if isinstance(member, discord.Member) else frozenset()
    return Requester(user_id=member.id, guild_id=interaction.guild_id or 0, channel_id=interaction.channel_id or 0,
                     role_ids=roles, is_admin=bool(interaction.guild_id and interaction.permissions.manage_guild))
