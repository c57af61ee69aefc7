"""An in-process fake of Discord that the real discord.py client talks to over loopback.

Usage (or the ``fake_discord`` fixture, which does the first two lines)::

    async with FakeDiscord() as fake:
        with fake.patch_discord():  # or give a subprocess fake.env
            async with run_client(fake, MyBot(guild_ready_timeout=0.05)):
                handle = await fake.slash("imagine", {"prompt": "a cat"}, user="alice")
                await handle.wait_response()
                result = await handle.wait_for(lambda m: m.attachments)
                again = await fake.click(result, "again")
    fake.assert_no_failures()

Every REST body and query string is validated against Discord's OpenAPI spec and Discord's
rules; mistakes land in ``fake.failures``, and so do the fake's own answers where they stray
from the spec.  The ``fake_discord`` fixture fails the test on them; enable it with
``pytest_plugins = ["tests.fake_discord.fixtures"]``.  Without the spec validation is off
(``validation.spec_status_line()`` says so), except under ``CI=true``, where it is an error.

``FakeDiscord(clock=...)`` takes anything with ``time() -> float``: snowflakes carry its time,
and interaction tokens expire 15 minutes after dispatch on it.  A test that drives what no
user could (a click on a deleted message) gets ``FakeRejected``.

``FakeDiscord(recommended_shards=N)`` makes ``GET /gateway/bot`` recommend N shards; the gateway then
expects one connection per shard and sends each guild's events to its own shard (``gateway.py``);
``id_on_shard`` makes a guild id that lands on a given shard.
"""

from .clock import TOKEN_LIFETIME_S, Clock, SystemClock
from .interactions import InteractionHandle
from .models import FakeChannel, FakeGuild, FakeMember, FakeRole, FakeUser, default_guilds, id_on_shard, shard_of
from .patching import discord_py_pointed_at, point_discord_py_at
from .payloads import FakeAttachment
from .records import (
    AllowedMentionsRecord,
    InteractionRecord,
    MessageVersion,
    RecordedRequest,
    StoredAttachment,
    StoredMessage,
    UploadedFile,
)
from .runner import run_client
from .server import FakeDiscord
from .state import FakeRejected, FakeTimeout

__all__ = [
    "TOKEN_LIFETIME_S",
    "AllowedMentionsRecord",
    "Clock",
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeRejected",
    "FakeRole",
    "FakeTimeout",
    "FakeUser",
    "InteractionHandle",
    "InteractionRecord",
    "MessageVersion",
    "RecordedRequest",
    "StoredAttachment",
    "StoredMessage",
    "SystemClock",
    "UploadedFile",
    "default_guilds",
    "discord_py_pointed_at",
    "id_on_shard",
    "point_discord_py_at",
    "run_client",
    "shard_of",
]
