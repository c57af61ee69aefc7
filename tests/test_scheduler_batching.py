"""Natural batching on simulated time: a job that finds the GPU idle starts at once (unless other requests are
on their way in: then it waits for them, within the window), jobs that arrive while a batch runs start together
as soon as it ends, ``batch_window_ms`` only holds a free slot while another batch
runs, and a model's own ``max_batch_images`` caps its batches. Times are the simulated clock's, exact."""

from __future__ import annotations

import pytest

from generation.config import GenerationConfig, ModelConfig
from tests.scheduler_helpers import Rig, make_config


async def test_an_idle_gpu_starts_a_lone_job_at_once_whatever_the_window() -> None:
    rig = Rig(batch_window_ms=5000)  # the longest window the config allows
    await rig.scheduler.start()
    await rig.clock.advance(3.0)  # idle a while
    job = rig.submit("a", user=1)
    await rig.clock.advance(0)  # no simulated time passes
    assert rig.batches() == [["a"]]
    assert job.enqueued_at == job.started_at == 3.0
    await rig.clock.run_until_done(rig.scheduler.stop())


async def test_requests_on_their_way_in_hold_an_idle_gpu_so_a_burst_starts_together() -> None:
    """Eight requests sent at once: the first one stored finds the GPU idle, but the others are still being
    stored, so it waits for them and the burst runs as full batches (4 + 4), not as 1 + 4 + 3."""
    rig = Rig(batch_window_ms=30, executor_kwargs={"max_batch_images": 4, "duration": lambda batch: 2.0})
    await rig.scheduler.start()
    ways_in = [rig.scheduler.arriving() for _ in range(8)]
    for way_in in ways_in:
        way_in.__enter__()
    jobs = []
    for index, way_in in enumerate(ways_in):  # each stored in turn, 1 ms apart
        way_in.__exit__(None, None, None)
        jobs.append(rig.submit(f"r{index}", user=index + 1))
        await rig.clock.advance(0.001)
    await rig.clock.advance(0)
    assert rig.batches() == [["r0", "r1", "r2", "r3"]]
    assert jobs[0].started_at == pytest.approx(0.003)  # as soon as four were in: a full batch waits for nobody
    await rig.clock.advance(2.0)
    assert rig.batches()[1:] == [["r4", "r5", "r6", "r7"]]
    await rig.clock.run_until_done(rig.scheduler.stop())


async def test_a_request_slow_on_its_way_in_holds_an_idle_gpu_no_longer_than_the_window() -> None:
    rig = Rig(batch_window_ms=30)
    await rig.scheduler.start()
    with rig.scheduler.arriving():  # its storage is slow: the first job goes when the window ends
        first = rig.submit("first", user=1)
        await rig.clock.advance(0.029)
        assert rig.batches() == []
        await rig.clock.advance(0.002)
        assert rig.batches() == [["first"]] and first.started_at == pytest.approx(0.030)
    await rig.clock.run_until_done(rig.scheduler.stop())


async def test_jobs_arriving_while_a_batch_runs_start_together_when_it_ends() -> None:
    rig = Rig(batch_window_ms=30, executor_kwargs={"duration": lambda batch: 2.0})
    await rig.scheduler.start()
    first = rig.submit("first", user=1)
    await rig.clock.advance(0.5)
    mates = [rig.submit(name, user=user) for name, user in (("b", 2), ("c", 3))]
    odd = rig.submit("odd", user=4, steps=30)  # another compatibility key
    mates += [rig.submit(name, user=user) for name, user in (("d", 5), ("e", 6), ("f", 7))]
    await rig.clock.advance(1.0)
    assert rig.batches() == [["first"]] and first.started_at == 0.0  # t=1.5: the GPU is busy, they queue
    await rig.clock.advance(0.5)
    # t=2.0: first ends; the next batch starts at that instant with the compatible jobs in fair order, up to
    # the executor's 4 images; the rest keep their turn
    assert rig.batches() == [["first"], ["b", "c", "d", "e"]]
    assert [job.started_at for job in mates[:4]] == [2.0] * 4
    await rig.clock.advance(4.0)
    assert rig.batches()[2:] == [["odd"], ["f"]] and odd.started_at == 4.0 and mates[4].started_at == 6.0
    await rig.clock.run_until_done(rig.scheduler.stop())


