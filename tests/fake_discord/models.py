"""The fake's "world": users, roles, channels and guilds, and their Discord JSON shapes.

Objects are plain dataclasses that tests build and pass to ``FakeDiscord``; the ``*_json``
functions turn them into the payloads discord.py parses (only the keys it reads, plus the
ones Discord always sends, so parsing stays close to the real thing).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .clock import Clock, SystemClock

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1420070400000

# Permission bits used to build sensible defaults (see Discord's permissions docs).
ADMINISTRATOR = 1 << 3
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_APPLICATION_COMMANDS = 1 << 31
ADD_REACTIONS = 1 << 6
CREATE_PUBLIC_THREADS = 1 << 35
USE_EXTERNAL_EMOJIS = 1 << 18
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 51) - 1
MEMBER_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_APPLICATION_COMMANDS
    | ADD_REACTIONS
    | USE_EXTERNAL_EMOJIS
    | SEND_MESSAGES_IN_THREADS
)

# Channel types (Discord's ChannelType enum).
GUILD_TEXT = 0
DM = 1
GUILD_CATEGORY = 4
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
THREAD_TYPES = frozenset({10, PUBLIC_THREAD, PRIVATE_THREAD})


class SnowflakeFactory:
    """Increasing snowflakes whose timestamp part is ``clock.time()``, so discord.py's
    ``created_at`` (e.g. ``interaction.created_at``) agrees with the fake's clock.

    Ids never repeat or go down, even if the clock stands still or is set back.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._counter = itertools.count(1)
        self._last = 0

    def __call__(self) -> int:
        ms = max(0, int(self._clock.time() * 1000) - DISCORD_EPOCH_MS)
        snowflake = max((ms << 22) | (next(self._counter) & 0x3FFFFF), self._last + 1)
        self._last = snowflake
        return snowflake


_ids = SnowflakeFactory()


def new_id() -> int:
    """A fresh snowflake; used for objects built before a fake exists."""
    return _ids()


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard Discord sends a guild's events to: (guild_id >> 22) % shard_count; direct messages go to
    shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


