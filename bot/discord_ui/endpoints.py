"""Point discord.py at another REST base and gateway (a rate-limit proxy, or the tests' fake Discord),
and wait until that REST host can be reached at all.

discord.py has no public option for either URL, so the class attributes are set before login. The
asserts make a discord.py upgrade that renames them fail at start-up instead of silently talking to
the real Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import discord.gateway
import discord.http
import yarl

from bot.core.text import format_duration

_log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 10.0


def point_discord_at(api_base: str | None, gateway_url: str | None) -> None:
    """Send REST calls to ``api_base`` (e.g. http://127.0.0.1:8080/api/v10) and the gateway to ``gateway_url``."""
    assert hasattr(discord.http.Route, "BASE"), (
        "discord.py no longer has Route.BASE; update bot/discord_ui/endpoints.py"
    )
    assert hasattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY"), (
        "discord.py no longer has DiscordWebSocket.DEFAULT_GATEWAY; update bot/discord_ui/endpoints.py"
    )
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
        _log.info("Discord REST calls go to %s", api_base)
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
        _log.info("Discord gateway is %s", gateway_url)


def api_address(api_base: str | None) -> tuple[str, int]:
    """The host and port that REST calls go to: ``api_base``, else discord.py's own base (Discord's API)."""
    url = yarl.URL(api_base or discord.http.Route.BASE)
    return url.host or "discord.com", url.port or 443


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT_S:g} s"
    if isinstance(error, socket.gaierror):
        return f"name lookup failed: {error.strerror or error}"
    if isinstance(error, OSError) and error.errno and error.errno > 0:
        return os.strerror(error.errno)  # "Connection refused", "Network is unreachable"
    return str(error) or type(error).__name__


async def unreachable(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why a TCP connection to ``host:port`` cannot be made (name lookup, refused, timeout), or None if it can."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError) as error:
        return _reason(error)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def wait_until_reachable(host: str, port: int, *, say: Callable[[str], None], retry_s: float,
                               retry_max_s: float, give_up: bool = False,
                               sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> bool:
    """Before logging in: try ``host:port`` until it answers, one line per failed try, waiting ``retry_s``
    at first and twice as long after each failure, at most ``retry_max_s``. With ``give_up`` the first
    failure returns False (for a supervisor that restarts the process itself)."""
    delay = retry_s
    while (reason := await unreachable(host, port)) is not None:
        if give_up:
            say(f"cannot reach Discord at {host}:{port} ({reason}); exiting (exit_on_connect_failure)")
            return False
        say(f"cannot reach Discord at {host}:{port} ({reason}); retrying in {format_duration(delay)}")
        await sleep(delay)
        delay = min(delay * 2, retry_max_s)
    return True
