"""What the contest tests share: a world of two servers with enough members to vote, an executor that paints
recognisable pictures at once, and the steps members take (start, enter, submit, vote), each through the fake
Discord and waited for by event, never by time.

The bot and the fake run on one ``FrozenClock``: "an hour passes" is ``await clock.advance(3600)``, after which
the phase loop, asleep until the round's deadline, wakes and moves the round on.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from bot.app import ImagineBot
from bot.core.config import AppConfig, GuildConfig
from bot.core.config_store import ConfigStore
from bot.core.contest_config import ContestsConfig
from bot.core.faults import Checkpoints
from bot.features.contests.phase_store import PhaseStore
from bot.features.contests.records import Contest, Entry
from bot.features.contests.store import ContestStore
from bot.features.contests.texts import reveal_parts
from bot.services import build_services
from generation.errors import FixableFailure, GenerationCancelled
from generation.interface import CancelToken, Outcome, ProgressCallback
from generation.request import GenerationRequest, GenerationResult, Timings
from tests.bot_harness import WAIT_S, WatchedStorage, tiny_app_config
from tests.fake_discord import (
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    InteractionHandle,
    StoredMessage,
    run_client,
)
from tests.fake_discord.models import MEMBER_PERMISSIONS
from tests.frozen_clock import FrozenClock

MEMBERS = ("alice", "bob", "carol", "dave", "erin")  # bob is a moderator of both servers


def contest_world() -> list[FakeGuild]:
    """Two servers. Art Club: #general and #gallery; Pixel Den: #contests. bob moderates both."""
    guilds = []
    users = {name: FakeUser(name) for name in MEMBERS}
    for name, channels in (("Art Club", ("general", "gallery")), ("Pixel Den", ("contests",))):
        moderator = FakeRole("Moderator", permissions=MEMBER_PERMISSIONS, position=1)
        owner = FakeUser(f"owner of {name}")
        members = [FakeMember(user, roles=[moderator] if user.username == "bob" else []) for user in users.values()]
        guilds.append(FakeGuild(name, channels=[FakeChannel(channel, position=index)
                                                for index, channel in enumerate(channels)],
                                roles=[moderator], owner_id=owner.id, members=[*members, FakeMember(owner)]))
    return guilds


@asynccontextmanager
async def contest_fake(clock: FrozenClock) -> AsyncIterator[FakeDiscord]:
    """The contest world on the test's clock; a test module's ``fake`` fixture yields it (replacing, for that
    module only, the harness's one-server world). Fails the test on anything the fake flagged."""
    async with FakeDiscord(guilds=contest_world(), default_timeout=WAIT_S, clock=clock) as started:
        with started.patch_discord():
            yield started
    started.assert_no_failures()


def contest_config(fake: FakeDiscord, **contests: Any) -> AppConfig:
    """The tiny test config; both servers' Moderator roles moderate, and ``contests`` set the defaults."""
    guilds = {guild.id: GuildConfig(moderator_roles=[role.id for role in guild.roles if role.name == "Moderator"])
              for guild in fake.guilds}
    return tiny_app_config(fake, guilds=guilds, contests=ContestsConfig(**contests))


class PaintExecutor:
    """An ``Executor`` that paints at once: a colour wash from the prompt with a disc placed by the seed, so
    two prompts differ, a seed repeats its picture, and the podium sample shows something. Close the
    ``gate`` to hold batches (a job queued or running at a restart)."""

    max_batch_images = 4

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.held = asyncio.Event()  # set when a batch waits at the closed gate
        self.requests: list[GenerationRequest] = []

    async def run(self, batch: Sequence[GenerationRequest], on_progress: ProgressCallback | None = None, *,
                  cancel_tokens: Sequence[CancelToken] | None = None) -> list[Outcome]:
        self.requests.extend(batch)
        if not self.gate.is_set():
            self.held.set()
        await self.gate.wait()
        tokens: Sequence[CancelToken | None] = cancel_tokens or [None] * len(batch)
        outcomes: list[Outcome] = []
        for request, token in zip(batch, tokens, strict=True):
            if token is not None and token.cancelled:
                outcomes.append(GenerationCancelled("cancelled"))
                continue
            if "out of memory" in request.prompt:  # a prompt that fails, as a too large batch would on a GPU
                outcomes.append(FixableFailure("The GPU ran out of memory; try a smaller size."))
                continue
            seeds = request.seeds()
            images = [paint(request.prompt, seed, (request.width or 64, request.height or 64)) for seed in seeds]
            outcomes.append(GenerationResult(request, images, seeds, Timings()))
        return outcomes

    async def close(self, *, cancel_running: bool = False) -> None:
        return None


