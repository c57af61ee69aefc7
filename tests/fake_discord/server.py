"""``FakeDiscord``: the server, its recorded state, and the helpers that drive a bot.

One aiohttp app on 127.0.0.1 (ephemeral port) serves REST under /api/v10, the gateway at
/gateway and uploaded/served files under /attachments.  See the package docstring for usage.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from .clock import Clock
from .gateway import GUILDS_PER_SHARD, Gateway, GatewaySession
from .interactions import InteractionHandle
from .models import JSON, FakeChannel, FakeGuild, FakeUser, default_guilds
from .patching import discord_py_pointed_at
from .payloads import (
    FakeAttachment,
    Resolved,
    base_payload,
    click_payload,
    command_data,
    find_command,
    locate,
    modal_payload,
    new_fake_attachment,
)
from .records import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    AllowedMentionsRecord,
    InteractionRecord,
    RecordedRequest,
    StoredMessage,
)
from .rest import API_PREFIX, RestApi
from .rest_messages import MessageRoutes
from .rest_routes import MiscRoutes
from .rest_threads import ThreadRoutes
from .state import FakeState
from .validation import load_validator, spec_path_from_env

T = TypeVar("T")
DEFAULT_TOKEN = "fake-bot-token"
DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024  # Discord's default upload limit for bots


class FakeDiscord:
    def __init__(
        self,
        *,
        guilds: list[FakeGuild] | None = None,
        bot_user: FakeUser | None = None,
        application_id: int | None = None,
        token: str = DEFAULT_TOKEN,
        attachment_size_limit: int = DEFAULT_SIZE_LIMIT,
        spec_path: str | os.PathLike[str] | None = None,
        validate: bool = True,
        response_deadline: float | None = 3.0,
        heartbeat_interval_ms: int = 41250,
        default_timeout: float = 10.0,
        host: str = "127.0.0.1",
        clock: Clock | None = None,
        recommended_shards: int = 1,
        max_concurrency: int = 1,
        guilds_per_shard: int = GUILDS_PER_SHARD,
    ) -> None:
        """``clock``: ``time() -> float`` (epoch s) for snowflakes and the 15-minute token expiry.

        ``recommended_shards`` and ``max_concurrency`` are what ``GET /gateway/bot`` answers; the gateway holds
        each shard to ``guilds_per_shard`` guilds and to that concurrency (see ``gateway.py``).

        A missing spec turns validation off, but raises ``SpecMissing`` under ``CI=true``."""
        bot = bot_user or FakeUser("imagine-bot", bot=True)
        self.state = FakeState(
            guilds=default_guilds() if guilds is None else guilds,
            bot_user=bot,
            application_id=application_id or bot.id,
            token=token,
            attachment_size_limit=attachment_size_limit,
            response_deadline=response_deadline,
            default_timeout=default_timeout,
            clock=clock,
        )
        self.spec_path: Path = spec_path_from_env(spec_path)
        if validate:
            self.validator, self.validation_skipped_reason = load_validator(self.spec_path)
        else:
            self.validator, self.validation_skipped_reason = None, "disabled with FakeDiscord(validate=False)"
        self._host, self._heartbeat = host, heartbeat_interval_ms
        self.recommended_shards, self.max_concurrency = recommended_shards, max_concurrency
        self._guilds_per_shard = guilds_per_shard
        self._runner: web.AppRunner | None = None
        self._port = 0
        self.gateway: Gateway | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self._host, 0))
        self._port = sock.getsockname()[1]
        self.state.base_url = f"http://{self._host}:{self._port}"
        self.gateway = Gateway(self.state, url=self.gateway_url, heartbeat_interval_ms=self._heartbeat,
                               max_concurrency=self.max_concurrency, guilds_per_shard=self._guilds_per_shard)
        api = RestApi(self.state, self.validator)
        MiscRoutes(self.state, self.gateway_url, shards=self.recommended_shards,
                   max_concurrency=self.max_concurrency).install(api)
        MessageRoutes(self.state).install(api)
        ThreadRoutes(self.state).install(api)
        app = web.Application(client_max_size=1024**3)  # the fake, not aiohttp, enforces upload limits
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", api.handle)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/attachments/{att_id}/{filename}", self._serve_file)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        found = self.state.files.get(request.path)
        if found is None:
            self.state.fail(f"GET {request.path}: no such file on the fake")
            return web.Response(status=404, text="404: Not Found")
        data, content_type = found
        self.state.downloads.append(request.path)
        self.state.changed()
        return web.Response(body=data, content_type=content_type)

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("FakeDiscord is not started")
        return self._port

    @property
    def api_base(self) -> str:
        """E.g. http://127.0.0.1:PORT/api/v10 (the bot's DISCORD_API_BASE)."""
        return f"http://{self._host}:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """E.g. ws://127.0.0.1:PORT/gateway (the bot's DISCORD_GATEWAY_URL)."""
        return f"ws://{self._host}:{self.port}/gateway"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a bot subprocess: API base, gateway URL and token."""
        return {"DISCORD_API_BASE": self.api_base, "DISCORD_GATEWAY_URL": self.gateway_url, "DISCORD_TOKEN": self.token}

    @contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point this process's discord.py at the fake; restores the class attributes on exit."""
        with discord_py_pointed_at(self.api_base, self.gateway_url):
            yield

    # -- world ------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return self.state.token

    @property
    def application_id(self) -> int:
        return self.state.application_id

    @property
    def bot_user(self) -> FakeUser:
        return self.state.bot_user

    @property
    def guilds(self) -> list[FakeGuild]:
        return self.state.guilds

    def guild(self, key: FakeGuild | int | str | None = None) -> FakeGuild:
        return self.state.guild(key)

    def user(self, key: FakeUser | int | str) -> FakeUser:
        return self.state.user(key)

    def channel(self, key: FakeChannel | int | str) -> FakeChannel:
        for guild in self.guilds:
            found = guild.channel(key)
            if found is not None:
                return found
        for dm in self.state.dm_channels.values():
            if key in (dm, dm.id):
                return dm
        raise LookupError(f"no fake channel {key!r}")

    # -- recorded state ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.state.requests

    @property
    def failures(self) -> list[str]:
        return self.state.failures

    @property
    def allowed_mentions(self) -> list[AllowedMentionsRecord]:
        return self.state.allowed_mentions

    @property
    def messages(self) -> list[StoredMessage]:
        """Every message the bot created, in creation order (deleted ones have .deleted)."""
        return list(self.state.messages.values())

    @property
    def downloads(self) -> list[str]:
        """Paths under /attachments/ the bot downloaded (e.g. attachment options)."""
        return self.state.downloads

    @property
    def interactions(self) -> list[InteractionRecord]:
        return list(self.state.interactions.values())

    @property
    def identify(self) -> JSON | None:
        """The last IDENTIFY payload (intents, shard, properties)."""
        session = self.gateway.current if self.gateway else None
        return session.identify if session else None

    def message(self, message_id: int) -> StoredMessage:
        return self.state.messages[message_id]

    def channel_messages(
        self, channel: FakeChannel | int | str, *, include_ephemeral: bool = True
    ) -> list[StoredMessage]:
        msgs = self.state.channel_messages(self.channel(channel).id)
        return [m for m in msgs if include_ephemeral or not m.ephemeral]

    def commands(self, guild: FakeGuild | int | str | None = None) -> list[JSON]:
        """Registered commands: global ones, or those of ``guild``."""
        if guild is None:
            return list(self.state.global_commands.values())
        return list(self.state.guild_commands.get(self.guild(guild).id, {}).values())

    def requests_to(self, method: str, route: str) -> list[RecordedRequest]:
        """Requests that matched an OpenAPI path template, e.g. ("PATCH", "/webhooks/{webhook_id}/...")."""
        return [r for r in self.requests if r.method == method and r.route == route]

    def pop_failures(self) -> list[str]:
        """Take the failures (for tests that provoke one on purpose)."""
        taken = list(self.state.failures)
        self.state.failures.clear()
        return taken

    def assert_no_failures(self) -> None:
        if self.state.failures:
            listed = "\n".join(f"  - {f}" for f in self.state.failures)
            raise AssertionError(f"fake Discord recorded {len(self.state.failures)} failure(s):\n{listed}")

    # -- waiting ----------------------------------------------------------------------------

    async def wait_until(
        self,
        predicate: Callable[[], T | None],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        what: str = "a condition",
    ) -> T:
        return await self.state.wait_until(predicate, timeout=timeout, what=what)

    async def wait_ready(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        identified: int = 1,
    ) -> None:
        """Wait until a bot is connected and ``identified`` IDENTIFYs have been answered.

        READY and the GUILD_CREATEs are sent by then.  Pass ``fake.identify_count + 1`` to
        wait for a restarted bot rather than the old connection.
        """
        gateway = self._gateway()
        await self.wait_until(
            lambda: gateway.connected() is not None and gateway.ready_count >= identified,
            timeout=timeout,
            what=f"a bot to IDENTIFY (#{identified})",
        )

    @property
    def shards(self) -> list[tuple[int, int]]:
        """``(shard_id, shard_count)`` of each connected shard; an unsharded bot is ``[(0, 1)]``."""
        return self._gateway().connected_shards()

    @property
    def identify_count(self) -> int:
        """How many IDENTIFYs the gateway answered (a restarted bot identifies again)."""
        return self._gateway().ready_count

    async def wait_commands(
        self,
        *names: str,
        guild: FakeGuild | int | str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[JSON]:
        def synced() -> list[JSON] | None:
            found = {c["name"]: c for c in self.commands(guild)}
            return [found[n] for n in names] if all(n in found for n in names) else None

        return await self.wait_until(synced, timeout=timeout, what=f"commands {names} to be synced")

    # -- driving ----------------------------------------------------------------------------

    def serve_attachment(self, data: bytes, filename: str, content_type: str | None = None) -> FakeAttachment:
        """Host a file as a user's upload; pass it as an attachment option's value."""
        return new_fake_attachment(self, data, filename, content_type)

    async def slash(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user: FakeUser | int | str | None = None,
        guild: FakeGuild | int | str | None = None,
        channel: FakeChannel | int | str | None = None,
        attachments: Mapping[str, FakeAttachment | tuple[bytes, str]] | None = None,
        attachment_size_limit: int | None = None,
        locale: str = "en-US",
        dm: bool = False,
        _focused: str | None = None,
    ) -> InteractionHandle:
        """Send a chat-input command; ``name`` may be "group sub" for subcommands."""
        g, ch, u = locate(self, guild, channel, user, dm)
        parts = name.split()
        command = find_command(self, parts[0], g)
        kind = APPLICATION_COMMAND if _focused is None else AUTOCOMPLETE
        payload, record = base_payload(
            self, kind=kind, guild=g, channel=ch, user=u, size_limit=attachment_size_limit, locale=locale
        )
        values = {**(options or {}), **(attachments or {})}
        payload["data"] = command_data(command, parts[1:], values, Resolved(self, g), _focused)
        return await self._send(payload, record)

    async def autocomplete(
        self, name: str, focused: str, options: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[JSON]:
        """Send an autocomplete interaction; returns the choices the bot answered."""
        handle = await self.slash(name, options, _focused=focused, **kwargs)
        record = await handle.wait_response()
        return record.autocomplete_choices or []

    async def click(
        self,
        message: StoredMessage | int,
        custom_id: str,
        *,
        user: FakeUser | int | str | None = None,
        values: list[str] | None = None,
    ) -> InteractionHandle:
        """Click a button (or pick ``values`` in a select) on a message the bot sent.

        Raises ``FakeRejected`` for a deleted message: Discord never delivers such a click.
        """
        return await self._send(*click_payload(self, message, custom_id, user, values))

    async def submit_modal(
        self, handle: InteractionHandle, values: Mapping[str, Any], *, user: FakeUser | int | str | None = None
    ) -> InteractionHandle:
        """Submit the modal the bot answered ``handle`` with (custom_id -> value)."""
        return await self._send(*modal_payload(self, handle.record, values, user))

    async def reconnect_gateway(self) -> None:
        """Send op 7 RECONNECT; discord.py reconnects and RESUMEs."""
        await self._gateway().reconnect()

    async def drop_gateway(self) -> None:
        """Close the bot's gateway connection and refuse reconnecting until ``restore_gateway()``, as an outage
        between the bot and Discord would: discord.py retries with backoff, then RESUMEs."""
        await self._gateway().drop()

    def restore_gateway(self) -> None:
        """Accept gateway connections again (the bot's next retry RESUMEs its session)."""
        self._gateway().restore()

    async def dispatch(self, event: str, data: JSON) -> None:
        """Send a raw gateway DISPATCH event to the bot, on the shard of ``data["guild_id"]`` (else shard 0)."""
        guild_id = data.get("guild_id")
        await self._gateway().dispatch(event, data, guild_id=int(guild_id) if guild_id is not None else None)

    # -- internals ----------------------------------------------------------------------------

    def _gateway(self) -> Gateway:
        if self.gateway is None:
            raise RuntimeError("FakeDiscord is not started")
        return self.gateway

    async def _send(self, payload: JSON, record: InteractionRecord) -> InteractionHandle:
        await self.wait_ready()
        gateway = self._gateway()
        guild_id = int(payload["guild_id"]) if payload.get("guild_id") is not None else None

        def connected_owner() -> GatewaySession | None:  # the guild's shard (shard 0 for a DM), once connected
            session = gateway.owner(guild_id)
            return session if session is not None and session.connected else None

        owner = await self.wait_until(connected_owner, what=f"the shard of guild {guild_id} to connect")
        record.created_at = asyncio.get_running_loop().time()
        record.dispatched_at = self.state.now()
        self.state.interactions[record.id] = record
        self.state.by_token[record.token] = record
        await owner.dispatch("INTERACTION_CREATE", payload)
        return InteractionHandle(self, record)
