"""What the whole bot adds on top of the executor, and how responsive its event loop stays.

    python -m bench.bot_e2e [--rounds 3] [--size 128] [--steps 6] [--naive]
    python -m bench.bot_e2e --gpu        # full-size SD 1.5 architecture (random weights), CUDA, 512x512, 25 steps
    python -m bench.bot_e2e --gpu --compile   # the same with executor.compile (buckets warmed before timing)

For N = 1 and N = 8 concurrent requests it times, interleaved (order flipped every run; a round is one run at
N = 8 and eight at N = 1, as many images each):

- bot: N users send /imagine through the fake Discord (tests/fake_discord) at once; the clock stops
  when every status message shows its result. This pays for everything a user waits for: gateway
  dispatch, admission, storage, the scheduler's batching window, status edits, grid encoding and upload.
- direct: the same requests straight into the same GpuExecutor, in batches of max_batch_images (marked for
  the safety checker as the bot marks them under the config's safety mode, so both run the same model work).
- naive (``--naive``; always with ``--gpu``): what a simple bot does, one diffusers ``pipe(...)`` call per request,
  first come first served, on the same loaded pipeline.

It prints the median wall time per image of each and their ratio, the median of each run's own ratio ("paired")
with its 95 % confidence interval (a shared 2-core machine's runs scatter by 10 % and more: the interval says
whether the ratio is above or below a goal, or that the runs cannot tell), and the event-loop lag (how late a
5 ms ``asyncio.sleep`` wakes) while the bot runs: its p99 says whether anything blocks the loop while the GPU
thread is busy. The fake Discord shares the loop and the cores, so its work counts against the bot; its OpenAPI
checks of every request and response (test-time strictness that the real Discord does not run on the bot's
cores) are off here, and on with ``--validate``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot.app import ImagineBot
from bot.core.config import AppConfig, BotConfig, Limits, SchedulerConfig
from bot.core.config_store import ConfigStore
from bot.core.safety import needs_check, resolve_safety
from bot.services import build_services
from bot.storage import Storage
from generation.config import ExecutorConfig, GenerationConfig, ModelConfig
from generation.executor import GpuExecutor
from generation.request import GenerationRequest, validate
from generation.runner import Runner
from tests.fake_discord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, FakeUser, run_client

USERS = 8
TICK_S = 0.005


@dataclass
class Samples:
    bot: list[float] = field(default_factory=list)  # seconds per image, one per round
    direct: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)


class LagMeter:
    """Records how late ``asyncio.sleep(TICK_S)`` wakes while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(TICK_S)
            if self.active:
                self.lags.append(time.perf_counter() - start - TICK_S)

    def __enter__(self) -> LagMeter:
        self._task = asyncio.create_task(self._tick())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def p(self, quantile: float) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] if ordered else float("nan")


def config(size: int, steps: int, source: str = "builtin:tiny", device: str = "cpu",
           use_compile: bool = False) -> AppConfig:
    model = ModelConfig(source=source, default_steps=steps, default_width=size, default_height=size,
                        max_width=512, max_height=512, max_pixels=512 * 512)
    none = Limits(user_rate=None, guild_rate=None, max_queued_per_user=None, max_queued_per_guild=None,
                  daily_images_per_user=None)
    return AppConfig(
        generation=GenerationConfig(models={"tiny": model},
                                    executor=ExecutorConfig(device=device,  # type: ignore[arg-type]
                                                            preview_every_steps=0, max_batch_images=4,
                                                            compile=use_compile, compile_batch_sizes=(1, 2, 4))),
        limits=none, scheduler=SchedulerConfig(), bot=BotConfig(progress_interval_s=2.0))


def same_requests(app: AppConfig, n: int, round_id: int) -> list[GenerationRequest]:
    """What the bot's /imagine makes of ``bot_round``'s commands: the prompt, the seed, the model's defaults,
    and the safety check that the config's mode for a server channel asks for."""
    name, model = app.generation.model(None)
    check = needs_check(resolve_safety(app, guild_id=1, channel_nsfw=False))
    return [replace(validate(GenerationRequest(f"a fox {round_id}-{i}", seed=i), name, model), check_safety=check)
            for i in range(n)]


