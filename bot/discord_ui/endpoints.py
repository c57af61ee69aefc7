"""Point discord.py at another REST base and gateway (a rate-limit proxy, or the tests' fake Discord).

discord.py has no public option for either URL, so the class attributes are set before login. The
asserts make a discord.py upgrade that renames them fail at start-up instead of silently talking to
the real Discord.
"""

from __future__ import annotations

import logging

import discord.gateway
import discord.http
import yarl

_log = logging.getLogger(__name__)


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
