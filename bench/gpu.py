"""Eager against compiled pipelines on a GPU, side by side in one run (issue 14).

    HF_HUB_OFFLINE=1 python -m bench.gpu                        # SD 1.5 at 512², SDXL at 1024² where VRAM allows
    HF_HUB_OFFLINE=1 python -m bench.gpu --models sd15 --batches 1,4,8 --runs 2
    HF_HUB_OFFLINE=1 python -m bench.gpu --cpu-smoke            # builtin:tiny on the CPU, in seconds: the code path

Full-size architectures with random weights (``builtin:sd15-random``, ``builtin:sdxl-random``: the work per step
of the real models, nothing downloaded), fp16, 25 steps, previews off. Per model one ``Runner`` with
``executor.compile`` holds both the eager modules and the compiled ones: the eager figures are taken first, then
the buckets (the size x every batch) compile (cold, into a fresh ``compile_cache_dir``), then eager and compiled
runs alternate per batch (order flipped every round). A second process then warms the same buckets from the disk
cache: the warm-start time a restart pays. It prints, per batch: s/image, img/s, % of the card's dense fp16/bf16
peak (FLOPs per image counted once by torch's FLOP counter; table below, n/a for other cards), peak VRAM.

Without a CUDA device it exits 2 with one line (except ``--cpu-smoke``, which compiles with dynamo's eager
backend: no inductor, seconds on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from generation.config import ExecutorConfig, GenerationConfig, ModelConfig
from generation.request import GenerationRequest, GenerationResult, validate
from generation.runner import PipelineCall, Runner

# Dense (no sparsity) fp16/bf16 tensor-core peaks in TFLOPS, from the vendors' data sheets, by a name's words.
PEAK_TFLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H200", "NVL"), 835.0), (("H200",), 989.4),
    (("H100", "NVL"), 835.0), (("H100", "PCIE"), 756.0), (("H100",), 989.4),
    (("A100",), 312.0), (("L4",), 121.0), (("4090",), 165.2),
)


@dataclass(frozen=True)
class Model:
    key: str
    source: str
    family: str
    side: int
    min_vram_gib: float  # below this the model is skipped (weights + activations of the small batches)


MODELS = {"sd15": Model("sd15", "builtin:sd15-random", "sd1", 512, 8.0),
          "sdxl": Model("sdxl", "builtin:sdxl-random", "sdxl", 1024, 40.0)}
SMOKE = Model("tiny", "builtin:tiny", "sd1", 64, 0.0)


def peak_tflops(device_name: str) -> float | None:
    """The card's dense fp16/bf16 peak, matched on whole words of its name (``L4`` is not ``L40S``); None: unknown."""
    words = set(device_name.upper().replace("-", " ").replace("_", " ").split())
    for needed, tflops in PEAK_TFLOPS:
        if all(part in words for part in needed):
            return tflops
    return None


@dataclass
class Row:
    batch: int
    eager_s: list[float] = field(default_factory=list)  # wall seconds per call
    compiled_s: list[float] = field(default_factory=list)
    eager_vram: int | None = None
    compiled_vram: int | None = None
    note: str = ""


CompileMode = Literal["reduce-overhead", "max-autotune", "default"]


def make_config(model: Model, *, device: Literal["cuda", "cpu"], batches: list[int], steps: int, mode: str,
                cache_dir: str, scope: Literal["model", "blocks"] = "model") -> GenerationConfig:
    side = model.side
    entry = ModelConfig(source=model.source, family=cast(Any, model.family),
                        dtype="float16" if device == "cuda" else "float32", default_steps=steps,
                        default_width=side, default_height=side, max_width=max(side, 1024),
                        max_height=max(side, 1024), max_pixels=max(side, 1024) ** 2, max_steps=max(steps, 50))
    executor = ExecutorConfig(device=device, max_batch_images=max(batches), preview_every_steps=0, compile=True,
                              compile_mode=cast(CompileMode, mode), compile_batch_sizes=tuple(batches),
                              compile_cache_dir=cache_dir, compile_scope=scope)
    return GenerationConfig(default_model=model.key, models={model.key: entry}, executor=executor)


class Calls:
    """Counts pipeline calls (a fault hook that never faults): more than one per batch means it was split (OOM)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _call: PipelineCall) -> None:
        self.count += 1


def requests(runner: Runner, batch: int, seed: int) -> list[GenerationRequest]:
    name, entry = runner.config.model(None)
    return [validate(GenerationRequest("a red fox in snow, photo", seed=seed + index), name, entry)
            for index in range(batch)]


def timed_run(runner: Runner, calls: Calls, batch: int, seed: int) -> float:
    before = calls.count
    started = time.perf_counter()
    outcomes = runner.run(requests(runner, batch, seed))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    failed = [outcome for outcome in outcomes if not isinstance(outcome, GenerationResult)]
    if failed:
        raise RuntimeError(f"batch {batch}: {failed[0]}")
    if calls.count - before != 1:
        raise RuntimeError(f"batch {batch} was split into {calls.count - before} calls (out of memory)")
    return elapsed


def flops_per_image(runner: Runner) -> float:
    """Every counted FLOP (matmuls, convolutions, attention) of one whole image at batch 1, eager."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        runner.run(requests(runner, 1, seed=999))
    return float(counter.get_total_flops())


