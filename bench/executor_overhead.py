"""How much the executor adds on top of calling the diffusers pipeline directly.

    python -m bench.executor_overhead            # CPU, builtin:tiny, ~1 s per run
    python -m bench.executor_overhead --gpu      # CUDA, SD 1.5 architecture (random weights), fp16, 512x512

Runs alternate direct/executor (order flipped every round) so drift hits both equally. The executor
path includes everything a bot call pays: the worker-thread hop, progress events delivered to the
event loop, the per-call scheduler, separate VAE decode and PNG-ready PIL images.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

from generation.config import DType, ExecutorConfig, GenerationConfig, ModelConfig
from generation.executor import GpuExecutor
from generation.request import GenerationRequest, GenerationResult, validate
from generation.runner import Runner


@dataclass(frozen=True)
class Setup:
    source: str
    device: Literal["cpu", "cuda"]
    dtype: DType
    width: int
    height: int
    steps: int


CPU = Setup(source="builtin:tiny", device="cpu", dtype="float32", width=512, height=512, steps=10)
GPU = Setup(source="builtin:sd15-random", device="cuda", dtype="float16", width=512, height=512, steps=25)
TINY = Setup(source="builtin:tiny", device="cpu", dtype="float32", width=64, height=64, steps=4)


@dataclass(frozen=True)
class Measurement:
    images: int
    direct_s: list[float]
    executor_s: list[float]
    peak_vram_bytes: int | None

    @property
    def ratio(self) -> float:
        return statistics.median(self.executor_s) / statistics.median(self.direct_s)

    def summary(self) -> str:
        direct, executor = statistics.median(self.direct_s), statistics.median(self.executor_s)
        line = (f"batch {self.images}: direct median {direct:.3f}s, executor median {executor:.3f}s, "
                f"ratio {self.ratio:.3f} ({(self.ratio - 1) * 100:+.1f}%), "
                f"{executor / self.images:.3f} s/image via executor, runs {len(self.direct_s)}+{len(self.executor_s)}")
        if self.peak_vram_bytes is not None:
            line += f", peak VRAM {self.peak_vram_bytes / 2**30:.2f} GiB"
        return line


def make_config(setup: Setup, max_batch_images: int = 4) -> GenerationConfig:
    model = ModelConfig(source=setup.source, dtype=setup.dtype,
                        default_width=setup.width, default_height=setup.height, default_steps=setup.steps,
                        max_width=max(setup.width, 1024), max_height=max(setup.height, 1024),
                        max_pixels=max(setup.width * setup.height, 768 * 768))
    executor = ExecutorConfig(device=setup.device, max_batch_images=max_batch_images,
                              preview_every_steps=0)
    return GenerationConfig(default_model="bench", models={"bench": model}, executor=executor)


def _request(runner: Runner, count: int, seed: int) -> GenerationRequest:
    name, model = runner.config.model(None)
    return validate(GenerationRequest(prompt="a red fox in snow, photo", seed=seed, count=count), name, model)


def _direct(pipe: Any, request: GenerationRequest) -> float:
    started = time.perf_counter()
    pipe(prompt=[request.prompt] * request.count, negative_prompt=[request.negative_prompt] * request.count,
         width=request.width, height=request.height, num_inference_steps=request.steps,
         guidance_scale=request.guidance, output_type="pil",
         generator=[torch.Generator("cpu").manual_seed(seed) for seed in request.seeds()])
    return time.perf_counter() - started


async def _through_executor(executor: GpuExecutor, request: GenerationRequest) -> float:
    started = time.perf_counter()
    [outcome] = await executor.run([request], lambda _event: None)
    elapsed = time.perf_counter() - started
    if not isinstance(outcome, GenerationResult):
        raise RuntimeError(f"executor run failed: {outcome}")
    return elapsed


async def measure(executor: GpuExecutor, runner: Runner, *, images: int, runs: int, warmup: int = 1) -> Measurement:
    """Interleaved direct vs executor runs of one request of ``images`` images on the same loaded pipe."""
    pipe = runner.model(None).pipe
    request = _request(runner, images, seed=1)
    for _ in range(warmup):
        await _through_executor(executor, request)
        _direct(pipe, request)
    cuda = runner.model(None).placement.is_cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    direct: list[float] = []
    through: list[float] = []
    for round_ in range(runs):
        if round_ % 2:
            direct.append(_direct(pipe, request))
            through.append(await _through_executor(executor, request))
        else:
            through.append(await _through_executor(executor, request))
            direct.append(_direct(pipe, request))
    peak = int(torch.cuda.max_memory_allocated()) if cuda else None
    return Measurement(images=images, direct_s=direct, executor_s=through, peak_vram_bytes=peak)


async def run_benchmark(setup: Setup, batches: list[tuple[int, int]]) -> list[Measurement]:
    """``batches``: (images per call, runs per path)."""
    executor = GpuExecutor.from_config(make_config(setup, max_batch_images=max(images for images, _ in batches)))
    runner = executor.runner
    assert isinstance(runner, Runner)
    try:
        return [await measure(executor, runner, images=images, runs=runs) for images, runs in batches]
    finally:
        await executor.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.executor_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="full-size SD 1.5 architecture on CUDA, batch 1 and 4")
    parser.add_argument("--runs", type=int, default=10, help="runs per path (default 10)")
    args = parser.parse_args(argv)
    if args.gpu and not torch.cuda.is_available():
        print("--gpu needs a CUDA GPU; none is visible", file=sys.stderr)
        return 2
    setup = GPU if args.gpu else CPU
    batches = [(1, args.runs), (4, max(3, args.runs // 2))] if args.gpu else [(1, args.runs)]
    print(f"{setup.source} on {setup.device}/{setup.dtype}, {setup.width}x{setup.height}, {setup.steps} steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for measurement in asyncio.run(run_benchmark(setup, batches)):
        print(measurement.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
