"""The dispatcher on simulated time with a fake executor: batching, cancel, failures, positions,
ETAs, expiry, pause, drain and config reload."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from bot.core.config import GuildConfig, Limits
from bot.core.errors import InternalFailure, JobNotFound, NotPermitted, QueueFull
from bot.core.identity import Requester
from bot.scheduler import Job, JobState, Scheduler
from generation.errors import GenerationFailed
from generation.request import GenerationRequest
from tests.scheduler_helpers import OPEN_LIMITS, Recorder, Rig, make_config, make_job


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    await rig.scheduler.start()
    yield rig
    await rig.scheduler.stop(cancel_running=True)


async def test_compatible_jobs_share_a_batch_up_to_the_image_limit(rig: Rig) -> None:
    jobs = [rig.submit("a", user=1, count=2), rig.submit("b", user=2, count=1),
            rig.submit("odd", user=3, steps=30),  # different compatibility key
            rig.submit("c", user=4, count=2),  # would make 5 images
            rig.submit("d", user=5, count=1)]
    await rig.clock.advance(10)
    assert rig.batches() == [["a", "b", "d"], ["odd"], ["c"]]
    assert all(state is JobState.DONE for state in rig.recorder.finished_states().values())
    assert {job.id: job.batch_size for job in jobs} == {"a": 3, "b": 3, "d": 3, "odd": 1, "c": 1}  # for metrics


async def test_cancel_queued_at_once_and_running_member_alone(rig: Rig) -> None:
    rig.submit("a", user=1)
    rig.submit("b", user=2)
    await rig.clock.advance(0.1)  # a and b run together
    queued = rig.submit("c", user=3, steps=30)
    rig.scheduler.cancel("c", by=Requester(3, guild_id=1))
    assert queued.state is JobState.CANCELLED and rig.scheduler.get("c") is None
    rig.scheduler.cancel("a", by=Requester(1, guild_id=1))
    await rig.clock.advance(5)
    states = rig.recorder.finished_states()
    assert states == {"c": JobState.CANCELLED, "a": JobState.CANCELLED, "b": JobState.DONE}
    assert rig.batches() == [["a", "b"]]  # c never reached the executor


async def test_cancel_permissions() -> None:
    rig = Rig(guilds={1: GuildConfig(moderator_roles=[99])})
    rig.submit("a", user=1)
    rig.submit("b", user=1)
    with pytest.raises(NotPermitted, match="moderator"):
        rig.scheduler.cancel("a", by=Requester(2, guild_id=1))
    with pytest.raises(NotPermitted, match="moderator"):  # a moderator role counts only in its own server
        rig.scheduler.cancel("a", by=Requester(2, guild_id=2, role_ids=frozenset({99}), is_admin=True))
    rig.scheduler.cancel("a", by=Requester(2, guild_id=1, role_ids=frozenset({99})))
    rig.scheduler.cancel("b", by=Requester(3, guild_id=1, is_admin=True))
    with pytest.raises(JobNotFound):
        rig.scheduler.cancel("a", by=Requester(1, guild_id=1))
    assert rig.recorder.finished_states() == {"a": JobState.CANCELLED, "b": JobState.CANCELLED}


async def test_member_failure_and_executor_crash_are_reported_and_dispatch_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    crashes = {"boom"}
    rig = Rig(executor_kwargs={"fail": lambda r: r.prompt == "oom",
                               "crash": lambda batch: any(r.prompt in crashes for r in batch)})
    await rig.scheduler.start()
    ok, oom = rig.submit("ok", user=1), rig.submit("oom", user=2)
    await rig.clock.advance(2)
    boom = rig.submit("boom", user=3)
    await rig.clock.advance(2)
    after = rig.submit("after", user=4)
    await rig.clock.advance(2)
    assert (ok.state, oom.state, boom.state, after.state) == (
        JobState.DONE, JobState.FAILED, JobState.FAILED, JobState.DONE)
    assert isinstance(oom.error, GenerationFailed) and "out of GPU memory" in str(oom.error)
    # A crash's detail is for the log; its requester reads a fixed text with the reference to it.
    assert isinstance(boom.error, InternalFailure)
    assert str(boom.error) == f"This image could not be made (reference `{boom.error.reference}`); please try again."
    assert any(boom.error.reference in record.getMessage() and "The GPU worker failed (RuntimeError)"
               in record.getMessage() for record in caplog.records)
    await rig.clock.run_until_done(rig.scheduler.stop())


async def test_failing_listeners_cannot_break_the_dispatcher(caplog: pytest.LogCaptureFixture) -> None:
    order: list[str] = []

    class Hostile(Recorder):
        def started(self, job: Job) -> None:
            raise RuntimeError("bug in the bot")

        async def finished(self, job: Job) -> None:  # type: ignore[override]
            await asyncio.sleep(0)
            order.append(job.id)
            raise ValueError("async bug")

    rig = Rig(listener=Hostile())
    await rig.scheduler.start()
    for name in ("a", "b", "c"):
        rig.submit(name, user=ord(name), steps=20 + ord(name))  # incompatible: one batch each
    await rig.clock.advance(10)
    await rig.scheduler.flush_notifications()
    assert sorted(order) == ["a", "b", "c"] and len(rig.executor.calls) == 3
    assert "bug in the bot" in caplog.text and "async bug" in caplog.text
    await rig.clock.run_until_done(rig.scheduler.stop())


async def test_progress_reaches_every_member(rig: Rig) -> None:
    rig.submit("a", user=1)
    rig.submit("b", user=2)
    await rig.clock.advance(5)
    assert rig.recorder.kinds("a") == ["queued", "started", "progress", "progress", "finished"]
    assert rig.recorder.kinds("b")[-3:] == ["progress", "progress", "finished"]


async def test_positions_and_etas_are_pushed_as_the_queue_moves() -> None:
    rig = Rig(executor_kwargs={"duration": lambda batch: 3.0 * len(batch)}, initial_seconds_per_cost=1.0,
              eta_smoothing=1.0)
    await rig.scheduler.start()
    jobs = [rig.submit(f"j{i}", user=i, steps=10 + i) for i in range(4)]  # incompatible: one batch each
    assert [rig.recorder.last_position(job.id)[0] for job in jobs] == [1, 2, 3, 4]
    await rig.clock.advance(0)
    assert rig.scheduler.position("j1") == 1 and rig.recorder.last_position("j1")[0] == 1
    await rig.clock.advance(3.5)  # j0 (cost 0.4) took 3 s: 7.5 s per cost unit; j1 runs since t=3
    assert rig.scheduler.seconds_per_cost == pytest.approx(7.5)
    assert rig.recorder.last_position("j2")[0] == 1 and rig.recorder.last_position("j3")[0] == 2
    # j3 starts after what is left of j1 (0.44 x 7.5 - 0.5 s) and j2 (0.48 x 7.5): its own run is not counted
    assert rig.scheduler.eta("j3") == pytest.approx(0.44 * 7.5 - 0.5 + 0.48 * 7.5)
    assert rig.recorder.last_position("j3")[1] == pytest.approx(0.44 * 7.5 + 0.48 * 7.5)
    assert rig.recorder.last_position("j2")[1] == pytest.approx(0.44 * 7.5)
    snapshot = rig.scheduler.snapshot(user_id=3)
    assert [entry.job.id for entry in snapshot.queued] == ["j3"] and snapshot.queued[0].position == 2
    assert [job.id for job in rig.scheduler.snapshot().running] == ["j1"]
    assert rig.scheduler.snapshot().guild_lengths == {1: 2}
    await rig.clock.run_until_done(rig.scheduler.stop())


async def test_jobs_expire_after_max_wait(rig: Rig) -> None:
    rig.store.replace(make_config(max_wait_s=10.0))
    rig.scheduler.pause_guild(2)
    job = make_job(2, 1, job_id="stuck")
    rig.store.replace(make_config(max_wait_s=10.0))
    rig.scheduler.resume_guild(2)
    rig.scheduler.submit(job)
    rig.scheduler.pause_guild(2)
    await rig.clock.advance(9.9)
    assert job.state is JobState.QUEUED and rig.recorder.last_position("stuck") == (None, None)
    await rig.clock.advance(0.2)
    assert job.state is JobState.EXPIRED
    assert str(job.error) == ("This request waited 10 s in the queue, the longest this bot allows, and was dropped; "
                              "please run it again.")


async def test_paused_guild_waits_while_others_run(rig: Rig) -> None:
    rig.scheduler.pause_guild(1)
    rig.store.replace(make_config())
    held = rig.scheduler.submit(make_job(2, 1, job_id="other", prompt="other"))
    await rig.clock.advance(2)
    rig.scheduler.resume_guild(1)
    mine = rig.submit("mine")
    rig.scheduler.pause_guild(1)
    await rig.clock.advance(5)
    assert held.state is JobState.DONE and mine.state is JobState.QUEUED
    assert rig.scheduler.snapshot().paused_guilds == {1}
    rig.scheduler.resume_guild(1)
    await rig.clock.advance(5)
    assert mine.state is JobState.DONE


async def test_drain_finishes_running_and_hands_back_queued_in_fair_order(rig: Rig) -> None:
    running = rig.submit("run", user=1)
    await rig.clock.advance(0.1)
    rig.submit("x1", user=1, steps=11)
    rig.submit("x2", user=1, steps=12)
    rig.submit("y1", guild=2, user=2, steps=13)
    handed = await rig.clock.run_until_done(rig.scheduler.drain())
    assert running.state is JobState.DONE
    assert [job.id for job in handed] == ["y1", "x1", "x2"]  # guild 1 already had "run"
    assert all(job.state is JobState.HANDED_BACK for job in handed)


async def test_drain_finish_queued_and_timeout_interrupts() -> None:
    rig = Rig(executor_kwargs={"duration": lambda batch: 100.0})
    await rig.scheduler.start()
    a, b = rig.submit("a", user=1, steps=11), rig.submit("b", user=2, steps=12)
    handed = await rig.clock.run_until_done(rig.scheduler.drain(timeout_s=30))
    assert [job.id for job in handed] == ["b"] and a.state is JobState.CANCELLED
    assert rig.clock.monotonic() == pytest.approx(30.0)
    rig2 = Rig()
    await rig2.scheduler.start()
    jobs = [rig2.submit(f"j{i}", user=i, steps=10 + i) for i in range(3)]
    assert await rig2.clock.run_until_done(rig2.scheduler.drain(finish_queued=True)) == []
    assert all(job.state is JobState.DONE for job in jobs)
    del b


async def test_a_batch_interrupted_before_its_first_step_ends_and_frees_its_slot() -> None:
    """A shutdown that interrupts a batch the instant it was launched (its task never ran a line): the job still
    ends, as cancelled, and the drain finishes instead of waiting for it forever."""
    rig = Rig(executor_kwargs={"duration": lambda batch: 100.0})
    await rig.scheduler.start()
    job = rig.submit("a", user=1)
    dispatcher = rig.scheduler._dispatcher
    dispatcher._step(rig.clock.monotonic())  # launches the batch; its task has not started yet
    assert job.state is JobState.RUNNING and dispatcher.tasks
    dispatcher.cancel_running()
    await rig.clock.run_until_done(rig.scheduler.drain(timeout_s=0))
    assert rig.recorder.finished_states() == {"a": JobState.CANCELLED}
    assert rig.batches() == []  # it never reached the executor


async def test_light_guild_waits_behind_at_most_the_running_batch(rig: Rig) -> None:
    for i in range(40):
        rig.submit(f"flood{i}", user=i % 4, steps=10 + i % 3)
    await rig.clock.advance(2.5)
    light = rig.submit("light", guild=2, user=1, steps=40)
    started_before = len(rig.executor.calls)
    await rig.clock.advance(1.0)
    assert light.state is not JobState.QUEUED
    assert rig.batches()[started_before] == ["light"]


async def test_concurrency_and_running_caps() -> None:
    limits = OPEN_LIMITS.model_copy(update={"max_running_per_user": 1})
    rig = Rig(limits=limits, concurrency=2)
    running: dict[int, int] = {}
    peaks: list[int] = []

    class Watch(Recorder):
        def started(self, job: Job) -> None:
            running[job.user_id] = running.get(job.user_id, 0) + 1
            peaks.append(running[job.user_id])

        def finished(self, job: Job) -> None:
            if job.started_at is not None:
                running[job.user_id] -= 1

    rig.scheduler = Scheduler(rig.executor, rig.store, clock=rig.clock, listener=Watch())
    await rig.scheduler.start()
    for i in range(6):
        rig.submit(f"u1-{i}", user=1)
    rig.submit("u2", user=2, steps=30)
    await rig.clock.advance(20)
    assert max(peaks) == 1 and rig.executor.peak_active == 2
    assert sum(len(batch) for batch in rig.batches()) == 7
    await rig.clock.run_until_done(rig.scheduler.stop())


async def test_reloaded_limits_apply_to_new_requests() -> None:
    rig = Rig()  # not started: jobs stay queued
    rig.submit("a", user=5)
    rig.submit("b", user=5)
    rig.store.replace(make_config(limits=Limits(max_queued_per_user=2, user_rate=None, guild_rate=None)))
    with pytest.raises(QueueFull, match=r"the limit is 2\)"):
        rig.submit("c", user=5)
    assert [entry.job.id for entry in rig.scheduler.snapshot().queued] == ["a", "b"]  # admitted jobs stay


def names(batch: Sequence[GenerationRequest]) -> list[str]:
    return [request.prompt for request in batch]
