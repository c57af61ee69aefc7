"""Who asks for something, and the one check of who may act on a job."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from bot.core.errors import NotPermitted


class ModeratorRoles(Protocol):
    """What the check needs of the config (``bot.core.config.AppConfig`` is one)."""

    def is_moderator(self, guild_id: int, role_ids: Iterable[int]) -> bool: ...


@dataclass(frozen=True)
class Requester:
    """Who asked, and where. ``guild_id`` 0 means a direct message; ``is_admin`` is Discord's Manage
    Server permission in that guild (the bot's own check, made where the interaction arrives).
    In a thread, ``channel_id`` is the thread (where answers go) and ``parent_channel_id`` the channel
    it belongs to, whose place in a server's channel allow-list the thread inherits. ``channel_nsfw`` is
    Discord's age-restricted flag of the channel (a thread's is its channel's): such channels follow the
    server's ``safety.nsfw_channel_mode``."""

    user_id: int
    guild_id: int = 0
    channel_id: int = 0
    role_ids: frozenset[int] = frozenset()
    is_admin: bool = False
    parent_channel_id: int | None = None
    channel_nsfw: bool = False

    @property
    def in_dm(self) -> bool:
        return self.guild_id == 0

    def moderates(self, guild_id: int, config: ModeratorRoles) -> bool:
        """A moderator of ``guild_id``: an admin there, or holding one of its ``moderator_roles``."""
        if guild_id == 0 or guild_id != self.guild_id:
            return False  # a moderator of one server has no say over another server's jobs
        return self.is_admin or config.is_moderator(guild_id, self.role_ids)

    def check_may_manage(self, owner_id: int, guild_id: int, config: ModeratorRoles, action: str) -> None:
        """Raise NotPermitted unless this requester owns the job or moderates its server."""
        if self.user_id == owner_id or self.moderates(guild_id, config):
            return
        raise NotPermitted(f"Only the person who asked for this image or a moderator of this server can {action} it.")
