"""The async executor over the real runner: progress on the loop, cancel, faults, shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from generation.errors import ExecutorClosed, GenerationCancelled, GenerationFailed
from generation.executor import GpuExecutor
from generation.interface import CancelToken, Outcome, ProgressCallback
from generation.request import GenerationRequest, GenerationResult, ProgressEvent
from generation.runner import PipelineCall, Runner

# A guard against a hung test, never an assertion: the gate below opens as soon as the token is set.
GATE_GUARD_S = 30


class GatedRunner:
    """The real runner, except that after step 1 of its first batch the worker waits for a cancel token.

    That makes "cancel mid-run" deterministic: the cancel provably lands while the pipeline is
    between steps, with no sleeps and no timing assumptions.
    """

    def __init__(self, runner: Runner, gate: Callable[[CancelToken | None, Sequence[CancelToken | None]], CancelToken]):
        self._runner = runner
        self._gate = gate
        self._gated = False

    @property
    def max_batch_images(self) -> int:
        return self._runner.max_batch_images

    def run(
        self,
        batch: Sequence[GenerationRequest],
        on_progress: ProgressCallback | None = None,
        *,
        cancel_tokens: Sequence[CancelToken | None] | None = None,
        interrupt: CancelToken | None = None,
    ) -> list[Outcome]:
        tokens = list(cancel_tokens) if cancel_tokens is not None else [None] * len(batch)

        def progress(event: ProgressEvent) -> None:
            if on_progress is not None:
                on_progress(event)
            if event.step == 1 and not self._gated:  # only the first batch; later ones run freely
                self._gated = True
                assert self._gate(interrupt, tokens).wait(GATE_GUARD_S), "the gate never opened"

        return self._runner.run(batch, progress, cancel_tokens=cancel_tokens, interrupt=interrupt)

    def close(self) -> None:
        self._runner.close()


def on_interrupt(interrupt: CancelToken | None, _tokens: Sequence[CancelToken | None]) -> CancelToken:
    assert interrupt is not None
    return interrupt


def pixels(result: Outcome, index: int = 0) -> np.ndarray:
    assert isinstance(result, GenerationResult)
    return np.asarray(result.images[index]).astype(np.int16)


async def test_progress_events_arrive_in_order_on_the_loop_thread(
    executor: GpuExecutor, make_request: Callable[..., Any]
) -> None:
    seen: list[tuple[int, int, int]] = []
    [result] = await executor.run(
        [make_request(steps=6)], lambda event: seen.append((event.step, event.total, threading.get_ident()))
    )
    assert isinstance(result, GenerationResult)
    total = seen[-1][1]
    assert [step for step, _, _ in seen] == list(range(1, total + 1))
    assert {thread for _, _, thread in seen} == {threading.get_ident()}


async def test_one_worker_thread_serves_every_batch_and_survives_a_crash(
    tiny_config: Any, make_request: Callable[..., Any]
) -> None:
    threads: list[threading.Thread] = []
    crashes = [RuntimeError("simulated kernel crash")]

    def record(_call: PipelineCall) -> None:
        threads.append(threading.current_thread())
        if crashes:
            raise crashes.pop()

    executor = GpuExecutor.from_config(tiny_config, fault_hook=record)
    failed = (await executor.run([make_request(seed=1)]))[0]
    assert isinstance(failed, GenerationFailed) and "simulated kernel crash" in str(failed)
    outcomes = [await executor.run([make_request(seed=seed)]) for seed in (1, 2)]
    assert all(isinstance(batch[0], GenerationResult) for batch in outcomes)
    assert len(set(threads)) == 1 and threads[0] is not threading.main_thread()
    assert threads[0].name.startswith("imagine-")
    await executor.close()


async def test_cancelling_the_task_interrupts_the_pipeline(tiny_config: Any, make_request: Callable[..., Any]) -> None:
    executor = GpuExecutor(GatedRunner(Runner(tiny_config), on_interrupt))
    steps: list[int] = []
    task: asyncio.Task[list[Outcome]] | None = None

    def cancel_at_first_step(event: ProgressEvent) -> None:
        steps.append(event.step)
        assert task is not None
        task.cancel()

    task = asyncio.create_task(executor.run([make_request(steps=40)], cancel_at_first_step))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == [1]  # the other 40 steps never ran
    # The worker is free again and serves the next batch.
    [result] = await executor.run([make_request(seed=9)])
    assert isinstance(result, GenerationResult)
    await executor.close()


async def test_cancelling_one_member_drops_it_and_the_others_are_unharmed(
    tiny_config: Any, make_request: Callable[..., Any]
) -> None:
    runner = Runner(tiny_config)
    executor = GpuExecutor(GatedRunner(runner, lambda _interrupt, tokens: tokens[1] or CancelToken()))
    requests = [make_request("fox", seed=1), make_request("cat", seed=2), make_request("owl", seed=3)]
    tokens = [CancelToken(), CancelToken(), CancelToken()]
    outcomes = await executor.run(requests, lambda event: tokens[1].cancel(), cancel_tokens=tokens)
    assert isinstance(outcomes[1], GenerationCancelled)
    await executor.close()
    for index in (0, 2):
        alone = Runner(tiny_config).run([requests[index]])[0]
        assert np.abs(pixels(outcomes[index]) - pixels(alone)).max() <= 2


async def test_cancelling_every_member_interrupts_the_pipeline(
    tiny_config: Any, make_request: Callable[..., Any]
) -> None:
    tokens = [CancelToken(), CancelToken()]
    executor = GpuExecutor(GatedRunner(Runner(tiny_config), lambda _interrupt, _tokens: tokens[1]))
    steps: list[int] = []

    def cancel_everyone(event: ProgressEvent) -> None:
        steps.append(event.step)
        for token in tokens:
            token.cancel()

    outcomes = await executor.run(
        [make_request(seed=1, steps=40), make_request(seed=2, steps=40)], cancel_everyone, cancel_tokens=tokens
    )
    assert all(isinstance(outcome, GenerationCancelled) for outcome in outcomes)
    assert steps == [1]
    await executor.close()


async def test_graceful_close_finishes_running_work_then_refuses_new_work(
    executor: GpuExecutor, make_request: Callable[..., Any]
) -> None:
    closing: list[asyncio.Task[None]] = []

    def close_once(_event: ProgressEvent) -> None:
        if not closing:
            closing.append(asyncio.create_task(executor.close()))

    [result] = await executor.run([make_request(steps=6)], close_once)
    assert isinstance(result, GenerationResult)
    await closing[0]
    with pytest.raises(ExecutorClosed):
        await executor.run([make_request()])


async def test_close_with_cancel_running_cancels_the_running_batch(
    tiny_config: Any, make_request: Callable[..., Any]
) -> None:
    executor = GpuExecutor(GatedRunner(Runner(tiny_config), on_interrupt))
    closing: list[asyncio.Task[None]] = []

    def close_now(_event: ProgressEvent) -> None:
        closing.append(asyncio.create_task(executor.close(cancel_running=True)))

    queued = asyncio.create_task(executor.run([make_request(seed=5)]))
    outcomes = await executor.run([make_request(steps=40)], close_now)
    assert [type(outcome) for outcome in outcomes] == [GenerationCancelled]
    # Work already submitted behind it is cancelled too, not silently dropped.
    assert [type(outcome) for outcome in await queued] == [GenerationCancelled]
    await closing[0]
    assert executor.closed
    with pytest.raises(ExecutorClosed):
        await executor.run([make_request()])