def paint(prompt: str, seed: int, size: tuple[int, int]) -> Image.Image:
    digest = hashlib.sha256(prompt.encode()).digest()
    top, bottom = digest[:3], digest[3:6]
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        mix = y / max(1, height - 1)
        draw.line((0, y, width, y), fill=tuple(round(a * (1 - mix) + b * mix) for a, b in zip(top, bottom,
                                                                                             strict=True)))
    radius = max(6, min(size) // 4)
    x, y = radius + seed * 37 % max(1, width - 2 * radius), radius + seed * 53 % max(1, height - 2 * radius)
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=tuple(digest[6:9]), outline=(255, 255, 255))
    return image


class Killed(BaseException):
    """A simulated SIGKILL: raised at a checkpoint, it ends the task that reached it and nothing else runs there."""


class KillAt(Checkpoints):
    """Checkpoints that "kill" the bot (raise ``Killed``) when it reaches ``step`` for the ``after + 1``-th time,
    and at every checkpoint after that: a dead process does nothing more (the test then closes this bot and
    starts a new one on the same data)."""

    def __init__(self, step: str, *, after: int = 0, fake: FakeDiscord | None = None) -> None:
        super().__init__()
        self.step, self.after = step, after
        self.killed = asyncio.Event()
        self._fake = fake  # told of the kill, so that its waits look again at once

    def reached(self, step: str) -> None:
        if self.killed.is_set():
            raise Killed(step)
        if step == self.step:
            if self.after == 0:
                self.killed.set()
                if self._fake is not None:
                    self._fake.state.changed()
                raise Killed(step)
            self.after -= 1


@asynccontextmanager
async def contest_bot(fake: FakeDiscord, data_dir: Path, config: AppConfig, executor: Any, *,
                      checkpoints: Checkpoints | None = None) -> AsyncIterator[ImagineBot]:
    """The bot as ``python -m bot`` builds it, on the test's clock, with ``checkpoints`` for simulated kills.
    Closing it interrupts a running batch at once (as the drain does when its time is up)."""
    clock = fake.state.clock
    assert isinstance(clock, FrozenClock)
    storage = WatchedStorage(data_dir, clock=lambda: datetime.fromtimestamp(clock.time(), UTC))
    services = build_services(ConfigStore(initial=config), storage, executor, clock=clock, checkpoints=checkpoints)
    bot = ImagineBot(services, guild_ready_timeout=0.05, watch_config=False, drain_timeout_s=0.0)
    async with run_client(fake, bot):
        yield bot


def stores(bot: ImagineBot) -> tuple[ContestStore, PhaseStore]:
    """The feature's tables, read as the bot reads them (for what members cannot see: who made which entry)."""
    clock = bot.services.clock

    def now() -> datetime:
        return datetime.fromtimestamp(clock.time(), UTC)

    return (ContestStore(bot.services.storage, now),
            PhaseStore(bot.services.storage, now, shuffle=lambda entries: None, reveal_parts=reveal_parts))


def phases_of(bot: ImagineBot) -> Any:
    """The running bot's phase loop (``next_pass()`` waits until everything due has been run and posted)."""
    cog = bot.get_cog("Contests")
    assert cog is not None
    return cog.phases  # type: ignore[attr-defined]


