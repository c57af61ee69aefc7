"""A model's own ``max_batch_images`` caps its batches, next to the executor's limit."""

from __future__ import annotations

from generation.config import GenerationConfig, ModelConfig
from tests.scheduler_helpers import Rig, make_config


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