def id_on_shard(shard_id: int, shard_count: int) -> int:
    """A fresh snowflake for a guild that lands on ``shard_id`` of ``shard_count`` (its time moved up to
    ``shard_count - 1`` ms later)."""
    fresh = new_id()
    ms = fresh >> 22
    ms += (shard_id - ms) % shard_count
    return (ms << 22) | (fresh & 0x3FFFFF)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class FakeUser:
    username: str
    id: int = field(default_factory=new_id)
    global_name: str | None = None
    bot: bool = False
    avatar: str | None = None

    def to_json(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": self.avatar,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }
        if self.bot:
            data["bot"] = True
        return data

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class FakeRole:
    name: str
    id: int = field(default_factory=new_id)
    permissions: int = 0
    position: int = 1
    color: int = 0
    managed: bool = False

    def to_json(self) -> JSON:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "colors": {"primary_color": self.color, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.managed,
            "mentionable": True,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }


@dataclass
class FakeChannel:
    name: str
    id: int = field(default_factory=new_id)
    type: int = GUILD_TEXT
    position: int = 0
    parent_id: int | None = None
    topic: str | None = None
    nsfw: bool = False
    # Set by FakeGuild / the fake; DM channels have no guild.
    guild_id: int | None = None
    recipients: list[FakeUser] = field(default_factory=list)
    # What the bot may do here after the channel's overwrites (sent as app_permissions); None = the guild's.
    bot_permissions: int | None = None

    def to_json(self) -> JSON:
        if self.type == DM:
            return {
                "id": str(self.id),
                "type": DM,
                "last_message_id": None,
                "flags": 0,
                "recipients": [u.to_json() for u in self.recipients],
            }
        data: JSON = {
            "id": str(self.id),
            "type": self.type,
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "parent_id": str(self.parent_id) if self.parent_id else None,
            "nsfw": self.nsfw,
            "flags": 0,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.type in THREAD_TYPES:
            # A thread (FakeChannel("ideas", type=PUBLIC_THREAD, parent_id=channel.id)): Discord sends these
            # keys with every thread object, in GUILD_CREATE's "threads" and in an interaction's "channel".
            data.update(owner_id=str(self.parent_id or self.id), message_count=0, member_count=1,
                        total_message_sent=0, rate_limit_per_user=0, last_message_id=None,
                        thread_metadata={"archived": False, "auto_archive_duration": 1440, "locked": False,
                                         "archive_timestamp": "2024-01-01T00:00:00+00:00"})
            del data["position"], data["permission_overwrites"], data["nsfw"]
        elif self.type != GUILD_CATEGORY:
            data.update(topic=self.topic, rate_limit_per_user=0, last_message_id=None)
        return data


@dataclass
class FakeMember:
    user: FakeUser
    roles: list[FakeRole] = field(default_factory=list)
    nick: str | None = None
    # When the member joined the server (ISO 8601), as Discord sends it with the member: in interactions too.
    joined_at: str = "2024-01-01T00:00:00+00:00"

    def to_json(self, *, permissions: int | None = None) -> JSON:
        data: JSON = {
            "user": self.user.to_json(),
            "roles": [str(r.id) for r in self.roles],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if permissions is not None:
            # Interaction payloads carry the member's computed permissions.
            data["permissions"] = str(permissions)
        return data


@dataclass
class FakeGuild:
    name: str
    id: int = field(default_factory=new_id)
    channels: list[FakeChannel] = field(default_factory=list)
    roles: list[FakeRole] = field(default_factory=list)
    members: list[FakeMember] = field(default_factory=list)
    owner_id: int | None = None
    everyone_permissions: int = MEMBER_PERMISSIONS
    # Permissions the bot has here (sent as app_permissions); None = every permission.
    bot_permissions: int | None = None
    # Per-guild upload limit (boost tiers raise it); None = the fake's default.
    attachment_size_limit: int | None = None
    preferred_locale: str = "en-US"

    def __post_init__(self) -> None:
        for channel in self.channels:
            channel.guild_id = self.id

    @property
    def everyone_role(self) -> FakeRole:
        # Discord's @everyone role shares the guild's id.
        return FakeRole("@everyone", id=self.id, permissions=self.everyone_permissions, position=0)

    def member(self, user: FakeUser | int | str) -> FakeMember | None:
        for m in self.members:
            if user in (m.user, m.user.id, m.user.username):
                return m
        return None

    def channel(self, key: FakeChannel | int | str) -> FakeChannel | None:
        for c in self.channels:
            if key in (c, c.id, c.name):
                return c
        return None

    def role(self, key: FakeRole | int | str) -> FakeRole | None:
        for r in [self.everyone_role, *self.roles]:
            if key in (r, r.id, r.name):
                return r
        return None

    def permissions_of(self, member: FakeMember) -> int:
        perms = self.everyone_permissions
        for role in member.roles:
            perms |= role.permissions
        if member.user.id == self.owner_id or perms & ADMINISTRATOR:
            return ALL_PERMISSIONS
        return perms

    def to_json(self, *, bot: FakeUser, bot_member: FakeMember | None = None) -> JSON:
        """The GUILD_CREATE payload: every member is included, so discord.py sees it as chunked."""
        members = [m.to_json() for m in self.members]
        if bot_member is not None:
            members.append(bot_member.to_json())
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id or bot.id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "vanity_url_code": None,
            "preferred_locale": self.preferred_locale,
            "features": [],
            "application_id": None,
            "max_members": 500000,
            "widget_enabled": False,
            "roles": [r.to_json() for r in [self.everyone_role, *self.roles]],
            "emojis": [],
            "stickers": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "large": False,
            "unavailable": False,
            "member_count": len(members),
            "members": members,
            "channels": [c.to_json() for c in self.channels if c.type not in THREAD_TYPES],
            "threads": [c.to_json() for c in self.channels if c.type in THREAD_TYPES],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


def default_guilds() -> list[FakeGuild]:
    """One guild, two text channels, a moderator role and two members (alice, bob the mod)."""
    mod = FakeRole("Moderator", permissions=MEMBER_PERMISSIONS | (1 << 13), position=1)
    alice = FakeUser("alice", global_name="Alice")
    bob = FakeUser("bob", global_name="Bob")
    return [
        FakeGuild(
            "Test Guild",
            channels=[FakeChannel("general", position=0), FakeChannel("imagine", position=1)],
            roles=[mod],
            members=[FakeMember(alice), FakeMember(bob, roles=[mod])],
            owner_id=bob.id,
        )
    ]
