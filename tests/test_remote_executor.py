"""The remote executor and GPU workers over a real Redis, in one process: the tiny model at 64x64.

Each worker here is the real ``GpuWorker`` with its own ``Runner`` (and its own thread), serving its own SAQ
queue in the test's Redis namespace; the bot's side is the real ``RemoteExecutor``. What the bot gets back must
be what a local executor gives: the same images for the same seeds. Worker deaths and Redis restarts are in
``test_cluster_processes.py``, with real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import ImageChops
from saq.queue.redis import RedisQueue

from generation.config import ExecutorConfig, GenerationConfig, ModelConfig
from generation.errors import FixableFailure, GenerationCancelled, ModelLoadError, OutOfMemory
from generation.executor import GpuExecutor
from generation.interface import CancelToken, Pooled, PreparesModels
from generation.remote.dispatch import NO_WORKER_TEXT
from generation.remote.executor import RemoteExecutor
from generation.remote.keys import Keys, connect
from generation.remote.wire import WorkerInfo, dumps, worker_to_json
from generation.remote.worker import GpuWorker, WorkerSettings, with_models
from generation.request import GenerationRequest, GenerationResult, ProgressEvent, validate
from generation.runner import PipelineCall, Runner
from tests.bot_harness import WAIT_S, tiny_model
from tests.redis_backend import OwnRedis

HEARTBEAT_S = 0.5
_log = logging.getLogger(__name__)


def cluster_config(redis_url: str, namespace: str, **models: ModelConfig) -> GenerationConfig:
    return GenerationConfig(
        default_model="tiny", models={"tiny": tiny_model(max_steps=200), **models},
        executor=ExecutorConfig(device="cpu", preview_every_steps=1, max_batch_images=4, mode="redis",
                                redis_url=redis_url, redis_namespace=namespace, heartbeat_s=HEARTBEAT_S))


@dataclass
class Worker:
    worker: GpuWorker
    task: asyncio.Task[None]
    runner: Runner

    async def stop(self) -> None:
        self.worker.drain()
        await asyncio.wait_for(self.task, WAIT_S)


class Cluster:
    """In-process workers on the test's namespace, and the bot's executor for them."""

    def __init__(self, config: GenerationConfig) -> None:
        self.config = config
        self.workers: list[Worker] = []
        self.executor = RemoteExecutor.from_config(config)

    async def add(self, *models: str, fault_hook: Callable[[PipelineCall], None] | None = None,
                  config: GenerationConfig | None = None) -> Worker:
        config = config or self.config
        runner = Runner(config, fault_hook=fault_hook)
        assert config.executor.redis_url is not None
        settings = with_models(WorkerSettings.from_config(config), config, models)
        worker = GpuWorker(GpuExecutor(runner, name="cpu"), config, settings, device="cpu",
                           loaded_models=runner.loaded_models)
        task = asyncio.create_task(worker.serve(connect(config.executor.redis_url), signals=False))
        handle = Worker(worker, task, runner)
        self.workers.append(handle)
        await self.wait(lambda: any(info.id == worker.id for info in self.executor.pool.workers()), "the worker")
        return handle

    async def wait(self, predicate: Callable[[], object], what: str) -> None:
        await self.executor.start()
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                await self.executor.pool.changed()

    async def close(self) -> None:
        """Drain every worker at once; one still running after WAIT_S / 2 is stopped outright, with a warning, so
        that a teardown never outlasts the test's own timeout (drain itself is tested on its own)."""
        running = [worker for worker in self.workers if not worker.task.done()]
        for worker in running:
            worker.worker.drain()
        if running:
            _, late = await asyncio.wait({worker.task for worker in running}, timeout=WAIT_S / 2)
            for task in late:
                _log.warning("an in-process test worker did not finish draining; stopping it")
                task.cancel()
            await asyncio.gather(*(worker.task for worker in running), return_exceptions=True)
        await self.executor.close()


@pytest.fixture
async def cluster(redis_url: str, redis_namespace: str) -> AsyncIterator[Cluster]:
    made = Cluster(cluster_config(redis_url, redis_namespace))
    try:
        yield made
    finally:
        await made.close()


def request(config: GenerationConfig, prompt: str = "a fox", **fields: Any) -> GenerationRequest:
    name, model = config.model(fields.pop("model", None))
    return validate(GenerationRequest(prompt, **{"seed": 7, **fields}), name, model)


def same_pixels(a: GenerationResult, b: GenerationResult) -> bool:
    return all(ImageChops.difference(x, y).getbbox() is None for x, y in zip(a.images, b.images, strict=True))