def guild() -> FakeGuild:
    members = [FakeMember(FakeUser(f"user{index}")) for index in range(USERS)]
    return FakeGuild("Bench", channels=[FakeChannel("imagine")], members=members, owner_id=members[0].user.id)


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median: the order statistics that the count of values
    below the median (binomial, one half) puts outside with at most 1 - ``confidence`` in all."""
    ordered, count = sorted(values), len(values)
    below = 0  # how many of the smallest values lie outside: the largest k with P(Bin(n, 1/2) < k) <= alpha/2
    while below < count // 2 and sum(math.comb(count, i) for i in range(below + 1)) / 2**count <= (1 - confidence) / 2:
        below += 1
    if below == 0:
        return ordered[0], ordered[-1]  # too few runs for this confidence: the whole range
    return ordered[below - 1], ordered[count - below]


async def bot_round(fake: FakeDiscord, n: int, round_id: int, lag: LagMeter) -> float:
    start = time.perf_counter()
    lag.active = True
    handles = await asyncio.gather(*(fake.slash("imagine", {"prompt": f"a fox {round_id}-{i}", "seed": i},
                                                user=f"user{i}") for i in range(n)))

    def all_done() -> bool:
        return all(h.original is not None and h.original.attachments and h.original.content.startswith("**")
                   for h in handles)

    await fake.wait_until(all_done, timeout=300, what="every result")
    lag.active = False
    return (time.perf_counter() - start) / n


async def direct_round(executor: GpuExecutor, app: AppConfig, n: int, round_id: int) -> float:
    requests = same_requests(app, n, round_id)
    batch = executor.max_batch_images
    start = time.perf_counter()
    for first in range(0, n, batch):
        await executor.run(requests[first:first + batch])
    return (time.perf_counter() - start) / n


async def naive_round(executor: GpuExecutor, app: AppConfig, n: int, round_id: int) -> float:
    """One plain diffusers call per request, first come first served (what a simple bot does), same weights."""
    runner = executor.runner
    assert isinstance(runner, Runner)
    requests = same_requests(app, n, round_id)

    def one(request: GenerationRequest) -> None:
        import torch

        runner.model(None).pipe(
            prompt=request.prompt, negative_prompt=request.negative_prompt or None, width=request.width,
            height=request.height, num_inference_steps=request.steps, guidance_scale=request.guidance,
            generator=torch.Generator("cpu").manual_seed(request.seed or 0), output_type="pil")

    start = time.perf_counter()
    for request in requests:
        await asyncio.to_thread(one, request)  # off the loop, as a bot would have to
    return (time.perf_counter() - start) / n


async def main(rounds: int, size: int, steps: int, gpu: bool = False, naive: bool = False,
               use_compile: bool = False, validate_fake: bool = False) -> None:
    source, device = ("builtin:sd15-random", "cuda") if gpu else ("builtin:tiny", "cpu")
    app = config(size, steps, source, device, use_compile)
    executor = GpuExecutor.from_config(app.generation)
    samples = {n: Samples() for n in (1, USERS)}
    with tempfile.TemporaryDirectory() as data:
        async with FakeDiscord(guilds=[guild()], default_timeout=300, validate=validate_fake) as fake:
            with fake.patch_discord():
                services = build_services(ConfigStore(initial=app), Storage(Path(data)), executor)
                bot = ImagineBot(services, guild_ready_timeout=0.05, watch_config=False)
                async with run_client(fake, bot):
                    with LagMeter() as lag:
                        await direct_round(executor, app, 1, -1)  # warm-up: model load, first-call costs
                        await bot_round(fake, 1, -1, lag)
                        if use_compile:  # the bot's warm-up started the buckets' compile: time them warm
                            runner = executor.runner
                            assert isinstance(runner, Runner)
                            lag.lags.clear()
                            lag.active = True  # how the loop fares while the compile thread works
                            await asyncio.to_thread(runner.wait_compiled)
                            lag.active = False
                            compiled = runner.model(None).compiled
                            print(f"compiled buckets: {compiled.state if compiled else 'off'}; event-loop lag while "
                                  f"compiling: p99 {lag.p(0.99) * 1000:.1f} ms, max "
                                  f"{max(lag.lags, default=0) * 1000:.1f} ms ({len(lag.lags)} ticks)", flush=True)
                        lag.lags.clear()
                        kinds = ("bot", "direct", "naive") if naive else ("bot", "direct")
                        for round_id in range(rounds):
                            for n in (1, USERS):
                                for repeat in range(USERS // n):  # as many images at N=1 as at N=8
                                    run_id = round_id * USERS + repeat
                                    order = kinds if run_id % 2 == 0 else tuple(reversed(kinds))
                                    for kind in order:
                                        if kind == "bot":
                                            samples[n].bot.append(await bot_round(fake, n, run_id, lag))
                                        elif kind == "direct":
                                            samples[n].direct.append(await direct_round(executor, app, n, run_id))
                                        else:
                                            samples[n].naive.append(await naive_round(executor, app, n, run_id))
                        p50, p99, worst = lag.p(0.5), lag.p(0.99), max(lag.lags)
            fake.assert_no_failures()
    where = ("CUDA fp16" if gpu else "CPU") + (", compiled buckets" if use_compile else "")
    print(f"{source} {size}x{size}, {steps} steps, {where}, {rounds} rounds, batches of {executor.max_batch_images}, "
          f"fake Discord's OpenAPI checks {'on' if validate_fake else 'off'}")
    naive_header = f" {'naive s/img':>12} {'bot img/s / naive':>18}" if naive else ""
    print(f"{'N':>3} {'runs':>5} {'direct s/img':>13} {'bot s/img':>10} {'ratio':>6} {'paired':>7} "
          f"{'paired 95% CI':>14}{naive_header}")
    for n, got in samples.items():
        direct, via_bot = statistics.median(got.direct), statistics.median(got.bot)
        # The median of each run's own ratio: a run's two sides are seconds apart, so a machine that speeds up
        # or slows down between runs moves it less; its confidence interval says what the run can tell.
        ratios = [bot / plain for bot, plain in zip(got.bot, got.direct, strict=True)]
        paired, (low, high) = statistics.median(ratios), median_interval(ratios)
        naive_cells = ""
        if naive:
            plain = statistics.median(got.naive)
            naive_cells = f" {plain:>12.3f} {plain / via_bot:>18.2f}"
        print(f"{n:>3} {len(ratios):>5} {direct:>13.3f} {via_bot:>10.3f} {via_bot / direct:>6.3f} {paired:>7.3f} "
              f"{f'{low:.3f}-{high:.3f}':>14}{naive_cells}")
    print(f"event-loop lag while generating: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
          f"max {worst * 1000:.1f} ms ({len(lag.lags)} ticks)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--gpu", action="store_true", help="SD 1.5-size random model on CUDA, 512x512, 25 steps")
    parser.add_argument("--naive", action="store_true", help="also time a one-call-per-request diffusers loop "
                        "(always on with --gpu)")
    parser.add_argument("--compile", action="store_true", help="executor.compile, buckets warmed before timing")
    parser.add_argument("--validate", action="store_true", help="keep the fake Discord's OpenAPI checks on (they "
                        "run on the bot's cores and count against it)")
    args = parser.parse_args()
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            print(f"bench.bot_e2e --gpu: no CUDA device is visible (torch {torch.__version__}); run it on a GPU "
                  "machine, or leave out --gpu", file=sys.stderr)
            sys.exit(2)
        args.size, args.steps, args.naive = 512, 25, True
    asyncio.run(main(args.rounds, args.size, args.steps, args.gpu, args.naive, args.compile, args.validate))
