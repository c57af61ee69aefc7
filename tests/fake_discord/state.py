"""Shared mutable state of one fake: the world, stored messages, interactions and records.

REST handlers, the gateway and the driving helpers all work on one ``FakeState``.  Every
mutation calls ``changed()``, which wakes ``wait_until`` waiters (an event, not polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from .clock import Clock, SystemClock, iso_at
from .models import (
    ALL_PERMISSIONS,
    DM,
    JSON,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeUser,
    SnowflakeFactory,
)
from .records import (
    AllowedMentionsRecord,
    InteractionRecord,
    RecordedRequest,
    StoredAttachment,
    StoredMessage,
    UploadedFile,
    guess_content_type,
)

T = TypeVar("T")
_log = logging.getLogger(__name__)
MessageListener = Callable[[str, StoredMessage], None]


class FakeTimeout(AssertionError):
    """A wait_* helper ran out of time; the message lists what the fake saw."""


class FakeRejected(AssertionError):
    """The test asked the fake for something real Discord never does (e.g. a click on a deleted message)."""


class FakeState:
    def __init__(
        self,
        *,
        guilds: list[FakeGuild],
        bot_user: FakeUser,
        application_id: int,
        token: str,
        attachment_size_limit: int,
        response_deadline: float | None,
        default_timeout: float,
        clock: Clock | None = None,
    ) -> None:
        self.guilds = guilds
        self.bot_user = bot_user
        self.application_id = application_id
        self.token = token
        self.attachment_size_limit = attachment_size_limit
        self.response_deadline = response_deadline
        self.default_timeout = default_timeout
        self.clock: Clock = clock or SystemClock()
        self.new_id = SnowflakeFactory(self.clock)
        self.base_url = ""  # http://127.0.0.1:PORT, set when the server starts

        self.requests: list[RecordedRequest] = []
        self.failures: list[str] = []
        self.allowed_mentions: list[AllowedMentionsRecord] = []
        self.messages: dict[int, StoredMessage] = {}
        self.dm_channels: dict[int, FakeChannel] = {}
        self.global_commands: dict[int, JSON] = {}
        self.guild_commands: dict[int, dict[int, JSON]] = {}
        self.interactions: dict[int, InteractionRecord] = {}
        self.by_token: dict[str, InteractionRecord] = {}
        self.files: dict[str, tuple[bytes, str]] = {}  # url path -> (bytes, content type)
        self.downloads: list[str] = []  # paths of served files the bot fetched
        self.message_listeners: list[MessageListener] = []
        self._changed = asyncio.Event()

    def now(self) -> float:
        """Wall-clock epoch seconds on the fake's clock."""
        return self.clock.time()

    def iso_now(self) -> str:
        return iso_at(self.clock.time())

    # -- notification -------------------------------------------------------------------

    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def fail(self, message: str) -> None:
        _log.warning("fake Discord failure: %s", message)  # also visible in captured logs
        self.failures.append(message)
        self.changed()

    async def wait_until(
        self,
        predicate: Callable[[], T | None],
        *,
        timeout: float | None,  # noqa: ASYNC109
        what: str,
    ) -> T:
        """Return predicate()'s first truthy value, re-checking on every state change.

        The wait helpers take ``timeout`` on purpose (hence the ASYNC109 noqa): running out
        raises ``FakeTimeout`` with the recent requests and failures, which a bare
        ``asyncio.timeout`` could not say.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.default_timeout if timeout is None else timeout)
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise FakeTimeout(f"timed out waiting for {what}\n{self.summary()}")
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    def summary(self, last: int = 15) -> str:
        lines = [f"last {min(last, len(self.requests))} of {len(self.requests)} requests:"]
        lines += [f"  {r.method} {r.path} -> {r.status}" for r in self.requests[-last:]]
        lines.append(f"failures: {self.failures or 'none'}")
        return "\n".join(lines)

    # -- world lookups ------------------------------------------------------------------

    def guild(self, key: FakeGuild | int | str | None = None) -> FakeGuild:
        if key is None:
            return self.guilds[0]
        for g in self.guilds:
            if key in (g, g.id, g.name):
                return g
        raise LookupError(f"no fake guild {key!r}")

    def channel(self, channel_id: int) -> FakeChannel | None:
        for g in self.guilds:
            c = g.channel(channel_id)
            if c is not None:
                return c
        return self.dm_channels.get(channel_id)

    def guild_of_channel(self, channel_id: int) -> FakeGuild | None:
        for g in self.guilds:
            if g.channel(channel_id) is not None:
                return g
        return None

    def user(self, key: FakeUser | int | str) -> FakeUser:
        if key in (self.bot_user, self.bot_user.id, self.bot_user.username):
            return self.bot_user
        for g in self.guilds:
            m = g.member(key)
            if m is not None:
                return m.user
        for c in self.dm_channels.values():
            for u in c.recipients:
                if key in (u, u.id, u.username):
                    return u
        raise LookupError(f"no fake user {key!r}")

    def bot_member(self, guild: FakeGuild) -> FakeMember:
        return FakeMember(self.bot_user)

    def bot_permissions(self, guild: FakeGuild, channel: FakeChannel | None = None) -> int:
        """The bot's permissions in ``channel`` (its overwrites, when a test set them), else in ``guild``."""
        if channel is not None and channel.bot_permissions is not None:
            return channel.bot_permissions
        return ALL_PERMISSIONS if guild.bot_permissions is None else guild.bot_permissions

    def size_limit(self, guild_id: int | None) -> int:
        if guild_id is not None:
            for g in self.guilds:
                if g.id == guild_id and g.attachment_size_limit is not None:
                    return g.attachment_size_limit
        return self.attachment_size_limit

    def dm_channel_for(self, user: FakeUser) -> FakeChannel:
        for c in self.dm_channels.values():
            if c.recipients and c.recipients[0].id == user.id:
                return c
        channel = FakeChannel(user.username, id=self.new_id(), type=DM, recipients=[user])
        self.dm_channels[channel.id] = channel
        return channel

    # -- messages -----------------------------------------------------------------------

    def serve_file(self, data: bytes, filename: str, content_type: str | None = None) -> tuple[int, str]:
        """Store bytes under /attachments/... and return (id, absolute url)."""
        att_id = self.new_id()
        path = f"/attachments/{att_id}/{filename}"
        self.files[path] = (data, content_type or guess_content_type(filename))
        return att_id, self.base_url + path

    def store_upload(
        self, upload: UploadedFile, description: str | None = None, filename: str | None = None
    ) -> StoredAttachment:
        name = filename or upload.filename
        att_id, url = self.serve_file(upload.data, name)
        return StoredAttachment(
            id=att_id,
            filename=name,
            data=upload.data,
            content_type=guess_content_type(name),
            url=url,
            sent_content_type=upload.content_type,
            description=description,
        )

    def add_message(self, message: StoredMessage) -> StoredMessage:
        message.snapshot()
        self.messages[message.id] = message
        self._emit("create", message)
        return message

    def message_edited(self, message: StoredMessage) -> None:
        message.snapshot()
        self._emit("update", message)

    def delete_message(self, message: StoredMessage) -> None:
        message.deleted = True
        self._emit("delete", message)

    def _emit(self, kind: str, message: StoredMessage) -> None:
        for listener in self.message_listeners:
            listener(kind, message)
        self.changed()

    def channel_messages(self, channel_id: int, *, include_deleted: bool = False) -> list[StoredMessage]:
        return [m for m in self.messages.values() if m.channel_id == channel_id and (include_deleted or not m.deleted)]

    def record_allowed_mentions(self, method: str, path: str, message_id: int | None, body: Any) -> None:
        sent = isinstance(body, dict) and "allowed_mentions" in body
        value = body.get("allowed_mentions") if sent else None
        self.allowed_mentions.append(AllowedMentionsRecord(method, path, message_id, sent, value))