async def test_a_batch_comes_back_as_the_local_runner_makes_it(cluster: Cluster) -> None:
    await cluster.add()
    batch = [request(cluster.config, "a fox", seed=3, count=2), request(cluster.config, "an owl", seed=9)]
    events: list[ProgressEvent] = []
    remote = await cluster.executor.run(batch, events.append)
    local_gpu = GpuExecutor(Runner(cluster.config))
    try:
        local = await local_gpu.run(batch)
    finally:
        await local_gpu.close()
    assert all(isinstance(outcome, GenerationResult) for outcome in remote + local)
    assert [o.seeds for o in remote] == [[3, 4], [9]]  # type: ignore[union-attr]
    assert all(same_pixels(mine, theirs) for mine, theirs in zip(remote, local, strict=True))  # type: ignore[arg-type]
    assert [event.step for event in events][-1] == 2 and any(len(event.previews) == 2 for event in events)
    assert isinstance(cluster.executor, Pooled) and isinstance(cluster.executor, PreparesModels)


async def test_the_warm_up_reads_the_workers_measured_speed(cluster: Cluster) -> None:
    await cluster.add()
    warmed = await asyncio.wait_for(cluster.executor.prepare(None), WAIT_S)
    assert warmed.model == "tiny" and warmed.seconds_per_cost > 0


async def test_the_warm_up_has_a_worker_load_a_model_none_has_loaded(redis_url: str, redis_namespace: str) -> None:
    config = cluster_config(redis_url, redis_namespace, other=tiny_model(), broken=tiny_model(source="/no/such/dir"))
    made = Cluster(config)
    try:
        worker = await made.add()  # it loads the default model at start, and any other when asked
        warmed = await asyncio.wait_for(made.executor.prepare("other"), WAIT_S)
        assert warmed.model == "other" and "other" in worker.worker.info().loaded
        with pytest.raises(ModelLoadError, match="broken"):
            await asyncio.wait_for(made.executor.prepare("broken"), WAIT_S)
    finally:
        await made.close()


