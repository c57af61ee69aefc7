"""Run the real bot (real discord.py client, real tiny model, real SQLite or PostgreSQL) against the fake Discord.

Test modules enable the ``fake`` fixture with ``pytest_plugins = ["tests.bot_harness"]``. The world
has a guild owned by someone outside the tests (so nobody is an admin by ownership): alice and carol
are plain members, bob holds the Moderator role, which ``tiny_app_config`` lists in the guild's
``moderator_roles``.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from PIL import Image

from bot.app import ImagineBot
from bot.bucket_mirror import RedisBucketMirror
from bot.core.config import AppConfig, BotConfig, GuildConfig, Limits, SchedulerConfig
from bot.core.config_store import ConfigStore
from bot.scheduler import Clock
from bot.services import build_services
from bot.sharding import build_bot
from bot.storage import Storage
from generation.config import ExecutorConfig, GenerationConfig, ModelConfig
from generation.errors import GenerationCancelled
from generation.interface import CancelToken, Executor, Outcome, ProgressCallback
from generation.request import GenerationRequest, GenerationResult, Timings
from tests.fake_discord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, FakeRole, FakeUser, StoredMessage
from tests.fake_discord import run_client as run_client
from tests.fake_discord.models import MEMBER_PERMISSIONS
from tests.frozen_clock import FrozenClock

T = TypeVar("T")
# Generous: a safety net for a loaded 2-core machine, not a timing assertion.
WAIT_S = 60.0
UNLIMITED = Limits(user_rate=None, guild_rate=None, max_queued_per_user=None, max_queued_per_guild=None,
                   daily_images_per_user=None)


def world() -> list[FakeGuild]:
    moderator = FakeRole("Moderator", permissions=MEMBER_PERMISSIONS, position=1)
    owner = FakeUser("olive")
    users = {name: FakeUser(name) for name in ("alice", "bob", "carol")}
    return [FakeGuild(
        "Art Club", channels=[FakeChannel("general", position=0), FakeChannel("imagine", position=1)],
        roles=[moderator], owner_id=owner.id,
        members=[FakeMember(users["alice"]), FakeMember(users["bob"], roles=[moderator]), FakeMember(users["carol"]),
                 FakeMember(owner)],
    )]


@pytest.fixture
def clock() -> FrozenClock:
    """The one clock of an end-to-end test: the fake Discord and the bot both read it."""
    return FrozenClock()


@pytest_asyncio.fixture
async def fake(clock: FrozenClock) -> AsyncIterator[FakeDiscord]:
    """A started fake with ``world()``; the test fails on anything the fake flagged (bad bodies, 413s...)."""
    async with FakeDiscord(guilds=world(), default_timeout=WAIT_S, clock=clock) as started:
        with started.patch_discord():
            yield started
    started.assert_no_failures()


def tiny_model(**limits: Any) -> ModelConfig:
    """builtin:tiny at 64x64 and 2 steps (fast on a CPU); ``limits`` override ModelConfig fields."""
    fields: dict[str, Any] = {"source": "builtin:tiny", "default_steps": 2, "max_steps": 50, "default_width": 64,
                              "default_height": 64, "max_width": 512, "max_height": 512, "max_pixels": 512 * 512}
    return ModelConfig(**{**fields, **limits})


def tiny_app_config(fake: FakeDiscord | None = None, *, models: dict[str, ModelConfig] | None = None,
                    limits: Limits = UNLIMITED, **sections: Any) -> AppConfig:
    """builtin:tiny on the CPU, a preview every step, no batching wait, unthrottled progress edits,
    no admission limits, and (given ``fake``) its Moderator role as the guild's moderator role."""
    models = models or {"tiny": tiny_model()}
    sections.setdefault("generation", GenerationConfig(
        default_model=next(iter(models)), models=models,
        executor=ExecutorConfig(device="cpu", preview_every_steps=1, max_batch_images=4)))
    sections.setdefault("scheduler", SchedulerConfig(batch_window_ms=0, position_update_s=0))
    sections.setdefault("bot", BotConfig(progress_interval_s=0.0))
    if fake is not None:
        guild = fake.guild()
        role = guild.role("Moderator")
        sections.setdefault("guilds", {guild.id: GuildConfig(moderator_roles=[role.id] if role else [])})
    return AppConfig(limits=limits, **sections)


def tiny_executor(config: AppConfig) -> Executor:
    from generation.executor import GpuExecutor

    return GpuExecutor.from_config(config.generation)


