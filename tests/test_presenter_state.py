"""The presenter keeps state per job only while the job lives: every way a job can end (shown, parked
for a status message that never comes, withdrawn, interrupted, a late attach, a failure while showing)
leaves nothing behind. Real storage; a Discord stand-in that refuses every edit, so each attempt to
show something fails as it would during an outage (and the job stays owed to the outbox)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bot.core.config_store import ConfigStore
from bot.discord_ui.presenter import DiscordPresenter, StatusTarget
from bot.storage import JobRecord, JobStatus, Storage
from generation.request import GenerationRequest, ProgressEvent
from tests.bot_harness import UNLIMITED, GateExecutor, WatchedStorage, is_result, make_bot, run_client, tiny_app_config
from tests.fake_discord import FakeDiscord
from tests.frozen_clock import FrozenClock


class DiscordDown:
    """A client whose every message edit or post answers 503."""

    def __getattr__(self, name: str) -> Any:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self

    async def edit(self, **kwargs: Any) -> None:
        raise discord.HTTPException(SimpleNamespace(status=503, reason="Service Unavailable"), "down")

    send = edit


class NoViews:
    def status_view(self, job_id: str) -> None:
        return None

    def result_view(self, job_id: str, count: int) -> None:
        return None


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with Storage(tmp_path) as opened:
        yield opened


@pytest.fixture
def presenter(storage: Storage) -> DiscordPresenter:
    return DiscordPresenter(DiscordDown(), storage, NoViews(), progress_interval_s=0)


async def ended(storage: Storage, status: JobStatus = "cancelled", *, message_id: int | None = None) -> JobRecord:
    job = await storage.create_job(GenerationRequest("a fox"), user_id=1, guild_id=5, channel_id=6)
    if message_id is not None:
        await storage.set_messages(job.id, status_message_id=message_id)
    return await storage.update_status(job.id, status, error="stopped")


TARGET = StatusTarget(user_id=1, channel_id=6, interaction=None, message_id=77)


async def test_an_end_parked_for_a_status_message_goes_when_the_cog_gives_up(storage: Storage,
                                                                             presenter: DiscordPresenter) -> None:
    job = await ended(storage)
    await presenter.finished(job, None)
    assert presenter.is_live(job.id)  # waiting for the cog to attach its status message...
    await presenter.withdrawn(job.id)  # ...which it could not post
    assert presenter.live_jobs == 0
    assert (await storage.require_job(job.id)).delivery == "delivered"  # the cog's error reply was its end


async def test_a_withdrawn_job_goes_when_it_ends(storage: Storage, presenter: DiscordPresenter) -> None:
    job = await ended(storage)
    await presenter.withdrawn(job.id)
    await presenter.finished(job, None)
    assert presenter.live_jobs == 0


async def test_an_end_shown_through_storage_ignores_a_late_attach(storage: Storage,
                                                                 presenter: DiscordPresenter) -> None:
    job = await ended(storage, message_id=77)  # its status message was recorded, not yet attached
    await presenter.finished(job, None)  # found through storage; the edit fails, the outbox will retry
    assert not presenter.is_live(job.id)
    assert (await storage.require_job(job.id)).delivery_attempts == 1
    await presenter.attach(job.id, TARGET)  # the cog, a moment late
    await presenter.withdrawn(job.id)
    assert presenter.live_jobs == 0


async def test_held_progress_and_a_parked_end_go_once_attached(storage: Storage, presenter: DiscordPresenter) -> None:
    job = await ended(storage)
    await presenter.progress(job.id, ProgressEvent(1, 4))
    await presenter.finished(job, None)
    await presenter.attach(job.id, TARGET)
    assert presenter.live_jobs == 0


async def test_an_interrupted_job_goes(storage: Storage, presenter: DiscordPresenter) -> None:
    job = await storage.create_job(GenerationRequest("a fox"), user_id=1, guild_id=5, channel_id=6)
    await presenter.attach(job.id, TARGET)
    await presenter.interrupted(job.id)  # shutdown: it resumes after the restart, shown from storage then
    assert presenter.live_jobs == 0


class BrokenStorage(Storage):
    broken = False

    async def get_job(self, job_id: str) -> JobRecord | None:
        if self.broken:
            raise OSError(5, "Input/output error")
        return await super().get_job(job_id)


async def test_a_failure_while_showing_an_end_leaves_it_to_the_outbox(tmp_path: Path) -> None:
    async with BrokenStorage(tmp_path) as storage:
        presenter = DiscordPresenter(DiscordDown(), storage, NoViews())
        job = await ended(storage)
        storage.broken = True
        with pytest.raises(OSError):
            await presenter.finished(job, None)
        assert presenter.live_jobs == 0  # not live: the outbox may show it


async def test_the_bot_keeps_no_state_for_jobs_that_ended(fake: FakeDiscord, clock: FrozenClock,
                                                          tmp_path: Path) -> None:
    """Done, cancelled while queued, refused and deleted jobs, through Discord: nothing is kept."""
    config = tiny_app_config(fake, limits=UNLIMITED.model_copy(update={"max_queued_per_user": 1}))
    gpu = GateExecutor()
    bot = make_bot(ConfigStore(initial=config), WatchedStorage(tmp_path), gpu, clock=clock)
    async with run_client(fake, bot):
        presenter = bot.get_cog("Imagine").presenter
        running = await fake.slash("imagine", {"prompt": "a running fox"}, user="alice")
        await running.wait_original()
        queued = await fake.slash("imagine", {"prompt": "a queued fox"}, user="alice")
        status = await queued.wait_original(lambda m: m.content.startswith("Queued"))
        refused = await (await fake.slash("imagine", {"prompt": "one too many"}, user="alice")).wait_original()
        assert refused.ephemeral and refused.content.startswith("⏳ You already have 1 request waiting")
        cancel = await fake.click(status, next(c for c in status.custom_ids() if ":cancel:" in c), user="alice")
        await cancel.wait_original()
        gpu.gate.set()
        result = await running.wait_original(is_result)
        await bot.services.scheduler.flush_notifications()
        delete = await fake.click(result, next(c for c in result.custom_ids() if ":delete:" in c), user="alice")
        await delete.wait_original()
        await bot.services.scheduler.flush_notifications()
        assert presenter.live_jobs == 0
