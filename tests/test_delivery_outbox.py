"""The outbox in process: a post whose record was lost is not posted twice, a posted result is never
overwritten, and a job whose ending cannot be stored still ends on screen."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

from bot.core.config import SchedulerConfig
from generation.request import GenerationRequest
from tests.bot_harness import GateExecutor, WatchedStorage, is_result, public, running_bot, tiny_app_config
from tests.fake_discord import FakeDiscord
from tests.frozen_clock import FrozenClock

PATIENT = SchedulerConfig(batch_window_ms=0, position_update_s=0, max_wait_s=3600)


class ForgetfulStorage(WatchedStorage):
    """Real storage that loses the first record of a delivery, as a kill right after the post would."""

    lost: ClassVar[list[str]] = []

    async def record_delivery(self, job_id: str, **kwargs: Any) -> Any:
        if not ForgetfulStorage.lost:
            ForgetfulStorage.lost.append(job_id)
            await self._notify()  # wake the test, which waits for this loss
            raise OSError(5, "Input/output error")
        return await super().record_delivery(job_id, **kwargs)


async def test_a_channel_post_whose_record_was_lost_is_not_posted_twice(fake: FakeDiscord, clock: FrozenClock,
                                                                        tmp_path: Path) -> None:
    """Issue: "Where a new message is needed, use the job's id as the message nonce, with enforce_nonce, so
    a retry can never post twice"; "A posted result is never overwritten"."""
    ForgetfulStorage.lost.clear()
    config = tiny_app_config(fake, scheduler=PATIENT)
    gpu = GateExecutor()
    async with running_bot(fake, tmp_path, config, executor=gpu, storage_class=ForgetfulStorage) as bot:
        handle = await fake.slash("imagine", {"prompt": "a quiet harbour"}, user="alice")
        status = await handle.wait_original(lambda m: m.content.startswith("Starting"))
        await clock.advance(15 * 60 + 1)  # the token is dead: the result goes to the channel as a new message
        gpu.gate.set()
        posted = await fake.wait_until(
            lambda: next((m for m in public(fake) if is_result(m) and "quiet harbour" in m.content), None),
            what="the result posted to the channel")
        storage = bot.services.storage
        assert isinstance(storage, WatchedStorage)
        await storage.wait_until(_lost, what="the delivery record lost")
        assert posted.attachments
        job_id = ForgetfulStorage.lost[0]
    first_content = fake.message(posted.id).content
    # The job stayed owed. Its retry comes from this bot's outbox (whenever it woke after the loss) or from
    # the restart's; either way it posts again with the same nonce, and only then is it recorded delivered.
    async with running_bot(fake, tmp_path, config) as again:
        storage = again.services.storage
        assert isinstance(storage, WatchedStorage)
        record = await storage.wait_until(lambda: _delivered(storage, job_id), what="the owed result delivered")
    results = [m for m in public(fake) if is_result(m) and "quiet harbour" in m.content]
    assert [m.id for m in results] == [posted.id] and record.result_message_id == posted.id  # Discord's nonce
    assert fake.message(posted.id).content == first_content and fake.message(posted.id).attachments
    assert fake.message(status.id).content == "✅ Done — the result is posted below."


async def _lost() -> bool:
    return bool(ForgetfulStorage.lost)


async def _delivered(storage: WatchedStorage, job_id: str) -> Any:
    job = await storage.get_job(job_id)
    return job if job is not None and job.delivery == "delivered" else None


