"""The websocket gateway: HELLO, heartbeats, IDENTIFY -> READY + GUILD_CREATE, RESUME.

JSON text frames only: discord.py skips decompression for text frames, so the requested
``compress=zlib-stream`` can be ignored.  Sessions outlive their socket so a RESUME can
replay what was dispatched while the bot was disconnected.

Sharding as Discord does it: one connection per shard, each IDENTIFY carrying ``shard: [id, count]``
(none means ``[0, 1]``).  A shard gets READY and GUILD_CREATE for its own guilds only, and every event
about a guild (interactions included) goes to the shard that owns it, ``(guild_id >> 22) % count``;
direct messages go to shard 0.  A bad ``shard`` closes with 4010, a shard holding more than
``guilds_per_shard`` guilds with 4011 (sharding required).  Shards identify one per rate-limit key
(``shard_id % max_concurrency``) every 5 s, or get INVALID_SESSION; an unsharded bot is exempt, because
tests restart one at once where Discord would make it wait.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .models import JSON, shard_of
from .records import EPHEMERAL, StoredMessage
from .state import FakeState

HELLO, HEARTBEAT, IDENTIFY, PRESENCE, VOICE_STATE, RESUME, RECONNECT = 10, 1, 2, 3, 4, 6, 7
REQUEST_MEMBERS, INVALID_SESSION, HEARTBEAT_ACK, DISPATCH = 8, 9, 11, 0
GUILD_MESSAGES, DIRECT_MESSAGES = 1 << 9, 1 << 12
INVALID_SHARD, SHARDING_REQUIRED = 4010, 4011
GUILDS_PER_SHARD = 2500  # Discord's limit: a shard may hold at most this many guilds
IDENTIFY_WINDOW_S = 5.0  # one IDENTIFY per rate-limit key in this many seconds


@dataclass
class GatewaySession:
    session_id: str
    identify: JSON
    seq: int = 0
    ws: web.WebSocketResponse | None = None
    sent: list[JSON] = field(default_factory=list)  # dispatched payloads, for RESUME replay

    @property
    def intents(self) -> int:
        return int(self.identify.get("intents", 0))

    @property
    def shard(self) -> tuple[int, int]:
        """``(shard_id, shard_count)`` as identified (checked by ``Gateway._identify``)."""
        shard_id, count = self.identify.get("shard") or (0, 1)
        return int(shard_id), int(count)

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def dispatch(self, event: str, data: Any) -> None:
        self.seq += 1
        payload = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
        self.sent.append(payload)
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_str(json.dumps(payload))


def _valid_shard(value: Any) -> bool:
    return (value is None or (isinstance(value, list) and len(value) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in value)
            and 0 <= value[0] < value[1]))


class Gateway:
    def __init__(self, state: FakeState, *, url: str, heartbeat_interval_ms: int, max_concurrency: int = 1,
                 guilds_per_shard: int = GUILDS_PER_SHARD) -> None:
        self.state = state
        self.url = url  # resume_gateway_url
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_concurrency = max_concurrency
        self.guilds_per_shard = guilds_per_shard
        self.sessions: dict[str, GatewaySession] = {}
        self.current: GatewaySession | None = None  # the last identified/resumed session
        self.shards: dict[tuple[int, int], GatewaySession] = {}  # (id, count) -> its last identified/resumed session
        self._identified_at: dict[int, float] = {}  # rate-limit key -> loop time of its last sharded IDENTIFY
        self.sockets: set[web.WebSocketResponse] = set()
        self.ready_count = 0
        self.refusing = False  # while True, new connections are refused (Discord unreachable)
        self._pending: set[asyncio.Task[None]] = set()
        state.message_listeners.append(self._on_message)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.refusing:  # as an outage looks to a client: the upgrade fails, and it retries with backoff
            return web.Response(status=503, text="fake_discord: the gateway is down")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.sockets.add(ws)
        if request.query.get("encoding", "json") != "json":
            self.state.fail(f"gateway: unsupported encoding {request.query.get('encoding')!r}")
            await ws.close(code=4002, message=b"fake_discord supports encoding=json only")
            return ws
        session: GatewaySession | None = None
        try:
            await self._send(ws, {"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    self.state.fail(f"gateway: unexpected frame {msg.type!r}")
                    continue
                session = await self._on_frame(ws, json.loads(msg.data), session)
        finally:
            self.sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
            self.state.changed()
        return ws

    async def _send(self, ws: web.WebSocketResponse, payload: JSON) -> None:
        await ws.send_str(json.dumps({"s": None, "t": None, **payload}))

    async def _on_frame(
        self, ws: web.WebSocketResponse, payload: JSON, session: GatewaySession | None
    ) -> GatewaySession | None:
        op, data = payload.get("op"), payload.get("d")
        data = data if isinstance(data, dict) else {}
        if op == HEARTBEAT:
            await self._send(ws, {"op": HEARTBEAT_ACK})
        elif op == IDENTIFY:
            return await self._identify(ws, data)
        elif op == RESUME:
            return await self._resume(ws, data)
        elif op == REQUEST_MEMBERS:
            await self._chunk(session, data)
        elif op in (PRESENCE, VOICE_STATE):
            pass  # accepted and ignored
        else:
            self.state.fail(f"gateway: unknown opcode {op}")
            await ws.close(code=4001, message=b"Unknown opcode")
        return session

    async def _identify(self, ws: web.WebSocketResponse, data: JSON) -> GatewaySession | None:
        state = self.state
        if data.get("token") != state.token and data.get("token") != f"Bot {state.token}":
            state.fail("gateway: IDENTIFY with a wrong token")
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        if not _valid_shard(data.get("shard")):
            state.fail(f"gateway: IDENTIFY with shard {data.get('shard')!r}; allowed: [id, count] with 0 <= id < count")
            await ws.close(code=INVALID_SHARD, message=b"Invalid shard.")
            return None
        session = GatewaySession(session_id=secrets.token_hex(16), identify=data, ws=ws)
        shard_id, count = session.shard
        guilds = [g for g in state.guilds if shard_of(g.id, count) == shard_id]
        if len(guilds) > self.guilds_per_shard:
            state.fail(f"gateway: shard [{shard_id}, {count}] would hold {len(guilds)} guilds "
                       f"(at most {self.guilds_per_shard}): sharding required")
            await ws.close(code=SHARDING_REQUIRED, message=b"Sharding required.")
            return None
        if not await self._identify_allowed(ws, session):
            return None
        self.sessions[session.session_id] = session
        ready = {
            "v": 10,
            "user": {**state.bot_user.to_json(), "verified": True, "mfa_enabled": False},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.url,
            "shard": [shard_id, count],
            "application": {"id": str(state.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "auth": {},
            "user_settings": {},
            "_trace": ["fake_discord"],
        }
        await session.dispatch("READY", ready)
        for guild in guilds:
            await session.dispatch(
                "GUILD_CREATE", guild.to_json(bot=state.bot_user, bot_member=state.bot_member(guild))
            )
        self.current = self.shards[session.shard] = session
        self.ready_count += 1
        state.changed()
        return session

    async def _identify_allowed(self, ws: web.WebSocketResponse, session: GatewaySession) -> bool:
        """Shards of one bot agree on the count, and identify within the session start limit's concurrency."""
        shard_id, count = session.shard
        others = {s.shard for s in self.shards.values() if s.connected and s.shard[1] != count}
        if others:
            self.state.fail(f"gateway: shard [{shard_id}, {count}] identified while shards {sorted(others)} are "
                            "connected: every shard of a bot uses one shard count")
        if count == 1:
            return True
        key, now = shard_id % self.max_concurrency, asyncio.get_running_loop().time()
        last = self._identified_at.get(key)
        if last is not None and now - last < IDENTIFY_WINDOW_S:
            self.state.fail(f"gateway: shard [{shard_id}, {count}] identified {now - last:.2f} s after another of "
                            f"rate-limit key {key} (max_concurrency {self.max_concurrency}: one per key every "
                            f"{IDENTIFY_WINDOW_S:g} s)")
            await self._send(ws, {"op": INVALID_SESSION, "d": False})
            return False
        self._identified_at[key] = now
        return True

    async def _resume(self, ws: web.WebSocketResponse, data: JSON) -> GatewaySession | None:
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or data.get("token") not in (self.state.token, f"Bot {self.state.token}"):
            await self._send(ws, {"op": INVALID_SESSION, "d": False})
            return None
        session.ws = ws
        last = int(data.get("seq") or 0)
        for payload in session.sent:
            if payload["s"] > last:
                await ws.send_str(json.dumps(payload))
        await session.dispatch("RESUMED", {"_trace": ["fake_discord"]})
        self.current = self.shards[session.shard] = session
        self.state.changed()
        return session

    async def _chunk(self, session: GatewaySession | None, data: JSON) -> None:
        if session is None:
            return
        guild = self.state.guild(int(data["guild_id"]))
        if shard_of(guild.id, session.shard[1]) != session.shard[0]:
            self.state.fail(f"gateway: REQUEST_GUILD_MEMBERS for guild {guild.id} on shard {list(session.shard)}, "
                            "which does not own it")
            return
        members = [m.to_json() for m in guild.members] + [self.state.bot_member(guild).to_json()]
        chunk = {"guild_id": str(guild.id), "members": members, "chunk_index": 0, "chunk_count": 1}
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    # -- used by the fake -------------------------------------------------------------------

    def connected(self) -> GatewaySession | None:
        session = self.current
        return session if session is not None and session.connected else None

    def owner(self, guild_id: int | None) -> GatewaySession | None:
        """The session of the shard that owns ``guild_id`` (shard 0 for None: direct messages), under the shard
        count the bot identified with last; it may be disconnected (what it is sent waits for its RESUME)."""
        current = self.current
        if current is None:
            return None
        count = current.shard[1]
        return self.shards.get((shard_of(guild_id, count), count))

    def connected_shards(self) -> list[tuple[int, int]]:
        """``(shard_id, shard_count)`` of every connected shard, in order."""
        return sorted(shard for shard, session in self.shards.items() if session.connected)

    async def dispatch(self, event: str, data: Any, *, guild_id: int | None = None) -> None:
        """Send ``event`` to the shard that owns ``guild_id`` (shard 0 for None)."""
        session = self.owner(guild_id)
        if session is None:
            raise RuntimeError(f"no bot has identified the shard of guild {guild_id} on the fake gateway yet")
        await session.dispatch(event, data)

    async def reconnect(self) -> None:
        """Ask the bot to reconnect and RESUME (op 7), as Discord does during maintenance."""
        session = self.connected()
        if session is not None and session.ws is not None:
            await self._send(session.ws, {"op": RECONNECT, "d": None})

    async def drop(self) -> None:
        """Close every connection (1001, going away) and refuse new ones until ``restore``: the bot loses the
        gateway and keeps trying to RESUME."""
        self.refusing = True
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"fake_discord: gateway dropped")

    def restore(self) -> None:
        self.refusing = False

    def _on_message(self, kind: str, message: StoredMessage) -> None:
        # Real Discord also tells the bot about its own (non-ephemeral) messages, on the guild's shard.
        session = self.owner(message.guild_id)
        if session is None or message.flags & EPHEMERAL:
            return
        needed = GUILD_MESSAGES if message.guild_id is not None else DIRECT_MESSAGES
        if not session.intents & needed:
            return
        if kind == "delete":
            event, data = "MESSAGE_DELETE", {"id": str(message.id), "channel_id": str(message.channel_id)}
            if message.guild_id is not None:
                data["guild_id"] = str(message.guild_id)
        else:
            event, data = f"MESSAGE_{kind.upper()}", message.to_json()
        task = asyncio.get_running_loop().create_task(session.dispatch(event, data))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"fake_discord shutting down")
