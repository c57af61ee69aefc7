"""The outbox in process: a post whose record was lost is not posted twice, a posted result is never
overwritten, and a job whose ending cannot be stored still ends on screen."""

from __future__ import annotations

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
        owed = await storage.wait_until(lambda: _owed(storage), what="the delivery record lost, the job owed")
        assert owed and posted.attachments
        job_id = ForgetfulStorage.lost[0]
    first_content = fake.message(posted.id).content
    async with running_bot(fake, tmp_path, config) as again:  # a restart: the outbox posts what is owed
        storage = again.services.storage
        assert isinstance(storage, WatchedStorage)
        record = await storage.wait_until(lambda: _delivered(storage, job_id), what="the owed result delivered")
    results = [m for m in public(fake) if is_result(m) and "quiet harbour" in m.content]
    assert [m.id for m in results] == [posted.id] and record.result_message_id == posted.id  # Discord's nonce
    assert fake.message(posted.id).content == first_content and fake.message(posted.id).attachments
    assert fake.message(status.id).content == "✅ Done — the result is posted below."


async def _owed(storage: WatchedStorage) -> bool:
    if not ForgetfulStorage.lost:
        return False
    job = await storage.get_job(ForgetfulStorage.lost[0])
    return job is not None and job.status == "done" and job.delivery == "owed"


async def _delivered(storage: WatchedStorage, job_id: str) -> Any:
    job = await storage.get_job(job_id)
    return job if job is not None and job.delivery == "delivered" else None


class FullDiskStorage(WatchedStorage):
    """Real storage on a disk that filled up while the job ran: nothing about its end can be written."""

    async def save_result_images(self, job_id: str, pngs: Any, seeds: Any) -> Any:
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
    assert ended.content == "❌ This image could not be made. the result could not be saved; please try again"
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