class FullDiskStorage(WatchedStorage):
    """Real storage on a disk that filled up while the job ran: nothing about its end can be written."""

    async def save_result_images(self, job_id: str, pngs: Any, seeds: Any) -> Any:
        raise OSError(28, "No space left on device")

    async def store_result(self, job_id: str, pngs: Any, seeds: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    async def update_status(self, job_id: str, status: Any, **kwargs: Any) -> Any:
        if status in ("done", "failed"):
            raise OSError(28, "No space left on device")
        return await super().update_status(job_id, status, **kwargs)


async def test_an_ending_that_cannot_be_stored_is_still_shown(fake: FakeDiscord, tmp_path: Path) -> None:
    """Issue: "The presenter is told of a failure even when the database write failed"."""
    async with running_bot(fake, tmp_path, storage_class=FullDiskStorage):
        handle = await fake.slash("imagine", {"prompt": "a full disk"}, user="alice")
        ended = await handle.wait_original(lambda m: m.content.startswith("❌"))
    assert ended.content == "❌ This image could not be made: the result could not be saved; please try again."
    assert ended.components == [] and not any(is_result(m) for m in public(fake))


async def test_an_ending_whose_channel_is_gone_is_told_to_the_owner_directly(fake: FakeDiscord,
                                                                            tmp_path: Path) -> None:
    """Issue: "when the channel is gone, the owner is told (DM or channel) and the job is marked
    undeliverable. It is never silent." A job that ended while the bot was down, in a channel deleted since."""
    alice = fake.user("alice")
    storage = WatchedStorage(tmp_path)
    async with storage:
        job = await storage.create_job(GenerationRequest("a vanished room", seed=1), user_id=alice.id,
                                       guild_id=fake.guild().id, channel_id=424242)  # no such channel any more
        await storage.update_status(job.id, "running")
        await storage.update_status(job.id, "failed", error="The GPU ran out of memory.")
    async with running_bot(fake, tmp_path) as bot:
        told = await fake.wait_until(
            lambda: next((m for m in fake.messages if m.channel_id != 424242 and "a vanished room" in m.content
                          and "could not post" in m.content), None), what="the owner told directly")
        restarted = bot.services.storage
        assert isinstance(restarted, WatchedStorage)
        record = await restarted.wait_until(lambda: _undeliverable(restarted, job.id), what="the job undeliverable")
    assert fake.state.channel(told.channel_id).type == 1  # a direct message (type 1) to alice
    assert record.delivery_attempts == 1
    assert any("424242" in failure for failure in fake.pop_failures())  # the post to the deleted channel


async def _undeliverable(storage: WatchedStorage, job_id: str) -> Any:
    job = await storage.get_job(job_id)
    return job if job is not None and job.delivery == "undeliverable" else None


class SlowStorage(WatchedStorage):
    """Real storage where a test can hold the recording of a status message, and hold the outbox between
    its read of owed jobs and its deliveries (as a slow pass over many owed jobs would)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages_gate, self.outbox_gate = asyncio.Event(), asyncio.Event()
        self.hold_outbox = False
        self.outbox_read: list[Any] = []
        self.outbox_passes = 0

    async def set_messages(self, *args: Any, **kwargs: Any) -> Any:
        await self.messages_gate.wait()
        return await super().set_messages(*args, **kwargs)

    async def owed_deliveries(self, *args: Any, **kwargs: Any) -> Any:
        owed = await super().owed_deliveries(*args, **kwargs)
        if self.hold_outbox and owed:
            self.outbox_read = owed
            await self._notify()
            await self.outbox_gate.wait()
        return owed

    async def next_delivery_due(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().next_delivery_due(*args, **kwargs)
        finally:
            self.outbox_passes += 1  # the outbox's last call of a pass
            await self._notify()


async def test_an_end_shown_live_is_not_posted_again_from_a_stale_read(fake: FakeDiscord, clock: FrozenClock,
                                                                       tmp_path: Path) -> None:
    """A job that ends before its status message is recorded is owed, with no message, for a moment. An
    outbox pass that read it then, and reached it only after the live delivery, must not post it again."""
    config = tiny_app_config(fake, scheduler=PATIENT)
    gpu = GateExecutor()
    gpu.gate.set()
    async with running_bot(fake, tmp_path, config, executor=gpu, storage_class=SlowStorage) as bot:
        storage = bot.services.storage
        assert isinstance(storage, SlowStorage)
        await storage.wait_until(_passes(storage, 1), what="the outbox's start-up pass")
        handle = await fake.slash("imagine", {"prompt": "a paper boat"}, user="alice")
        job = await storage.wait_until(lambda: _ended_unseen(storage), what="the job done before its message")
        storage.hold_outbox = True
        await clock.advance(300)  # the outbox's idle look: it reads the job as owed, with no status message
        await storage.wait_until(_read(storage), what="the outbox's read of the owed job")
        storage.messages_gate.set()  # the status message is recorded: the end is shown live, on it
        shown = await handle.wait_original(is_result)
        await storage.wait_until(lambda: _delivered(storage, job.id), what="the live delivery recorded")
        passes = storage.outbox_passes
        storage.outbox_gate.set()  # the outbox goes on with what it read before
        await storage.wait_until(_passes(storage, passes + 1), what="the outbox's pass to end")
    results = [m for m in public(fake) if is_result(m) and "a paper boat" in m.content]
    assert [m.id for m in results] == [shown.id]


def _passes(storage: SlowStorage, count: int) -> Any:
    async def reached() -> bool:
        return storage.outbox_passes >= count
    return reached


def _read(storage: SlowStorage) -> Any:
    async def read() -> bool:
        return bool(storage.outbox_read)
    return read


async def _ended_unseen(storage: SlowStorage) -> Any:
    jobs = await storage.jobs_in_states(["done"])
    return next((job for job in jobs if job.status_message_id is None and job.delivery == "owed"), None)
