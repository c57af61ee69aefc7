"""The websocket gateway: HELLO, heartbeats, IDENTIFY -> READY + GUILD_CREATE, RESUME.

JSON text frames only: discord.py skips decompression for text frames, so the requested
``compress=zlib-stream`` can be ignored.  Sessions outlive their socket so a RESUME can
replay what was dispatched while the bot was disconnected.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .models import JSON
from .records import EPHEMERAL, StoredMessage
from .state import FakeState

HELLO, HEARTBEAT, IDENTIFY, PRESENCE, VOICE_STATE, RESUME, RECONNECT = 10, 1, 2, 3, 4, 6, 7
REQUEST_MEMBERS, INVALID_SESSION, HEARTBEAT_ACK, DISPATCH = 8, 9, 11, 0
GUILD_MESSAGES, DIRECT_MESSAGES = 1 << 9, 1 << 12


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

    async def dispatch(self, event: str, data: Any) -> None:
        self.seq += 1
        payload = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
        self.sent.append(payload)
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_str(json.dumps(payload))


class Gateway:
    def __init__(self, state: FakeState, *, url: str, heartbeat_interval_ms: int) -> None:
        self.state = state
        self.url = url  # resume_gateway_url
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, GatewaySession] = {}
        self.current: GatewaySession | None = None  # the last identified/resumed session
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
        session = GatewaySession(session_id=secrets.token_hex(16), identify=data, ws=ws)
        self.sessions[session.session_id] = session
        ready = {
            "v": 10,
            "user": {**state.bot_user.to_json(), "verified": True, "mfa_enabled": False},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in state.guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.url,
            "shard": data.get("shard") or [0, 1],
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
        for guild in state.guilds:
            await session.dispatch(
                "GUILD_CREATE", guild.to_json(bot=state.bot_user, bot_member=state.bot_member(guild))
            )
        self.current = session
        self.ready_count += 1
        state.changed()
        return session

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
        self.current = session
        self.state.changed()
        return session

    async def _chunk(self, session: GatewaySession | None, data: JSON) -> None:
        if session is None:
            return
        guild = self.state.guild(int(data["guild_id"]))
        members = [m.to_json() for m in guild.members] + [self.state.bot_member(guild).to_json()]
        chunk = {"guild_id": str(guild.id), "members": members, "chunk_index": 0, "chunk_count": 1}
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    # -- used by the fake -------------------------------------------------------------------

    def connected(self) -> GatewaySession | None:
        session = self.current
        return session if session is not None and session.ws is not None and not session.ws.closed else None

    async def dispatch(self, event: str, data: Any) -> None:
        session = self.current
        if session is None:
            raise RuntimeError("no bot has identified on the fake gateway yet")
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
        # Real Discord also tells the bot about its own (non-ephemeral) messages.
        session = self.current
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