def peak_vram() -> int | None:
    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def reset_vram() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def measure_model(model: Model, args: argparse.Namespace,
                  device: Literal["cuda", "cpu"]) -> tuple[list[Row], dict[str, Any]]:
    cache_dir = tempfile.mkdtemp(prefix=f"imagine-compile-{model.key}-")
    config = make_config(model, device=device, batches=args.batch_list, steps=args.steps, mode=args.compile_mode,
                         cache_dir=cache_dir)
    calls = Calls()
    runner = Runner(config, fault_hook=calls)
    facts: dict[str, Any] = {"cache_dir": cache_dir}
    try:
        loaded = runner.model(None)
        facts["load_s"] = loaded.load_s
        compiled = loaded.compiled
        rows = [Row(batch) for batch in args.batch_list]
        timed_run(runner, calls, 1, seed=0)  # first-call costs (allocator, kernel selection) paid once, eager
        facts["flops_per_image"] = flops_per_image(runner)
        for row in rows:  # eager first: compiling must not share the GPU with these
            try:
                timed_run(runner, calls, row.batch, seed=1)
                reset_vram()
                row.eager_s.append(timed_run(runner, calls, row.batch, seed=2))
                row.eager_vram = peak_vram()
            except Exception as exc:
                row.note = f"eager: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        started = time.perf_counter()
        runner.prepare(None)  # records the eager calls, then compiles every bucket in the background
        ready = runner.wait_compiled(args.compile_timeout)
        facts["compile_s"] = time.perf_counter() - started
        facts["compiled"] = compiled.state if compiled is not None else "off"
        if not ready or compiled is None or not compiled.ready:
            return rows, facts
        for row in rows:
            if row.note:
                continue
            try:
                for round_ in range(args.runs):
                    order = ("compiled", "eager") if round_ % 2 == 0 else ("eager", "compiled")
                    for kind in order:
                        loaded.compiled = compiled if kind == "compiled" else None  # None: the runner runs eager
                        reset_vram()
                        seconds = timed_run(runner, calls, row.batch, seed=10 + round_)
                        if kind == "compiled":
                            row.compiled_s.append(seconds)
                            row.compiled_vram = max(row.compiled_vram or 0, peak_vram() or 0) or None
                        else:
                            row.eager_s.append(seconds)
            except Exception as exc:
                row.note = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            finally:
                loaded.compiled = compiled
        return rows, facts
    finally:
        runner.close()


