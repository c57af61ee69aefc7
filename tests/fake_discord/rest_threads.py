"""Thread routes: a public thread started from a message, as the contests gallery makes one.

Modelled as Discord does it: the thread takes the id of the message it starts from, a message holds at most one
thread (a second try answers 400 / 160004, which is how a bot finds a thread it made before a restart), and
the bot needs Create Public Threads in the channel (else 403 / 50013). The thread joins the guild's channels,
so messages can be posted in it and buttons on them clicked.
"""

from __future__ import annotations

from aiohttp import web

from .models import CREATE_PUBLIC_THREADS, PUBLIC_THREAD, FakeChannel
from .rest import Ctx, DiscordHTTPError, RestApi, json_response
from .state import FakeState


class ThreadRoutes:
    def __init__(self, state: FakeState) -> None:
        self.state = state

    def install(self, api: RestApi) -> None:
        api.add("POST", "/channels/{channel_id}/messages/{message_id}/threads", self.from_message)

    async def from_message(self, ctx: Ctx) -> web.StreamResponse:
        state = self.state
        channel_id, message_id = ctx.int_param("channel_id"), ctx.int_param("message_id")
        parent = state.channel(channel_id)
        guild = state.guild_of_channel(channel_id)
        if parent is None or guild is None:
            raise DiscordHTTPError(404, 10003, "Unknown Channel", fail=f"thread in unknown channel {channel_id}")
        message = state.messages.get(message_id)
        if message is None or message.deleted or message.ephemeral or message.channel_id != channel_id:
            raise DiscordHTTPError(404, 10008, "Unknown Message", fail=f"thread from unknown message {message_id}")
        if not state.bot_permissions(guild, parent) & CREATE_PUBLIC_THREADS:
            raise DiscordHTTPError(403, 50013, "Missing Permissions")  # a test withheld it on purpose
        if state.channel(message_id) is not None:
            raise DiscordHTTPError(400, 160004, "A thread has already been created for this message")
        body = ctx.body if isinstance(ctx.body, dict) else {}
        thread = FakeChannel(str(body.get("name") or "thread"), id=message_id, type=PUBLIC_THREAD,
                             parent_id=channel_id, guild_id=guild.id)
        guild.channels.append(thread)
        state.changed()
        return json_response(thread.to_json(), 201)