class WatchedStorage(Storage):
    """Real storage that wakes waiting tests after each write: tests wait on it, they never poll."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._written = asyncio.Condition()
        self.purge_runs = 0

    async def _notify(self) -> None:
        async with self._written:
            self._written.notify_all()

    async def create_job(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().create_job(*args, **kwargs)
        finally:
            await self._notify()

    async def update_status(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().update_status(*args, **kwargs)
        finally:
            await self._notify()

    async def store_result(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().store_result(*args, **kwargs)
        finally:
            await self._notify()

    async def set_messages(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().set_messages(*args, **kwargs)
        finally:
            await self._notify()

    async def record_delivery(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().record_delivery(*args, **kwargs)
        finally:
            await self._notify()

    async def delivery_failed(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().delivery_failed(*args, **kwargs)
        finally:
            await self._notify()

    async def next_token_expiry(self, *args: Any, **kwargs: Any) -> Any:
        # The retention purge's last call before it sleeps on the clock. A test that sees ``purge_runs`` go up
        # sees a finished run, and the loop asleep again (its next clock.advance wakes it).
        try:
            return await super().next_token_expiry(*args, **kwargs)
        finally:
            self.purge_runs += 1
            await self._notify()

    async def wait_until(self, check: Callable[[], Awaitable[T | None]], *, what: str, timeout_s: float = WAIT_S) -> T:
        """``check()``'s first truthy value, re-checked after every write; a clear failure after ``timeout_s``."""
        async def satisfied() -> T:
            async with self._written:
                while True:
                    found = await check()
                    if found:
                        return found
                    await self._written.wait()

        try:
            return await asyncio.wait_for(satisfied(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"storage never showed {what} within {timeout_s:g} s") from None


class ShownFirstStorage(WatchedStorage):
    """Real storage that records a job as running only once its status message is recorded. An idle GPU starts a
    job at once, so its progress could otherwise end before there is a message to show previews on; the job's
    events wait in order behind this write, and every preview is shown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: dict[str, asyncio.Event] = {}

    def _event(self, job_id: str) -> asyncio.Event:
        return self._shown.setdefault(job_id, asyncio.Event())

    async def set_messages(self, job_id: str, **kwargs: Any) -> Any:
        try:
            return await super().set_messages(job_id, **kwargs)
        finally:
            if kwargs.get("status_message_id") is not None:
                self._event(job_id).set()

    async def update_status(self, job_id: str, status: Any, **kwargs: Any) -> Any:
        if status == "running":
            await asyncio.wait_for(self._event(job_id).wait(), WAIT_S)
        return await super().update_status(job_id, status, **kwargs)


@asynccontextmanager
async def running_bot(fake: FakeDiscord, data_dir: Path, config: AppConfig | ConfigStore | None = None, *,
                      executor: Executor | None = None, drain_timeout_s: float = 30.0,
                      watch_config: bool = False, database_url: str | None = None,
                      storage_class: type[WatchedStorage] | None = None) -> AsyncIterator[ImagineBot]:
    """A started bot; leaving the block closes it, which drains the queue like a real shutdown.

    ``config`` may be a ``ConfigStore`` on a file: with ``watch_config`` the bot watches it and
    reloads on SIGHUP, as ``python -m bot`` does. ``database_url`` (default: SQLite in ``data_dir``)
    runs it on another database, such as the ``database_url`` fixture's."""
    store = config if isinstance(config, ConfigStore) else ConfigStore(initial=config or tiny_app_config(fake))
    clock = clock_of(fake)
    storage = (storage_class or WatchedStorage)(data_dir, database_url,
                                                clock=lambda: datetime.fromtimestamp(clock.time(), UTC))
    bot = make_bot(store, storage, executor or tiny_executor(store.current), clock=clock,
                   drain_timeout_s=drain_timeout_s, watch_config=watch_config)
    async with run_client(fake, bot):
        yield bot


def make_bot(config: ConfigStore, storage: Storage, executor: Executor, *, clock: Clock, **options: Any) -> ImagineBot:
    """The bot as ``python -m bot`` builds it (services first, token buckets mirrored in Redis when the config names
    one, sharded as ``discord.shards`` says), on the test's clock, with a quick guild wait."""
    options.setdefault("guild_ready_timeout", 0.05)
    options.setdefault("watch_config", False)
    buckets = RedisBucketMirror.from_config(config.current.generation.executor)
    return build_bot(build_services(config, storage, executor, clock=clock, buckets=buckets), **options)


def clock_of(fake: FakeDiscord) -> Clock:
    """The clock the fake runs on (the ``clock`` fixture); the bot must read the same one."""
    clock = fake.state.clock
    assert isinstance(clock, FrozenClock), "end-to-end tests run the fake on the clock fixture"
    return clock


class GateExecutor:
    """An ``Executor`` whose batches wait until the test opens ``gate``, then return flat-colour images
    (the colour derives from the seed). Lets a test hold the GPU busy while it queues, cancels or
    restarts, without sleeping. Shutdown cancels the waiting task, as it interrupts a real batch."""

    max_batch_images = 1

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.batches: list[list[GenerationRequest]] = []
        self.closed = False

    async def run(self, batch: Sequence[GenerationRequest], on_progress: ProgressCallback | None = None, *,
                  cancel_tokens: Sequence[CancelToken] | None = None) -> list[Outcome]:
        self.batches.append(list(batch))
        await self.gate.wait()
        tokens: Sequence[CancelToken | None] = cancel_tokens or [None] * len(batch)
        outcomes: list[Outcome] = []
        for request, token in zip(batch, tokens, strict=True):
            if token is not None and token.cancelled:
                outcomes.append(GenerationCancelled("cancelled"))
                continue
            seeds = request.seeds()
            size = (request.width or 64, request.height or 64)
            images = [Image.new("RGB", size, (seed % 256, seed // 256 % 256, 99)) for seed in seeds]
            outcomes.append(GenerationResult(request, images, seeds, Timings()))
        return outcomes

    async def close(self, *, cancel_running: bool = False) -> None:
        self.closed = True


def is_result(message: StoredMessage) -> bool:
    return bool(message.attachments) and any(cid.startswith("imagine:u:") for cid in message.custom_ids())


def decode(message: StoredMessage, index: int = 0) -> Image.Image:
    image = Image.open(io.BytesIO(message.attachments[index].data))
    image.load()
    return image


def button(message: StoredMessage, label: str) -> str:
    """The custom id of the button labelled (or with the emoji) ``label``."""
    for row in message.components:
        for component in row.get("components", []):
            if label in (component.get("label"), (component.get("emoji") or {}).get("name")):
                return str(component["custom_id"])
    raise LookupError(f"no button {label!r} on {message!r}")


def public(fake: FakeDiscord) -> list[StoredMessage]:
    """Messages everyone in the channel sees (not ephemeral, not deleted)."""
    return [message for message in fake.messages if not message.ephemeral and not message.deleted]


def png(color: str = "purple", size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()
