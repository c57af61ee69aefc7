"""What every feature reads off an interaction: who asked, where, with which roles."""

from __future__ import annotations

from typing import Any

import discord

from bot.core.identity import Requester

NO_MENTIONS = discord.AllowedMentions.none()


def requester_of(interaction: discord.Interaction[Any]) -> Requester:
    """The requester behind ``interaction``; Manage Server in that guild makes them an admin there.

    In a thread the channel is the thread itself (answers go there) and its parent is kept too: a thread
    is allowed wherever the channel it belongs to is (``guilds.<id>.channels``), and is age-restricted
    when its channel is."""
    member = interaction.user
    roles = frozenset(role.id for role in member.roles) if isinstance(member, discord.Member) else frozenset()
    channel = interaction.channel
    parent = channel.parent_id if isinstance(channel, discord.Thread) else None
    return Requester(user_id=member.id, guild_id=interaction.guild_id or 0, channel_id=interaction.channel_id or 0,
                     role_ids=roles, is_admin=bool(interaction.guild_id and interaction.permissions.manage_guild),
                     parent_channel_id=parent, channel_nsfw=channel_is_nsfw(channel))


def channel_is_nsfw(channel: object) -> bool:
    """Discord's age-restricted flag of a channel (a thread: its parent's, through discord.py's cache); False for
    direct messages and channels the bot cannot see."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False
