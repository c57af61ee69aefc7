"""Non-message REST routes: login, application info, command sync, guild/channel lookups."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .models import JSON
from .rest import Ctx, DiscordHTTPError, RestApi, json_response
from .state import FakeState


class MiscRoutes:
    def __init__(self, state: FakeState, gateway_url: str, *, shards: int = 1, max_concurrency: int = 1) -> None:
        self.state = state
        self.gateway_url = gateway_url
        self.shards = shards  # the shard count GET /gateway/bot recommends
        self.max_concurrency = max_concurrency

    def install(self, api: RestApi) -> None:
        api.add("GET", "/users/@me", self.me)
        api.add("GET", "/users/{user_id}", self.get_user)
        api.add("POST", "/users/@me/channels", self.create_dm)
        api.add("GET", "/oauth2/applications/@me", self.app_info)
        api.add("GET", "/applications/@me", self.app_info)
        api.add("GET", "/gateway", self.gateway, auth=False)
        api.add("GET", "/gateway/bot", self.gateway_bot)
        app = "/applications/{application_id}"
        for prefix in (app, app + "/guilds/{guild_id}"):
            api.add("GET", prefix + "/commands", self.list_commands)
            api.add("PUT", prefix + "/commands", self.put_commands)
            api.add("POST", prefix + "/commands", self.post_command)
            api.add("GET", prefix + "/commands/{command_id}", self.get_command)
            api.add("PATCH", prefix + "/commands/{command_id}", self.patch_command)
            api.add("DELETE", prefix + "/commands/{command_id}", self.delete_command)
        api.add("GET", app + "/guilds/{guild_id}/commands/permissions", self.empty_list)
        api.add("GET", "/guilds/{guild_id}", self.get_guild)
        api.add("GET", "/guilds/{guild_id}/channels", self.guild_channels)
        api.add("GET", "/guilds/{guild_id}/roles", self.guild_roles)
        api.add("GET", "/guilds/{guild_id}/members", self.guild_members)
        api.add("GET", "/guilds/{guild_id}/members/{user_id}", self.guild_member)
        api.add("GET", "/channels/{channel_id}", self.get_channel)
        api.add("POST", "/channels/{channel_id}/typing", self.typing)

    # -- identity ---------------------------------------------------------------------------

    async def me(self, ctx: Ctx) -> web.StreamResponse:
        user = self.state.bot_user.to_json()
        return json_response({**user, "verified": True, "mfa_enabled": False, "email": None, "locale": "en-US"})

    async def get_user(self, ctx: Ctx) -> web.StreamResponse:
        try:
            return json_response(self.state.user(ctx.int_param("user_id")).to_json())
        except LookupError:
            raise DiscordHTTPError(404, 10013, "Unknown User") from None

    async def create_dm(self, ctx: Ctx) -> web.StreamResponse:
        body = ctx.body if isinstance(ctx.body, dict) else {}
        try:
            user = self.state.user(int(body.get("recipient_id", 0)))
        except (LookupError, ValueError):
            raise DiscordHTTPError(400, 50033, "Invalid Recipient(s)", fail=f"DM to unknown user {body!r}") from None
        return json_response(self.state.dm_channel_for(user).to_json())

    async def app_info(self, ctx: Ctx) -> web.StreamResponse:
        state = self.state
        owner = next((g.member(g.owner_id) for g in state.guilds if g.owner_id), None)
        return json_response(
            {
                "id": str(state.application_id),
                "name": state.bot_user.username,
                "description": "fake_discord application",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": (owner.user if owner else state.bot_user).to_json(),
                "verify_key": "0" * 64,
                "type": None,
                "flags": 0,
                "flags_new": "0",
                "team": None,
                "redirect_uris": [],
                "role_connections_verification_url": None,
                "approximate_guild_count": len(state.guilds),
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "explicit_content_filter": 0,
                "eligible_oauth2_scopes": ["applications.commands", "bot"],
                "summary": "",
                "rpc_origins": [],
                "interactions_endpoint_url": None,
                "bot": state.bot_user.to_json(),
            }
        )

    async def gateway(self, ctx: Ctx) -> web.StreamResponse:
        return json_response({"url": self.gateway_url})

    async def gateway_bot(self, ctx: Ctx) -> web.StreamResponse:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": self.max_concurrency}
        return json_response({"url": self.gateway_url, "shards": self.shards, "session_start_limit": limit})

    # -- application commands -----------------------------------------------------------------

    def _commands(self, ctx: Ctx) -> dict[int, JSON]:
        if ctx.params["application_id"] != str(self.state.application_id):
            raise DiscordHTTPError(403, 50001, "Missing Access", fail="command route with a foreign application id")
        if "guild_id" not in ctx.params:
            return self.state.global_commands
        guild_id = ctx.int_param("guild_id")
        self._guild(guild_id)
        return self.state.guild_commands.setdefault(guild_id, {})

    def _echo(self, ctx: Ctx, body: JSON, command_id: int | None = None) -> JSON:
        # Discord fills ids, version and defaults; discord.py's AppCommand reads these.
        command: JSON = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            "contexts": None,
            "integration_types": [0],
            **body,
            "id": str(command_id or self.state.new_id()),
            "application_id": str(self.state.application_id),
            "version": str(self.state.new_id()),
        }
        if command["integration_types"] is None:
            command["integration_types"] = [0]  # Discord answers its default (guild install), never null
        if command["default_member_permissions"] is not None:
            # A bot may send the bit set as a number or a string; Discord answers it as a string.
            command["default_member_permissions"] = str(command["default_member_permissions"])
        if "guild_id" in ctx.params:
            command["guild_id"] = ctx.params["guild_id"]
        return command

    async def list_commands(self, ctx: Ctx) -> web.StreamResponse:
        return json_response(list(self._commands(ctx).values()))

    async def put_commands(self, ctx: Ctx) -> web.StreamResponse:
        store = self._commands(ctx)
        by_name = {(c["name"], c.get("type", 1)): int(c["id"]) for c in store.values()}
        new: dict[int, JSON] = {}
        for body in ctx.body or []:
            # Re-registering keeps a command's id, like Discord's bulk overwrite.
            key = (body.get("name"), body.get("type") or 1)
            command = self._echo(ctx, body, by_name.get(key))
            new[int(command["id"])] = command
        store.clear()
        store.update(new)
        self.state.changed()
        return json_response(list(new.values()))

    async def post_command(self, ctx: Ctx) -> web.StreamResponse:
        store = self._commands(ctx)
        body: JSON = ctx.body or {}
        existing = next((i for i, c in store.items() if c["name"] == body.get("name")), None)
        command = self._echo(ctx, body, existing)
        store[int(command["id"])] = command
        self.state.changed()
        return json_response(command, 200 if existing else 201)

    def _command(self, ctx: Ctx) -> tuple[dict[int, JSON], int]:
        store = self._commands(ctx)
        command_id = ctx.int_param("command_id")
        if command_id not in store:
            raise DiscordHTTPError(404, 10063, "Unknown application command", fail=f"no command {command_id}")
        return store, command_id

    async def get_command(self, ctx: Ctx) -> web.StreamResponse:
        store, command_id = self._command(ctx)
        return json_response(store[command_id])

    async def patch_command(self, ctx: Ctx) -> web.StreamResponse:
        store, command_id = self._command(ctx)
        store[command_id] = self._echo(ctx, {**store[command_id], **(ctx.body or {})}, command_id)
        self.state.changed()
        return json_response(store[command_id])

    async def delete_command(self, ctx: Ctx) -> web.StreamResponse:
        store, command_id = self._command(ctx)
        del store[command_id]
        self.state.changed()
        return web.Response(status=204)

    async def empty_list(self, ctx: Ctx) -> web.StreamResponse:
        return json_response([])

    # -- guilds and channels ------------------------------------------------------------------

    def _guild(self, guild_id: int) -> Any:
        try:
            return self.state.guild(guild_id)
        except LookupError:
            raise DiscordHTTPError(404, 10004, "Unknown Guild", fail=f"no guild {guild_id} in the fake") from None

    async def get_guild(self, ctx: Ctx) -> web.StreamResponse:
        guild = self._guild(ctx.int_param("guild_id"))
        data = guild.to_json(bot=self.state.bot_user)
        for key in (
            "members",
            "channels",
            "threads",
            "presences",
            "voice_states",
            "joined_at",
            "large",
            "member_count",
        ):
            data.pop(key, None)  # GET /guilds/{id} is the REST shape, not GUILD_CREATE's
        return json_response(data)

    async def guild_channels(self, ctx: Ctx) -> web.StreamResponse:
        guild = self._guild(ctx.int_param("guild_id"))
        return json_response([c.to_json() for c in guild.channels])

    async def guild_roles(self, ctx: Ctx) -> web.StreamResponse:
        guild = self._guild(ctx.int_param("guild_id"))
        return json_response([r.to_json() for r in [guild.everyone_role, *guild.roles]])

    async def guild_members(self, ctx: Ctx) -> web.StreamResponse:
        guild = self._guild(ctx.int_param("guild_id"))
        members = [m.to_json() for m in guild.members] + [self.state.bot_member(guild).to_json()]
        return json_response(members[: int(ctx.query.get("limit", "1"))])

    async def guild_member(self, ctx: Ctx) -> web.StreamResponse:
        guild = self._guild(ctx.int_param("guild_id"))
        user_id = ctx.int_param("user_id")
        if user_id == self.state.bot_user.id:
            return json_response(self.state.bot_member(guild).to_json())
        member = guild.member(user_id)
        if member is None:
            raise DiscordHTTPError(404, 10007, "Unknown Member")
        return json_response(member.to_json())

    async def get_channel(self, ctx: Ctx) -> web.StreamResponse:
        channel = self.state.channel(ctx.int_param("channel_id"))
        if channel is None:
            raise DiscordHTTPError(404, 10003, "Unknown Channel")
        return json_response(channel.to_json())

    async def typing(self, ctx: Ctx) -> web.StreamResponse:
        if self.state.channel(ctx.int_param("channel_id")) is None:
            raise DiscordHTTPError(404, 10003, "Unknown Channel", fail="typing in an unknown channel")
        return web.Response(status=204)