# --- what members do ------------------------------------------------------------------------------------
async def start(fake: FakeDiscord, theme: str, *, user: str = "bob", guild: str = "Art Club",
                channel: str = "general", **options: Any) -> StoredMessage:
    """A moderator starts a round; returns the announcement posted in its channel."""
    handle = await fake.slash("contest start", {"theme": theme, "submit": "1h", "vote": "30m", **options},
                              user=user, guild=guild, channel=channel)
    reply = await answer(handle)
    assert reply.ephemeral and reply.content.startswith("✅ Contest #"), reply.content
    return await fake.wait_until(lambda: announcement(fake, theme), what=f"the announcement of {theme!r}")


async def answer(handle: InteractionHandle) -> StoredMessage:
    """A deferred command's private answer (the "thinking" message, once the answer replaced it)."""
    return await handle.wait_original(lambda message: not message.loading)


def announcement(fake: FakeDiscord, theme: str) -> StoredMessage | None:
    return next((m for m in public_messages(fake) if m.content.startswith("🎨 **New prompt contest:**")
                 and theme in m.content), None)


def public_messages(fake: FakeDiscord) -> list[StoredMessage]:
    return [message for message in fake.messages if not message.ephemeral and not message.deleted]


async def enter(fake: FakeDiscord, user: str, prompt: str, *, guild: str = "Art Club", channel: str = "general",
                contest: int | None = None) -> tuple[InteractionHandle, StoredMessage]:
    """``/contest enter``; returns the handle and the private message with the images and their buttons."""
    options: dict[str, Any] = {"prompt": prompt, **({"contest": contest} if contest is not None else {})}
    handle = await fake.slash("contest enter", options, user=user, guild=guild, channel=channel)
    images = await handle.wait_followup(lambda m: bool(m.attachments))
    assert images.ephemeral
    return handle, images


def button_id(message: StoredMessage, label: str) -> str:
    for custom_id in message.custom_ids():
        component = message.find_component(custom_id)
        assert component is not None
        if component.get("label") == label:
            return custom_id
    raise LookupError(f"no button {label!r} on {message.content!r}: {message.components}")


async def click(fake: FakeDiscord, message: StoredMessage, label: str, user: str) -> str:
    """Click a button as ``user``; returns the private answer's text."""
    handle = await fake.click(message, button_id(message, label), user=user)
    reply = await answer(handle)
    assert reply.ephemeral, reply.content
    return reply.content


def gallery_messages(fake: FakeDiscord, contest: Contest) -> list[StoredMessage]:
    assert contest.gallery_channel_id is not None
    return [m for m in public_messages(fake) if m.channel_id == contest.gallery_channel_id]


def entry_message(fake: FakeDiscord, contest: Contest, entry: Entry) -> StoredMessage:
    for message in gallery_messages(fake, contest):
        if message.content.startswith(f"**Entry {entry.number}**"):
            return message
    raise LookupError(f"entry {entry.number} is not in the gallery")


async def vote(fake: FakeDiscord, contest: Contest, entry: Entry, user: str) -> str:
    return await click(fake, entry_message(fake, contest, entry), f"Vote for {entry.number}", user)


async def gallery_of(fake: FakeDiscord, bot: ImagineBot, contest_id: str) -> Contest:
    """Wait until a round's whole gallery is posted (its last message carries My vote); the round as stored."""
    await fake.wait_until(lambda: any(f"contest:myvote:{contest_id}" in m.custom_ids() for m in public_messages(fake)),
                          what=f"the gallery of contest {contest_id}")
    found = await stores(bot)[0].get(contest_id)
    assert found is not None and found.phase == "voting"
    return found


async def results_of(fake: FakeDiscord, theme: str) -> StoredMessage:
    """Wait for a round's results in its channel."""
    return await fake.wait_until(lambda: next(iter(results_message(fake, theme)), None),
                                 what=f"the results of {theme!r}")


def results_message(fake: FakeDiscord, theme: str) -> list[StoredMessage]:
    return [m for m in public_messages(fake) if re.match(r"(🏆|🗳) \*\*Results:\*\*", m.content) and theme in m.content]