async def test_with_concurrency_the_window_holds_a_free_slot_only_while_another_batch_runs() -> None:
    rig = Rig(batch_window_ms=30, concurrency=2, executor_kwargs={"duration": lambda batch: 10.0})
    await rig.scheduler.start()
    a = rig.submit("a", user=1, steps=20)
    await rig.clock.advance(0)
    assert rig.batches() == [["a"]] and a.started_at == 0.0  # nothing ran: no window
    await rig.clock.advance(0.01)
    b = rig.submit("b", user=2)
    await rig.clock.advance(0.02)
    assert rig.batches() == [["a"]]  # a slot is free, but a runs: b waits up to 30 ms for batch-mates
    c = rig.submit("c", user=3)
    await rig.clock.advance(0.05)
    assert rig.batches() == [["a"], ["b", "c"]]
    assert b.started_at == c.started_at == pytest.approx(0.04)  # b queued at 0.01, + 30 ms
    await rig.clock.run_until_done(rig.scheduler.stop())


async def test_with_concurrency_a_full_batch_or_a_zero_window_starts_at_once() -> None:
    rig = Rig(batch_window_ms=1000, concurrency=3, executor_kwargs={"max_batch_images": 2,
                                                                   "duration": lambda batch: 10.0})
    await rig.scheduler.start()
    rig.submit("a", user=1, steps=20)
    await rig.clock.advance(1.0)
    rig.submit("b", user=2)
    rig.submit("c", user=3)
    await rig.clock.advance(0)
    assert rig.batches() == [["a"], ["b", "c"]]  # full: nothing to wait for
    rig.store.replace(make_config(batch_window_ms=0, concurrency=3))
    rig.submit("d", user=4, steps=30)
    await rig.clock.advance(0)
    assert rig.batches()[-1] == ["d"]
    await rig.clock.run_until_done(rig.scheduler.stop())


def capped(tiny_cap: int | None, big_cap: int | None = None) -> GenerationConfig:
    return GenerationConfig(default_model="tiny", models={
        "tiny": ModelConfig(source="builtin:tiny", max_batch_images=tiny_cap),
        "big": ModelConfig(source="builtin:tiny", max_batch_images=big_cap),
    })


async def test_a_models_own_max_batch_images_caps_its_batches() -> None:
    rig = Rig(generation=capped(2), executor_kwargs={"max_batch_images": 4})
    for n in range(1, 5):
        rig.submit(f"t{n}", user=n, model="tiny")
        rig.submit(f"b{n}", user=n, model="big")  # no cap of its own: the executor's 4
    await rig.scheduler.start()
    await rig.clock.advance(20)
    assert sorted(rig.batches()) == [["b1", "b2", "b3", "b4"], ["t1", "t2"], ["t3", "t4"]]
    await rig.clock.run_until_done(rig.scheduler.stop())


async def test_the_batch_cap_is_the_smaller_of_the_executors_and_the_models_and_follows_reloads() -> None:
    rig = Rig(generation=capped(8), executor_kwargs={"max_batch_images": 3})
    for n in range(1, 5):
        rig.submit(f"t{n}", user=n, model="tiny")
    await rig.scheduler.start()
    await rig.clock.advance(10)
    assert rig.batches() == [["t1", "t2", "t3"], ["t4"]]  # the executor's 3, not the model's 8
    rig.store.replace(make_config(generation=capped(1)))
    for n in range(5, 7):
        rig.submit(f"t{n}", user=n, model="tiny")
    await rig.clock.advance(10)
    assert rig.batches()[2:] == [["t5"], ["t6"]]
    await rig.clock.run_until_done(rig.scheduler.stop())


async def test_a_job_above_its_models_cap_still_runs_whole_and_alone() -> None:
    """The scheduler never splits a job (the executor splits a call by its own limit)."""
    rig = Rig(generation=capped(2), executor_kwargs={"max_batch_images": 4})
    big = rig.submit("four", user=1, model="tiny", count=4)
    rig.submit("one", user=2, model="tiny")
    await rig.scheduler.start()
    await rig.clock.advance(10)
    assert rig.batches() == [["four"], ["one"]] and big.images == 4
    await rig.clock.run_until_done(rig.scheduler.stop())
