"""Point discord.py at another REST base and gateway URL (there is no public option).

discord.py 2.7 reads ``discord.http.Route.BASE`` for every REST call (webhooks and
interaction callbacks included) and connects a plain ``Client`` to
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``.  The asserts make an upgrade that
renames either attribute fail loudly instead of silently talking to discord.com.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import discord.gateway
import discord.http
import yarl


def point_discord_py_at(api_base: str, gateway_url: str) -> Callable[[], None]:
    """Patch both class attributes; returns a function that restores the old values."""
    route, ws_class = discord.http.Route, discord.gateway.DiscordWebSocket
    assert isinstance(getattr(route, "BASE", None), str), "discord.http.Route.BASE is gone: update tests/fake_discord"
    assert isinstance(getattr(ws_class, "DEFAULT_GATEWAY", None), yarl.URL), (
        "discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY is gone: update tests/fake_discord"
    )
    old_base, old_gateway = route.BASE, ws_class.DEFAULT_GATEWAY
    route.BASE = api_base.rstrip("/")
    ws_class.DEFAULT_GATEWAY = yarl.URL(gateway_url)

    def restore() -> None:
        route.BASE = old_base
        ws_class.DEFAULT_GATEWAY = old_gateway

    return restore


@contextmanager
def discord_py_pointed_at(api_base: str, gateway_url: str) -> Iterator[None]:
    restore = point_discord_py_at(api_base, gateway_url)
    try:
        yield
    finally:
        restore()
