"""Tests against a real Redis: the shared server (``IMAGINE_TEST_REDIS_URL``), each test in a namespace of its own,
and, for a test that restarts Redis, a ``redis-server`` of its own on a free port.

A test that takes ``redis_url`` gets the server's URL and ``redis_namespace`` a fresh namespace (every key the bot
and its workers write is under it; they are deleted after the test, but for SAQ's abort marks, which are keyed
by job key alone, unique per bot process, and expire within a minute), so tests never see each other's keys,
nor those of another run sharing the server. Without a reachable server these tests skip, and the run ends with one
line saying how to run them; under ``CI=true`` they fail instead (``.ci/run`` starts the server first).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

REDIS_URL_ENV = "IMAGINE_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_UNREACHABLE = pytest.StashKey[str]()
_SKIPPED = pytest.StashKey[int]()


def redis_server_url() -> str:
    return os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL


def _required() -> bool:
    return os.environ.get("CI") == "true"


def _skip_or_fail(config: pytest.Config, message: str) -> None:
    if _required():
        pytest.fail(f"CI=true but {message}; .ci/run starts it, or set {REDIS_URL_ENV}")
    config.stash[_SKIPPED] = config.stash.get(_SKIPPED, 0) + 1
    pytest.skip(message)


async def _answers(url: str) -> str | None:
    """None when Redis at ``url`` answers PING, else why not."""
    client = Redis.from_url(url, socket_connect_timeout=3)
    try:
        await client.ping()
        return None
    except (RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()


@pytest.fixture
async def redis_url(request: pytest.FixtureRequest) -> str:
    """The shared test server's URL, or skip (fail under CI) when it does not answer (tried once per run)."""
    url = redis_server_url()
    reason = request.config.stash.get(_UNREACHABLE, None)
    if reason is None:
        reason = await _answers(url) or ""
        request.config.stash[_UNREACHABLE] = reason
    if reason:
        _skip_or_fail(request.config, f"Redis at {url.split('://', 1)[-1]} not reachable ({reason})")
    return url


async def delete_namespace(url: str, namespace: str) -> None:
    """Every key of a namespace: the bot's and workers' own, and SAQ's for the workers' queues and jobs."""
    client = Redis.from_url(url)
    try:
        for pattern in (f"imagine:{namespace}:*", f"saq:*imagine.{namespace}.*"):
            async for key in client.scan_iter(match=pattern, count=500):
                await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_namespace(redis_url: str) -> AsyncIterator[str]:
    """A namespace no other test uses; its keys are deleted afterwards."""
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    yield namespace
    with contextlib.suppress(RedisError, OSError):
        await delete_namespace(redis_url, namespace)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OwnRedis:
    """A ``redis-server`` of the test's own, without persistence: ``stop()`` loses everything, as a restart of
    an in-memory Redis does; ``start()`` brings it back (empty) on the same port."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.folder), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        for _ in range(400):  # a wait, not a timing assertion: a loaded machine may take a while
            if await _answers(self.url) is None:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer")

    async def stop(self) -> None:
        """SIGKILL: it vanishes at once, with everything it held."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None


@pytest.fixture
async def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OwnRedis]:
    """A private Redis server for a test that restarts it; skip (fail under CI) without ``redis-server``."""
    binary = shutil.which("redis-server")
    if binary is None:
        _skip_or_fail(request.config, "redis-server is not installed (a test restarts a Redis of its own)")
    assert binary is not None
    server = OwnRedis(binary, tmp_path)
    try:
        yield server
    finally:
        await server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """One line at the end when the Redis tests were skipped, saying how to run them."""
    skipped = config.stash.get(_SKIPPED, 0)
    if skipped:
        terminalreporter.write_line(
            f"Redis not reachable: {skipped} tests skipped; start redis-server (bash .ci/services does) or set "
            f"{REDIS_URL_ENV} ({config.stash.get(_UNREACHABLE, '') or 'redis-server is not installed'})")
