"""Message routes: channel messages, interaction callbacks and interaction webhooks.

Discord rules modelled here because bots get them wrong: one callback per interaction,
within ``response_deadline`` seconds; followups and @original only after a callback; the
callback type must suit the interaction type; a deferred ("thinking") response is replaced
by the first followup; tokens expire 15 minutes after dispatch on the fake's clock (or when a
test calls ``InteractionHandle.expire()``) and then get 401 / 50027.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .clock import TOKEN_LIFETIME_S
from .message_ops import create_message, edit_message
from .models import JSON
from .records import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE,
    EPHEMERAL,
    LOADING,
    MESSAGE_COMPONENT,
    MODAL,
    MODAL_SUBMIT,
    UPDATE_MESSAGE,
    InteractionRecord,
    StoredMessage,
    UploadedFile,
)
from .rest import Ctx, DiscordHTTPError, RestApi, json_response
from .state import FakeState

# Which callback types each interaction type accepts.
ALLOWED_CALLBACKS = {
    APPLICATION_COMMAND: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, MODAL},
    AUTOCOMPLETE: {AUTOCOMPLETE_RESULT},
    MODAL_SUBMIT: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE},
}

UNKNOWN_MESSAGE = (404, 10008, "Unknown Message")
UNKNOWN_CHANNEL = (404, 10003, "Unknown Channel")


def no_content() -> web.Response:
    return web.Response(status=204)


# Discord remembers an enforced nonce for a few minutes: a second create with it returns the first message.
NONCE_WINDOW_S = 5 * 60.0


class MessageRoutes:
    def __init__(self, state: FakeState) -> None:
        self.state = state
        self._nonces: dict[tuple[int, str], tuple[int, float]] = {}  # (channel, nonce) -> (message id, when)

    def install(self, api: RestApi) -> None:
        ch = "/channels/{channel_id}/messages"
        api.add("POST", ch, self.create_channel_message)
        api.add("GET", ch, self.list_channel_messages)
        api.add("GET", ch + "/{message_id}", self.get_channel_message)
        api.add("PATCH", ch + "/{message_id}", self.edit_channel_message)
        api.add("DELETE", ch + "/{message_id}", self.delete_channel_message)
        for method in ("PUT", "DELETE"):
            api.add(method, ch + "/{message_id}/reactions/{emoji_name}/@me", self.react)
        api.add("POST", "/interactions/{interaction_id}/{interaction_token}/callback", self.callback, auth=False)
        wh = "/webhooks/{webhook_id}/{webhook_token}"
        api.add("POST", wh, self.followup, auth=False)
        for suffix in ("/messages/@original", "/messages/{message_id}"):
            api.add("GET", wh + suffix, self.webhook_get, auth=False)
            api.add("PATCH", wh + suffix, self.webhook_edit, auth=False)
            api.add("DELETE", wh + suffix, self.webhook_delete, auth=False)

    # -- channel messages -----------------------------------------------------------------

    def _channel_message(self, ctx: Ctx, *, fail: bool = True) -> StoredMessage:
        message = self.state.messages.get(ctx.int_param("message_id"))
        if message is None or message.deleted or message.ephemeral or message.channel_id != ctx.int_param("channel_id"):
            raise DiscordHTTPError(*UNKNOWN_MESSAGE, fail="unknown, deleted or ephemeral message" if fail else None)
        return message

    async def create_channel_message(self, ctx: Ctx) -> web.StreamResponse:
        channel_id = ctx.int_param("channel_id")
        if self.state.channel(channel_id) is None:
            raise DiscordHTTPError(*UNKNOWN_CHANNEL, fail=f"no channel {channel_id} in the fake")
        body = ctx.body if isinstance(ctx.body, dict) else {}
        nonce = str(body["nonce"]) if body.get("nonce") is not None and body.get("enforce_nonce") else None
        if nonce is not None:
            seen = self._nonces.get((channel_id, nonce))
            if seen is not None and self.state.clock.time() - seen[1] < NONCE_WINDOW_S:
                earlier = self.state.messages.get(seen[0])
                if earlier is not None and not earlier.deleted:
                    return json_response(earlier.to_json())  # Discord's answer to a retried send: no duplicate
        guild = self.state.guild_of_channel(channel_id)
        message = create_message(
            self.state, channel_id=channel_id, guild_id=guild.id if guild else None, body=ctx.body, uploads=ctx.uploads
        )
        if nonce is not None:
            self._nonces[(channel_id, nonce)] = (message.id, self.state.clock.time())
        self.state.record_allowed_mentions("POST", ctx.record.path, message.id, ctx.body)
        return json_response(message.to_json())

    async def list_channel_messages(self, ctx: Ctx) -> web.StreamResponse:
        channel_id = ctx.int_param("channel_id")
        if self.state.channel(channel_id) is None:
            raise DiscordHTTPError(*UNKNOWN_CHANNEL, fail=f"no channel {channel_id} in the fake")
        messages = [m for m in self.state.channel_messages(channel_id) if not m.ephemeral]
        if "before" in ctx.query:
            messages = [m for m in messages if m.id < int(ctx.query["before"])]
        if "after" in ctx.query:
            messages = [m for m in messages if m.id > int(ctx.query["after"])]
        limit = int(ctx.query.get("limit", "50"))
        newest_first = sorted(messages, key=lambda m: m.id, reverse=True)[:limit]
        return json_response([m.to_json() for m in newest_first])

    async def get_channel_message(self, ctx: Ctx) -> web.StreamResponse:
        return json_response(self._channel_message(ctx, fail=False).to_json())

    async def edit_channel_message(self, ctx: Ctx) -> web.StreamResponse:
        message = self._channel_message(ctx)
        if message.author.get("id") != str(self.state.bot_user.id):
            raise DiscordHTTPError(
                403, 50005, "Cannot edit a message authored by another user", fail="edit of a user's message"
            )
        edit_message(self.state, message, ctx.body, ctx.uploads)
        self.state.record_allowed_mentions("PATCH", ctx.record.path, message.id, ctx.body)
        return json_response(message.to_json())

    async def delete_channel_message(self, ctx: Ctx) -> web.StreamResponse:
        self.state.delete_message(self._channel_message(ctx))
        return no_content()

    async def react(self, ctx: Ctx) -> web.StreamResponse:
        self._channel_message(ctx)
        return no_content()

    # -- interaction callback ---------------------------------------------------------------

    async def callback(self, ctx: Ctx) -> web.StreamResponse:
        state = self.state
        interaction = state.interactions.get(ctx.int_param("interaction_id"))
        if interaction is None or interaction.token != ctx.params["interaction_token"]:
            raise DiscordHTTPError(
                404, 10062, "Unknown interaction", fail="callback for an interaction the fake never sent"
            )
        interaction.calls.append(f"{ctx.record.method} {ctx.record.route}")
        self._check_token(interaction)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        kind = body.get("type")
        if interaction.responded:
            raise DiscordHTTPError(
                400,
                40060,
                "Interaction has already been acknowledged.",
                fail=f"second callback (type {kind}) for interaction {interaction.id}",
            )
        age = asyncio.get_running_loop().time() - interaction.created_at
        if state.response_deadline is not None and age > state.response_deadline:
            raise DiscordHTTPError(
                404,
                10062,
                "Unknown interaction",
                fail=f"first response to interaction {interaction.id} after {age:.2f}s "
                f"(limit {state.response_deadline}s)",
            )
        allowed = ALLOWED_CALLBACKS.get(interaction.type, set())
        if kind in (DEFERRED_UPDATE, UPDATE_MESSAGE) and interaction.source_message_id is None:
            allowed = allowed - {DEFERRED_UPDATE, UPDATE_MESSAGE}
        if kind not in allowed:
            raise DiscordHTTPError(
                400,
                50035,
                "Invalid Form Body",
                errors={
                    "type": {
                        "_errors": [{"code": "INTERACTION_CALLBACK_TYPE_INVALID", "message": "Invalid callback type"}]
                    }
                },
                fail=f"callback type {kind} is not valid for interaction type {interaction.type}",
            )
        data = body.get("data") or {}
        message = self._apply_callback(ctx, interaction, kind, data)
        interaction.response_type, interaction.response_data = kind, data
        if kind in (CHANNEL_MESSAGE, UPDATE_MESSAGE):
            state.record_allowed_mentions("POST", ctx.record.path, message.id if message else None, data)
        state.changed()
        return json_response(self._callback_response(interaction, kind, message))

    def _apply_callback(self, ctx: Ctx, interaction: InteractionRecord, kind: int, data: JSON) -> StoredMessage | None:
        state = self.state

        def new_message(body: JSON, uploads: list[UploadedFile], extra_flags: int = 0) -> StoredMessage:
            return create_message(
                state,
                channel_id=interaction.channel_id,
                guild_id=interaction.guild_id,
                body=body,
                uploads=uploads,
                interaction=interaction,
                extra_flags=extra_flags,
                msg_type=20 if interaction.type == APPLICATION_COMMAND else 0,  # CHAT_INPUT_COMMAND
            )

        if kind == CHANNEL_MESSAGE:
            message = new_message(data, ctx.uploads)
        elif kind == DEFERRED_CHANNEL_MESSAGE:
            message = new_message({}, [], (int(str(data.get("flags") or 0)) & EPHEMERAL) | LOADING)
        elif kind in (DEFERRED_UPDATE, UPDATE_MESSAGE):
            assert interaction.source_message_id is not None
            message = state.messages[interaction.source_message_id]
            if kind == UPDATE_MESSAGE:
                edit_message(state, message, data, ctx.uploads)
        else:
            return None
        interaction.original_message_id = message.id
        return message

    @staticmethod
    def _callback_response(interaction: InteractionRecord, kind: int, message: StoredMessage | None) -> JSON:
        # with_response=1 shape: discord.py needs "interaction"; "resource" carries the message.
        info: JSON = {"id": str(interaction.id), "type": interaction.type}
        if message is not None and kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            info.update(
                response_message_id=str(message.id),
                response_message_loading=message.loading,
                response_message_ephemeral=message.ephemeral,
            )
        out: JSON = {"interaction": info}
        if message is not None and kind in (CHANNEL_MESSAGE, UPDATE_MESSAGE):
            out["resource"] = {"type": kind, "message": message.to_json()}
        return out

    # -- interaction webhooks ---------------------------------------------------------------

    def _check_token(self, interaction: InteractionRecord) -> None:
        # Provoked on purpose by a test (handle.expire(), or moving the fake's clock on), so not
        # a failure: the bot must cope with the 401 as it would with real Discord.
        age = self.state.now() - interaction.dispatched_at
        if interaction.expired or age > TOKEN_LIFETIME_S:
            raise DiscordHTTPError(401, 50027, "Invalid Webhook Token")

    def _webhook_interaction(self, ctx: Ctx) -> InteractionRecord:
        if ctx.params["webhook_id"] != str(self.state.application_id):
            raise DiscordHTTPError(404, 10015, "Unknown Webhook", fail="webhook id is not the application id")
        interaction = self.state.by_token.get(ctx.params["webhook_token"])
        if interaction is None:
            raise DiscordHTTPError(401, 50027, "Invalid Webhook Token", fail="token of no interaction the fake sent")
        interaction.calls.append(f"{ctx.record.method} {ctx.record.route}")
        self._check_token(interaction)
        return interaction

    def _webhook_message(self, ctx: Ctx, interaction: InteractionRecord) -> StoredMessage:
        raw = ctx.params.get("message_id", "@original")
        if raw == "@original":
            message_id = interaction.original_message_id
            if message_id is None:
                raise DiscordHTTPError(
                    *UNKNOWN_MESSAGE, fail=f"@original of interaction {interaction.id} before any message response"
                )
        else:
            message_id = ctx.int_param("message_id")
            if message_id != interaction.original_message_id and message_id not in interaction.followup_ids:
                raise DiscordHTTPError(
                    *UNKNOWN_MESSAGE, fail=f"message {message_id} does not belong to interaction {interaction.id}"
                )
        message = self.state.messages[message_id]
        if message.deleted:
            raise DiscordHTTPError(*UNKNOWN_MESSAGE, fail=f"message {message_id} was deleted")
        return message

    async def followup(self, ctx: Ctx) -> web.StreamResponse:
        state = self.state
        interaction = self._webhook_interaction(ctx)
        if not interaction.responded:
            raise DiscordHTTPError(
                404,
                10015,
                "Unknown Webhook",
                fail=f"followup before the first response to interaction {interaction.id}",
            )
        body = ctx.body if isinstance(ctx.body, dict) else {}
        original = state.messages.get(interaction.original_message_id or 0)
        thinking = original is not None and original.loading and not original.deleted
        if interaction.response_type == DEFERRED_CHANNEL_MESSAGE and thinking and original is not None:
            # Discord turns the first followup after a "thinking" defer into that message.
            edit_message(state, original, body, ctx.uploads)
            message = original
        else:
            message = create_message(
                state,
                channel_id=interaction.channel_id,
                guild_id=interaction.guild_id,
                body=body,
                uploads=ctx.uploads,
                interaction=interaction,
            )
            interaction.followup_ids.append(message.id)
        state.record_allowed_mentions("POST", ctx.record.path, message.id, body)
        if ctx.query.get("wait", "").lower() not in ("1", "true"):
            return no_content()
        return json_response(message.to_json())

    async def webhook_get(self, ctx: Ctx) -> web.StreamResponse:
        interaction = self._webhook_interaction(ctx)
        return json_response(self._webhook_message(ctx, interaction).to_json())

    async def webhook_edit(self, ctx: Ctx) -> web.StreamResponse:
        interaction = self._webhook_interaction(ctx)
        message = self._webhook_message(ctx, interaction)
        edit_message(self.state, message, ctx.body if isinstance(ctx.body, dict) else {}, ctx.uploads)
        self.state.record_allowed_mentions("PATCH", ctx.record.path, message.id, ctx.body)
        return json_response(message.to_json())

    async def webhook_delete(self, ctx: Ctx) -> web.StreamResponse:
        interaction = self._webhook_interaction(ctx)
        self.state.delete_message(self._webhook_message(ctx, interaction))
        return no_content()
