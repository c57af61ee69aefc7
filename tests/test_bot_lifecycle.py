"""Jobs over time: an expired interaction token, admission refusals, and a restart with queued jobs."""

from __future__ import annotations

from pathlib import Path

from bot.core.config import Bucket, Limits, SchedulerConfig
from tests.bot_harness import (
    UNLIMITED,
    GateExecutor,
    WatchedStorage,
    decode,
    is_result,
    public,
    running_bot,
    tiny_app_config,
    tiny_model,
)
from tests.fake_discord import FakeDiscord
from tests.frozen_clock import FrozenClock


async def test_expired_token_posts_the_result_to_the_channel_for_the_requester(fake: FakeDiscord, clock: FrozenClock,
                                                                              tmp_path: Path) -> None:
    """README: "after 15 minutes, or when Discord rejects the token, the result is posted to the channel
    with the bot token, pinging only the requester"."""
    gpu = GateExecutor()
    alice = fake.user("alice")
    patient = SchedulerConfig(batch_window_ms=0, position_update_s=0, max_wait_s=3600)  # waits past 15 min
    async with running_bot(fake, tmp_path, tiny_app_config(fake, scheduler=patient), executor=gpu):
        busy = await fake.slash("imagine", {"prompt": "a long job"}, user="bob")
        await busy.wait_original(lambda m: "Starting" in m.content)
        late = await fake.slash("imagine", {"prompt": "a patient fox"}, user="alice")
        status = await late.wait_original(lambda m: "Queued" in m.content)
        await clock.advance(15 * 60 + 1)  # 15 minutes in the queue: the fake and the bot both see them pass
        gpu.gate.set()
        posted = await fake.wait_until(
            lambda: next((m for m in public(fake) if is_result(m) and "patient fox" in m.content), None),
            what="the result in the channel")
        assert posted.id != status.id and posted.interaction_id is None  # a new message, sent with the bot token
        assert posted.allowed_mentions == {"parse": [], "users": [alice.id]}  # pings the requester alone
        assert f"<@{alice.id}>" in posted.content and decode(posted).size == (64, 64)
        # The old status message no longer offers to cancel a job that is done.
        done = await fake.wait_until(lambda: fake.message(status.id) if "Done" in fake.message(status.id).content
                                     else None, what="the status message to say done")
        assert done.components == []


async def test_refusals_name_the_limit_and_when_to_retry(fake: FakeDiscord, tmp_path: Path) -> None:
    limits = UNLIMITED.model_copy(update={
        "user_rate": Bucket(amount=2, window_s=3600, burst=2), "max_queued_per_user": 1})
    gpu = GateExecutor()
    async with running_bot(fake, tmp_path, tiny_app_config(fake, limits=Limits(**dict(limits))), executor=gpu):
        first = await fake.slash("imagine", {"prompt": "one"}, user="alice")
        await first.wait_original(lambda m: "Starting" in m.content)
        second = await fake.slash("imagine", {"prompt": "two"}, user="alice")
        await second.wait_original(lambda m: "Queued" in m.content)

        full = await fake.slash("imagine", {"prompt": "three"}, user="alice")
        reply = await full.wait_original()
        assert reply.ephemeral
        assert reply.content == ("⏳ You already have 1 request waiting (the limit is 1); try again when one of "
                                 "them starts.")

        gpu.gate.set()
        await first.wait_original(is_result)
        await second.wait_original(is_result)
        limited = await fake.slash("imagine", {"prompt": "four"}, user="alice")
        reply = await limited.wait_original()
        assert reply.ephemeral and reply.content == "⏳ You can make 2 requests an hour; try again in 30 min."
    assert not any(word in m.content for m in public(fake) for word in ("three", "four"))


async def test_restart_resumes_queued_jobs_and_explains_dropped_ones(fake: FakeDiscord, tmp_path: Path,
                                                                     database_url: str) -> None:
    """On SQLite and on PostgreSQL (``database_url``): what a restart resumes comes from storage."""
    before = tiny_app_config(fake, models={"tiny": tiny_model(), "retired": tiny_model()})
    gpu = GateExecutor()
    async with running_bot(fake, tmp_path, before, executor=gpu, drain_timeout_s=0, database_url=database_url) as bot:
        running = await fake.slash("imagine", {"prompt": "a running fox --seed 1"}, user="alice")
        await running.wait_original(lambda m: "Starting" in m.content)
        queued = await fake.slash("imagine", {"prompt": "a queued owl --seed 2"}, user="carol")
        await queued.wait_original(lambda m: "Queued" in m.content)
        retired = await fake.slash("imagine", {"prompt": "a retired cat", "model": "retired"}, user="alice")
        await retired.wait_original(lambda m: "Queued" in m.content)
        # The cog records each status message just after posting it; shut down only once it has.
        storage = bot.services.storage
        assert isinstance(storage, WatchedStorage)

        async def all_three_shown() -> bool:
            active = await storage.jobs_in_states(["queued", "running"])
            return len(active) == 3 and all(job.status_message_id for job in active)

        await storage.wait_until(all_three_shown, what="three active jobs with their status messages recorded")
    # Leaving the block shut bot A down: the running job was interrupted, the queued ones kept.
    assert "Interrupted by a bot restart" in running.original.content  # type: ignore[union-attr]
    # A queued job's position means nothing while the bot is down; it says so instead.
    assert "Interrupted by a bot restart" in queued.original.content  # type: ignore[union-attr]

    # Bot B: real tiny model, "retired" removed.
    async with running_bot(fake, tmp_path, tiny_app_config(fake), database_url=database_url):
        for handle, seed in ((running, 1), (queued, 2)):
            result = await handle.wait_original(is_result)  # the same status message, edited to the result
            assert f"Seed {seed} ·" in result.content and decode(result).size == (64, 64)
        dropped = await retired.wait_original(lambda m: "dropped" in m.content)
        assert dropped.content == ("❌ This request was dropped when the bot restarted: it no longer fits this bot's "
                                   "settings (model 'retired' is not available; allowed: tiny).")
        assert dropped.components == []
    assert len(gpu.batches) == 1  # bot A only ever started the first job


async def test_a_job_stored_but_never_shown_is_not_run_after_a_restart(fake: FakeDiscord, tmp_path: Path,
                                                                       database_url: str) -> None:
    from bot.storage import Storage
    from generation.request import GenerationRequest, validate

    config = tiny_app_config(fake)
    name, model = config.generation.model(None)
    storage = Storage(tmp_path, database_url)
    await storage.open()
    ghost = await storage.create_job(validate(GenerationRequest("a ghost", seed=1), name, model), user_id=1)
    await storage.close()  # the bot stopped between storing the job and posting its status message
    gpu = GateExecutor()
    async with running_bot(fake, tmp_path, config, executor=gpu, database_url=database_url) as bot:
        [dropped] = await bot.services.storage.jobs_in_states(["dropped"])
        assert dropped.id == ghost.id and "not been shown" in (dropped.error or "")
        assert bot.services.scheduler.snapshot().total_queued == 0 and gpu.batches == []
