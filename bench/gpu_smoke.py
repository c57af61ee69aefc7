"""One short GPU check: smoke test through the executor, then the executor-overhead benchmark.

    HF_HUB_OFFLINE=1 python -m bench.gpu_smoke            # CUDA: SD 1.5 architecture, random weights, fp16
    HF_HUB_OFFLINE=1 python -m bench.gpu_smoke --tiny     # CPU: the same code path on builtin:tiny

Needs only the repo and a venv with torch + requirements: nothing is downloaded. Prints one
summary block at the end; exits 1 if the smoke test fails (the benchmark is then skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
from dataclasses import replace

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch

from bench.executor_overhead import GPU, TINY, Measurement, Setup, make_config, measure
from generation.executor import GpuExecutor
from generation.request import GenerationRequest, GenerationResult, ProgressEvent, validate
from generation.runner import Runner


def _check_image(result: object, label: str) -> list[str]:
    if not isinstance(result, GenerationResult):
        return [f"{label}: failed: {result}"]
    problems = []
    for image in result.images:
        array = np.asarray(image, dtype=np.float32)
        if not np.isfinite(array).all() or array.std() == 0:
            problems.append(f"{label}: image is blank or not finite (std {array.std():.2f})")
    return problems


async def smoke(setup: Setup, lines: list[str]) -> tuple[GpuExecutor, Runner, list[str]]:
    started = time.perf_counter()
    executor = GpuExecutor.from_config(make_config(setup).model_copy(update={
        "executor": make_config(setup).executor.model_copy(update={"preview_every_steps": 5})}))
    runner = executor.runner
    assert isinstance(runner, Runner)
    name, model = runner.config.model(None)
    events: list[ProgressEvent] = []
    request = validate(GenerationRequest(prompt="a red fox in snow, photo", seed=1234), name, model)
    [txt2img] = await executor.run([request], events.append)
    problems = _check_image(txt2img, "txt2img")
    if isinstance(txt2img, GenerationResult):
        timings = txt2img.timings
        previews = sum(1 for event in events if event.preview is not None)
        lines.append(f"smoke txt2img: load {timings.load_s:.1f}s, denoise {timings.denoise_s:.2f}s, "
                     f"decode {timings.decode_s:.2f}s, {len(events)} progress events, {previews} previews")
        buffer = io.BytesIO()
        txt2img.images[0].save(buffer, format="PNG")
        i2i_request = validate(replace(request, init_image=buffer.getvalue(), strength=0.6, seed=99), name, model)
        [img2img] = await executor.run([i2i_request])
        problems += _check_image(img2img, "img2img")
        if isinstance(img2img, GenerationResult):
            lines.append(f"smoke img2img: denoise {img2img.timings.denoise_s:.2f}s, size {img2img.images[0].size}")
        # Same seed twice through the executor gives the same pixels on this device.
        [again] = await executor.run([request])
        if isinstance(again, GenerationResult):
            same = np.array_equal(np.asarray(again.images[0]), np.asarray(txt2img.images[0]))
            lines.append(f"smoke reproducible: {same}")
            if not same:
                problems.append("same seed gave different pixels")
    lines.append(f"smoke total {time.perf_counter() - started:.1f}s")
    return executor, runner, problems


async def main_async(setup: Setup, batches: list[tuple[int, int]]) -> int:
    device = torch.cuda.get_device_name(0) if setup.device == "cuda" else "cpu"
    lines = [f"device {device}; torch {torch.__version__}; model {setup.source} {setup.dtype} "
             f"{setup.width}x{setup.height} {setup.steps} steps"]
    executor, runner, problems = await smoke(setup, lines)
    try:
        lines += [f"SMOKE FAILED: {problem}" for problem in problems] or ["SMOKE OK"]
        # Benchmark even after a smoke failure: on a one-off GPU run the numbers are still worth having.
        for images, runs in batches:
            try:
                measurement: Measurement = await measure(executor, runner, images=images, runs=runs)
            except Exception as exc:
                lines.append(f"BENCH FAILED (batch {images}): {type(exc).__name__}: {exc}")
                problems.append(str(exc))
                break
            lines.append(measurement.summary())
        return 1 if problems else 0
    finally:
        await executor.close()
        print("\n".join(["== gpu_smoke summary ==", *lines]), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="run the same path on CPU with builtin:tiny")
    parser.add_argument("--runs", type=int, default=10, help="benchmark runs per path for batch 1")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA GPU visible; use --tiny for the CPU check", file=sys.stderr)
        return 2
    setup = TINY if args.tiny else GPU
    batches = [(1, args.runs), (4, max(2, args.runs // 2))]
    return asyncio.run(main_async(setup, batches))


if __name__ == "__main__":
    sys.exit(main())
