"""pytest fixtures for the fake Discord.

Enable with ``pytest_plugins = ["tests.fake_discord.fixtures"]`` in a test module or the
root conftest.py (a plugin, so pytest rewrites its asserts and fixtures need no import).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from .server import FakeDiscord


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started fake with the default world, discord.py pointed at it.

    At teardown the test fails if the fake recorded any failure (invalid body, unknown
    route, double acknowledgement...).  Tests that provoke one call ``pop_failures()``.
    """
    async with FakeDiscord() as fake:
        with fake.patch_discord():
            yield fake
    fake.assert_no_failures()