def warm_start(model: Model, args: argparse.Namespace, cache_dir: str) -> float | None:
    """Seconds a fresh process takes to warm every bucket from the disk cache (None: it failed)."""
    command = [sys.executable, "-m", "bench.gpu", "--warm-start-only", model.key, "--cache-dir", cache_dir,
               "--batches", args.batches, "--steps", str(args.steps), "--compile-mode", args.compile_mode]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.compile_timeout + 600, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            return float(json.loads(line)["warm_s"])
    print(f"warm start failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    return None


def warm_start_only(args: argparse.Namespace) -> int:
    model = MODELS[args.warm_start_only]
    runner = Runner(make_config(model, device="cuda", batches=args.batch_list, steps=args.steps,
                                mode=args.compile_mode, cache_dir=args.cache_dir))
    try:
        started = time.perf_counter()
        runner.prepare(None)
        runner.wait_compiled(args.compile_timeout)
        compiled = runner.model(None).compiled
        ok = compiled is not None and compiled.ready
        print(json.dumps({"warm_s": time.perf_counter() - started if ok else None}))
        return 0 if ok else 1
    finally:
        runner.close()


def per_image(samples: list[float], batch: int) -> float | None:
    return statistics.median(samples) / batch if samples else None


def report(model: Model, rows: list[Row], facts: dict[str, Any], peak: float | None, steps: int) -> list[str]:
    flops = facts.get("flops_per_image", 0.0)
    lines = [f"### {model.source} {model.side}x{model.side}, {steps} steps",
             f"load {facts.get('load_s', 0):.1f} s; {flops / 1e12:.2f} TFLOP per image (counted at batch 1); "
             f"compile (cold cache, every bucket, in the background) {facts.get('compile_s', 0):.1f} s, "
             f"state {facts.get('compiled')}; warm start from the disk cache "
             + (f"{facts['warm_start_s']:.1f} s" if facts.get("warm_start_s") is not None else "not measured"),
             "", "| batch | eager s/img | compiled s/img | eager img/s | compiled img/s | compiled/eager speed | "
             "% peak eager | % peak compiled | peak VRAM eager | peak VRAM compiled | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        eager, compiled = per_image(row.eager_s, row.batch), per_image(row.compiled_s, row.batch)

        def cell(value: float | None, pattern: str) -> str:
            return pattern.format(value) if value is not None else "n/a"

        def share(seconds: float | None) -> str:
            return cell(flops / seconds / (peak * 1e12) * 100 if seconds and peak and flops else None, "{:.1f} %")

        def gib(value: int | None) -> str:
            return cell(value / 2**30 if value else None, "{:.2f} GiB")

        eager_rate, compiled_rate = 1 / eager if eager else None, 1 / compiled if compiled else None
        lines.append(f"| {row.batch} | {cell(eager, '{:.3f}')} | {cell(compiled, '{:.3f}')} | "
                     f"{cell(eager_rate, '{:.2f}')} | {cell(compiled_rate, '{:.2f}')} | "
                     f"{cell(eager / compiled if eager and compiled else None, '{:.2f}x')} | {share(eager)} | "
                     f"{share(compiled)} | {gib(row.eager_vram)} | {gib(row.compiled_vram)} | {row.note} |")
    return lines


def goals(rows: list[Row]) -> list[str]:
    """Issue 14's SD 1.5 goals on this card (H100 or H200): batch 1 at most 0.35 s/image, batched 8 img/s or more."""
    single = next((per_image(row.compiled_s or row.eager_s, 1) for row in rows if row.batch == 1), None)
    rates = [1 / value for row in rows if (value := per_image(row.compiled_s or row.eager_s, row.batch))]
    best = max(rates, default=None)
    return ["", f"goal batch 1 <= 0.35 s/image: {f'{single:.3f}' if single else 'n/a'} -> "
                f"{'met' if single and single <= 0.35 else 'not met'}",
            f"goal batched >= 8 img/s: best {f'{best:.2f}' if best else 'n/a'} -> "
            f"{'met' if best and best >= 8 else 'not met'}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sd15,sdxl", help="sd15 and/or sdxl (default both)")
    parser.add_argument("--batches", default="1,2,4,8,16", help="images per call (default 1,2,4,8,16)")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds per batch (default 3)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--compile-mode", default="reduce-overhead", choices=("reduce-overhead", "max-autotune",
                                                                              "default"))
    parser.add_argument("--compile-timeout", type=float, default=1800.0, help="seconds to wait for the buckets")
    parser.add_argument("--no-warm-start", action="store_true", help="skip the second process (warm-start time)")
    parser.add_argument("--cpu-smoke", action="store_true", help="builtin:tiny on the CPU, dynamo's eager backend")
    parser.add_argument("--warm-start-only", choices=sorted(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch_list = sorted({int(value) for value in args.batches.split(",")})
    if args.warm_start_only:
        return warm_start_only(args)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(f"bench.gpu: no CUDA device is visible (torch {torch.__version__}); run it on a GPU machine, or use "
              "--cpu-smoke to check the code path", file=sys.stderr)
        return 2
    if args.cpu_smoke:
        return smoke(args)
    name = torch.cuda.get_device_name(0)
    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    peak = peak_tflops(name)
    print(f"## {name}, {total_gib:.0f} GiB, driver {driver_version()}, torch {torch.__version__}, diffusers "
          f"{_version('diffusers')}; dense fp16 peak {f'{peak:g} TFLOPS' if peak else 'n/a (unknown card)'}; "
          f"compile mode {args.compile_mode}")
    for key in args.models.split(","):
        model = MODELS[key]
        if total_gib < model.min_vram_gib:
            print(f"\n{model.source}: skipped, {total_gib:.0f} GiB of VRAM < {model.min_vram_gib:g} GiB")
            continue
        rows, facts = measure_model(model, args, "cuda")
        if not args.no_warm_start and facts.get("compiled") == "ready":
            facts["warm_start_s"] = warm_start(model, args, facts["cache_dir"])
        print("\n" + "\n".join(report(model, rows, facts, peak, args.steps)), flush=True)
        if key == "sd15":
            print("\n".join(goals(rows)), flush=True)
        torch.cuda.empty_cache()
    return 0


def smoke(args: argparse.Namespace) -> int:
    """The same measurement on builtin:tiny, on the CPU, with dynamo's eager backend instead of inductor."""
    real_compile = torch.compile

    def eager_backend(module: Any, **options: Any) -> Any:
        return real_compile(module, backend="eager", dynamic=options.get("dynamic"))

    torch.compile = eager_backend
    try:
        args.batch_list, args.runs, args.steps = [1, 2], 1, 2
        rows, facts = measure_model(SMOKE, args, "cpu")
    finally:
        torch.compile = real_compile
    print("\n".join(report(SMOKE, rows, facts, None, args.steps)))
    return 0 if facts.get("compiled") == "ready" and all(row.eager_s and row.compiled_s for row in rows) else 1


def driver_version() -> str:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=False)
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