async def test_large_results_go_through_the_shared_folder_and_the_bot_takes_them(redis_url: str,
                                                                                 redis_namespace: str,
                                                                                 tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    config = cluster_config(redis_url, redis_namespace)
    executor = config.executor.model_copy(update={"shared_dir": str(shared), "inline_result_bytes": 1024})
    config = config.model_copy(update={"executor": executor})
    made = Cluster(config)
    try:
        await made.add()
        outcome = (await made.executor.run([request(config, count=2)]))[0]
        assert isinstance(outcome, GenerationResult) and len(outcome.images) == 2
        assert list(shared.iterdir()) == []  # taken: nothing is left for the worker's clean-up
    finally:
        await made.close()


async def test_a_worker_waits_out_a_redis_outage_and_serves_again(own_redis: OwnRedis, redis_namespace: str) -> None:
    await own_redis.start()
    made = Cluster(cluster_config(own_redis.url, redis_namespace))
    try:
        await made.add()
        await own_redis.stop()
        await made.wait(lambda: made.executor.unavailable is not None, "the outage to show")
        assert made.executor.slots == 0
        await asyncio.sleep(HEARTBEAT_S * 2)  # the worker meets the outage too (its dequeue, its heartbeat)
        await own_redis.start()
        await made.wait(lambda: made.executor.slots == 1, "the worker to come back")
        assert isinstance((await made.executor.run([request(made.config)]))[0], GenerationResult)
    finally:
        await made.close()


async def test_a_member_cancelled_before_its_batch_starts_is_never_run(cluster: Cluster) -> None:
    await cluster.add()
    batch = [request(cluster.config, "keep"), request(cluster.config, "drop")]
    tokens = [CancelToken(), CancelToken()]
    tokens[1].cancel()
    kept, dropped = await cluster.executor.run(batch, cancel_tokens=tokens)
    assert isinstance(kept, GenerationResult) and isinstance(dropped, GenerationCancelled)


async def test_a_member_cancelled_while_its_batch_runs_stops_and_its_batch_mates_finish(cluster: Cluster) -> None:
    await cluster.add()
    batch = [request(cluster.config, "keep", steps=200), request(cluster.config, "drop", steps=200)]
    tokens = [CancelToken(), CancelToken()]
    steps: list[int] = []

    def on_progress(event: ProgressEvent) -> None:
        steps.append(event.step)
        tokens[1].cancel()  # at its first step: the worker drops it a few steps later, long before step 200

    kept, dropped = await cluster.executor.run(batch, on_progress, cancel_tokens=tokens)
    assert isinstance(kept, GenerationResult) and isinstance(dropped, GenerationCancelled)


async def test_cancelling_a_batch_aborts_it_on_its_worker_which_then_takes_the_next(cluster: Cluster) -> None:
    await cluster.add()
    started = asyncio.Event()
    long = asyncio.ensure_future(cluster.executor.run([request(cluster.config, "long", steps=50)],
                                                      lambda event: started.set()))
    await asyncio.wait_for(started.wait(), WAIT_S)
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long
    quick = await asyncio.wait_for(cluster.executor.run([request(cluster.config, "next")]), WAIT_S)
    assert isinstance(quick[0], GenerationResult)


async def test_a_model_no_worker_serves_fails_saying_so(redis_url: str, redis_namespace: str) -> None:
    config = cluster_config(redis_url, redis_namespace, other=tiny_model())
    made = Cluster(config)
    try:
        await made.add("tiny")
        outcome = (await made.executor.run([request(config, model="other")]))[0]
        assert isinstance(outcome, FixableFailure) and str(outcome) == NO_WORKER_TEXT.format(model="other")
        with pytest.raises(ModelLoadError, match="no GPU worker serves it"):
            await made.executor.prepare("other")
    finally:
        await made.close()


async def test_a_worker_whose_config_lacks_the_model_declines_it_and_another_runs_it(redis_url: str,
                                                                                     redis_namespace: str) -> None:
    bot_config = cluster_config(redis_url, redis_namespace, other=tiny_model())
    made = Cluster(bot_config)
    try:
        await made.add(config=cluster_config(redis_url, redis_namespace))  # its config has no "other"
        alone = (await made.executor.run([request(bot_config, model="other")]))[0]
        assert isinstance(alone, FixableFailure) and str(alone) == NO_WORKER_TEXT.format(model="other")
        await made.add()
        outcome = (await made.executor.run([request(bot_config, model="other")]))[0]
        assert isinstance(outcome, GenerationResult) and outcome.request.model == "other"
    finally:
        await made.close()


async def test_a_model_that_loads_nowhere_is_tried_on_each_worker_then_fails(redis_url: str,
                                                                              redis_namespace: str) -> None:
    broken = tiny_model(source="/nonexistent/model/folder")
    config = cluster_config(redis_url, redis_namespace, broken=broken)
    made = Cluster(config)
    try:
        first, second = await made.add(), await made.add()
        outcome = (await made.executor.run([request(config, model="broken")]))[0]
        assert isinstance(outcome, ModelLoadError)
        assert all(worker.worker.info().busy is None for worker in (first, second))
    finally:
        await made.close()


async def test_out_of_memory_on_one_gpu_moves_the_request_to_another(cluster: Cluster) -> None:
    short_of_memory: list[int] = []  # the worker that gets the batch first runs out of memory, every time

    def hook_for(worker: int) -> Callable[[PipelineCall], None]:
        def hook(call: PipelineCall) -> None:
            if 0 in call.seeds:
                return  # the warm-up: it loads fine
            short_of_memory[:] = short_of_memory or [worker]
            if short_of_memory == [worker]:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return hook

    await cluster.add(fault_hook=hook_for(1))
    await cluster.add(fault_hook=hook_for(2))
    outcome = (await cluster.executor.run([request(cluster.config, count=2)]))[0]
    assert isinstance(outcome, GenerationResult) and len(outcome.images) == 2


async def test_out_of_memory_everywhere_fails_with_the_size_advice(cluster: Cluster) -> None:
    def hook(call: PipelineCall) -> None:
        if 0 not in call.seeds:  # the warm-up (seed 0) fits; every request runs out of memory
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    await cluster.add(fault_hook=hook)
    await cluster.add(fault_hook=hook)
    outcome = (await cluster.executor.run([request(cluster.config)]))[0]
    assert isinstance(outcome, OutOfMemory) and "try a smaller size" in str(outcome)


async def test_a_draining_worker_finishes_its_batch_and_gets_no_new_one(cluster: Cluster) -> None:
    first = await cluster.add()
    started = asyncio.Event()
    running = asyncio.ensure_future(cluster.executor.run([request(cluster.config, "last one", steps=20)],
                                                         lambda event: started.set()))
    await asyncio.wait_for(started.wait(), WAIT_S)
    first.worker.drain()
    await cluster.wait(lambda: cluster.executor.slots == 0, "the drain to show")
    assert isinstance((await running)[0], GenerationResult)
    await asyncio.wait_for(first.task, WAIT_S)  # drained: it left the pool
    second = await cluster.add()
    assert cluster.executor.slots == 1
    assert isinstance((await cluster.executor.run([request(cluster.config)]))[0], GenerationResult)
    assert second.worker.info().busy is None


async def test_a_second_stop_signal_interrupts_the_batch_and_another_worker_runs_it(cluster: Cluster) -> None:
    first = await cluster.add()
    started = asyncio.Event()
    running = asyncio.ensure_future(cluster.executor.run([request(cluster.config, "interrupted", steps=200)],
                                                         lambda event: started.set()))
    await asyncio.wait_for(started.wait(), WAIT_S)
    await cluster.add()
    first.worker.drain()
    first.worker.drain()  # as a second SIGTERM: stop the batch at its next step, then exit
    outcome = (await asyncio.wait_for(running, WAIT_S))[0]
    assert isinstance(outcome, GenerationResult) and outcome.request.prompt == "interrupted"
    await asyncio.wait_for(first.task, WAIT_S)


async def test_a_batch_redis_forgot_is_sent_again_and_ends_once(cluster: Cluster, redis_url: str,
                                                                redis_namespace: str) -> None:
    await cluster.add()
    keys = Keys(redis_namespace)
    started = asyncio.Event()
    running = asyncio.ensure_future(cluster.executor.run([request(cluster.config, "forgotten", steps=30)],
                                                         lambda event: started.set()))
    await asyncio.wait_for(started.wait(), WAIT_S)
    client = connect(redis_url)
    try:  # what a restart of an in-memory Redis does to this namespace: everything is gone
        async for key in client.scan_iter(match=f"saq:job:imagine.{redis_namespace}.*"):
            await client.delete(key)
        await client.delete(keys.epoch, keys.workers)
    finally:
        await client.aclose()
    outcome = (await asyncio.wait_for(running, WAIT_S))[0]
    assert isinstance(outcome, GenerationResult) and outcome.request.prompt == "forgotten"


async def test_unreachable_redis_is_reported_and_recovered_from(own_redis: OwnRedis, redis_namespace: str) -> None:
    config = cluster_config(own_redis.url, redis_namespace)
    executor = RemoteExecutor.from_config(config)
    try:
        await executor.start()
        assert executor.unavailable is not None and executor.slots == 0  # nothing listens on that port yet
        await own_redis.start()
        made = Cluster(config)
        made.executor = executor
        await made.add()
        assert executor.unavailable is None and executor.slots == 1
        outcome = (await executor.run([request(config)]))[0]
        assert isinstance(outcome, GenerationResult)
        await made.close()
    finally:
        await executor.close()


def test_a_request_survives_the_wire_unchanged(tiny_config: GenerationConfig) -> None:
    from generation.remote.wire import request_from_json, request_to_json

    name, model = tiny_config.model(None)
    original = replace(validate(GenerationRequest("a fox", negative_prompt="blur", seed=5, count=2), name, model),
                       init_image=b"\x89PNG...", strength=0.5, loras=(("ink", 0.8),))
    assert request_from_json(request_to_json(original)) == original


async def test_a_batch_sent_to_a_worker_declared_gone_and_back_is_sent_again(
        redis_url: str, redis_namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that stalls past its heartbeats is declared gone, which empties its queue, and its next beat brings
    it back. A batch sent to it just before is no longer in its queue: the bot sends it again (it never ran there)
    instead of waiting for it forever, as it once did when both happened between two of its looks."""
    config = cluster_config(redis_url, redis_namespace)
    keys = Keys(redis_namespace)
    redis = connect(redis_url)
    executor = RemoteExecutor.from_config(config)
    stalled = WorkerInfo(id="stalled", queue=keys.queue_name("stalled"), device="cpu", host="test", pid=1,
                         served=("tiny",), loaded=("tiny",))  # announced by hand: it never takes a job
    beat = dumps(worker_to_json(stalled))
    sent: asyncio.Queue[str] = asyncio.Queue()
    real_enqueue = RedisQueue.enqueue

    async def enqueue(queue: RedisQueue, function: str, **kwargs: Any) -> Any:
        job = await real_enqueue(queue, function, **kwargs)
        sent.put_nowait(str(kwargs.get("key")))
        return job

    monkeypatch.setattr(RedisQueue, "enqueue", enqueue)
    try:
        await redis.set(keys.worker("stalled"), beat, px=60_000)
        await redis.sadd(keys.workers, "stalled")
        await executor.start()
        pool = executor.pool
        async with asyncio.timeout(WAIT_S):
            while not pool.alive("stalled"):
                await pool.changed()
        running = asyncio.create_task(executor.run([request(config)]))
        first = await asyncio.wait_for(sent.get(), WAIT_S)
        pool._reachable_since -= 3600  # long past the start-up grace, in which no worker is declared gone
        await redis.delete(keys.worker("stalled"))  # no beat within the allowed gap: declared gone
        await pool.refresh()
        assert not pool.alive("stalled") and await pool.queue("stalled").count("queued") == 0
        await redis.set(keys.worker("stalled"), beat, px=60_000)  # and back with its next beat
        await redis.sadd(keys.workers, "stalled")
        await pool.refresh()
        again = await asyncio.wait_for(sent.get(), WAIT_S)
        assert again != first and await pool.queue("stalled").count("queued") == 1  # waiting there once more
        assert not running.done()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(running, WAIT_S)
    finally:
        await executor.close()
        await redis.aclose()
