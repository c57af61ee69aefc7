"""The scheduler over a pool of workers (``generation.interface.Pooled``), on simulated time: as many batches in
flight as live workers, new requests refused while the pool's queue is out of reach, and fairness across the
whole pool: a light server waits behind at most one more batch of a server that floods the queue."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.core.config_store import ConfigStore
from bot.core.errors import WorkersUnreachable
from bot.scheduler import Job, JobState, Scheduler, SimulatedClock
from bot.scheduler.scheduler import WORKERS_UNREACHABLE_TEXT
from tests.scheduler_helpers import FakePool, Recorder, make_config, make_job


class PoolRig:
    def __init__(self, workers: int) -> None:
        self.clock = SimulatedClock()
        self.pool = FakePool(self.clock, workers=workers, max_batch_images=1, duration=lambda batch: 10.0)
        self.recorder = Recorder()
        self.scheduler = Scheduler(self.pool, ConfigStore(initial=make_config()), clock=self.clock,
                                   listener=self.recorder)

    def submit(self, name: str, guild: int = 1, user: int = 10) -> Job:
        return self.scheduler.submit(make_job(guild, user, job_id=name, prompt=name))

    def started(self) -> list[str]:
        return [job_id for kind, job_id, _ in self.recorder.events if kind == "started"]


@pytest.fixture
async def rig() -> AsyncIterator[PoolRig]:
    made = PoolRig(workers=2)
    await made.scheduler.start()
    yield made
    await made.scheduler.stop(cancel_running=True)


async def test_as_many_batches_run_as_there_are_live_workers(rig: PoolRig) -> None:
    assert rig.pool.started  # the scheduler started the pool's watch
    for number in range(5):
        rig.submit(f"job {number}", user=number)
    await rig.clock.advance(1)
    assert rig.pool.active == 2
    rig.pool.set(workers=0)  # both gone: the running batches are the executor's to move; nothing new starts
    await rig.clock.advance(10)
    assert rig.started() == ["job 0", "job 1"] and rig.pool.active == 0
    rig.pool.set(workers=3)  # a worker joining wakes the dispatcher
    await rig.clock.advance(1)
    assert rig.pool.active == 3 and rig.pool.peak_active == 3
    await rig.clock.advance(30)
    assert set(rig.recorder.finished_states().values()) == {JobState.DONE}


async def test_while_the_pool_is_out_of_reach_new_requests_are_refused_and_queued_ones_wait(rig: PoolRig) -> None:
    rig.pool.set(workers=0)
    rig.submit("queued before")
    rig.pool.set(workers=0, unavailable="Redis cannot be reached (Connection refused)")
    with pytest.raises(WorkersUnreachable) as refused:
        rig.submit("refused", user=11)
    assert str(refused.value) == WORKERS_UNREACHABLE_TEXT and refused.value.retry_after
    assert "Redis" not in str(refused.value)  # the reason is for the log: on .value, never in the member's text
    with pytest.raises(WorkersUnreachable):
        rig.scheduler.check(make_job(1, 12))  # the dry run agrees, so nothing is downloaded for it
    await rig.clock.advance(60)
    assert rig.scheduler.get("queued before") is not None and rig.started() == []
    rig.pool.set(workers=1)  # reachable again, a worker back: it recovers by itself
    rig.submit("after", user=13)
    await rig.clock.advance(60)
    assert rig.recorder.finished_states() == {"refused": JobState.REFUSED, "queued before": JobState.DONE,
                                              "after": JobState.DONE}


async def test_a_light_server_waits_behind_at_most_one_more_batch_of_a_flooding_server(rig: PoolRig) -> None:
    for number in range(10):
        rig.submit(f"flood {number}", guild=1, user=number % 3)
    await rig.clock.advance(1)
    rig.submit("light", guild=2, user=99)
    await rig.clock.advance(200)
    order = rig.started()
    # Two flood batches were running when it came; one more slot frees first and the light job takes it.
    assert order.index("light") == 2, order
