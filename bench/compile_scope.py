"""Whole-UNet against regional compilation (``executor.compile_scope``), side by side in one run (issue 14).

    HF_HUB_OFFLINE=1 python -m bench.compile_scope            # GPU: builtin:sd15-random 512², fp16, 25 steps
    HF_HUB_OFFLINE=1 python -m bench.compile_scope --cpu      # CPU: builtin:tiny 64², fp32, inductor's C++ backend

For each scope (``model``: the whole UNet is one graph per bucket; ``blocks``: only its repeated transformer
blocks are compiled) two fresh processes run one after the other on one new compile cache: the first compiles every
bucket cold, the second warms them from the disk cache (what a restart pays). The first also times eager and
compiled calls alternately per batch. It prints the compile times, s/image and the ratios blocks/model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Literal, cast

import torch

from bench.gpu import MODELS, SMOKE, Calls, make_config, timed_run
from generation.runner import Runner

Scope = Literal["model", "blocks"]


def one(args: argparse.Namespace) -> int:
    """One process: compile (or warm from the cache), then time eager and compiled calls; a JSON line."""
    device = cast(Literal["cuda", "cpu"], "cpu" if args.cpu else "cuda")
    model = SMOKE if args.cpu else MODELS["sd15"]
    config = make_config(model, device=device, batches=args.batch_list, steps=args.steps, mode=args.compile_mode,
                         cache_dir=args.cache_dir, scope=args.one)
    calls = Calls()
    runner = Runner(config, fault_hook=calls)
    try:
        loaded = runner.model(None)
        started = time.perf_counter()
        runner.prepare(None)  # the eager warm-up call, then every bucket compiled in the background
        ready = runner.wait_compiled(args.compile_timeout)
        compile_s = time.perf_counter() - started
        compiled = loaded.compiled
        if not ready or compiled is None or not compiled.ready:
            print(json.dumps({"compile_s": None, "state": compiled.state if compiled else "off"}))
            return 1
        result: dict[str, Any] = {"compile_s": compile_s, "eager": {}, "compiled": {}}
        if args.time_calls:
            for batch in args.batch_list:
                samples: dict[str, list[float]] = {"eager": [], "compiled": []}
                for round_ in range(args.runs):
                    for kind in (("compiled", "eager") if round_ % 2 == 0 else ("eager", "compiled")):
                        loaded.compiled = compiled if kind == "compiled" else None
                        samples[kind].append(timed_run(runner, calls, batch, seed=10 + round_) / batch)
                loaded.compiled = compiled
                for kind, values in samples.items():
                    result[kind][str(batch)] = statistics.median(values)
        print(json.dumps(result))
        return 0
    finally:
        runner.close()


def measure(scope: Scope, args: argparse.Namespace) -> tuple[dict[str, Any], float | None]:
    """(the cold process's figures, the warm start's seconds) for one scope, on a cache of its own."""
    cache_dir = tempfile.mkdtemp(prefix=f"imagine-scope-{scope}-")

    def run(time_calls: bool) -> dict[str, Any]:
        command = [sys.executable, "-m", "bench.compile_scope", "--one", scope, "--cache-dir", cache_dir,
                   "--batches", args.batches, "--steps", str(args.steps), "--runs", str(args.runs),
                   "--compile-mode", args.compile_mode, *(["--cpu"] if args.cpu else []),
                   *(["--time-calls"] if time_calls else [])]
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.compile_timeout + 900,
                              check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"{scope}: {done.stderr.strip().splitlines()[-1:]}")
        return cast(dict[str, Any], json.loads(lines[-1]))

    cold = run(time_calls=True)
    warm = run(time_calls=False)
    return cold, warm.get("compile_s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compile_scope", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="builtin:tiny on the CPU (inductor's C++ backend)")
    parser.add_argument("--batches", default=None, help="images per call (default GPU 1,4; CPU 1,2)")
    parser.add_argument("--steps", type=int, default=None, help="default GPU 25, CPU 10")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds per batch (default 3)")
    parser.add_argument("--compile-mode", default=None, choices=("reduce-overhead", "max-autotune", "default"),
                        help="default GPU reduce-overhead, CPU default")
    parser.add_argument("--compile-timeout", type=float, default=3600.0)
    parser.add_argument("--one", choices=("model", "blocks"), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--time-calls", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batches = args.batches or ("1,2" if args.cpu else "1,4")
    args.steps = args.steps or (10 if args.cpu else 25)
    args.compile_mode = args.compile_mode or ("default" if args.cpu else "reduce-overhead")
    args.batch_list = sorted({int(value) for value in args.batches.split(",")})
    if args.one:
        return one(args)
    if not args.cpu and not torch.cuda.is_available():
        print("bench.compile_scope: no CUDA device is visible; run it on a GPU machine, or pass --cpu",
              file=sys.stderr)
        return 2
    where = "CPU, builtin:tiny 64²" if args.cpu else f"{torch.cuda.get_device_name(0)}, builtin:sd15-random 512²"
    print(f"## compile scope: {where}, {args.steps} steps, batches {args.batches}, mode {args.compile_mode}, "
          f"torch {torch.__version__}")
    figures = {scope: measure(scope, args) for scope in ("model", "blocks")}
    print("\n| scope | cold compile s | warm start s | " + " | ".join(
        f"batch {b} eager s/img | batch {b} compiled s/img" for b in args.batch_list) + " |")
    print("| --- | --- | --- | " + " | ".join("--- | ---" for _ in args.batch_list) + " |")
    for scope, (cold, warm_s) in figures.items():
        cells = [f"{cold['eager'][str(b)]:.4f} | {cold['compiled'][str(b)]:.4f}" for b in args.batch_list]
        print(f"| {scope} | {cold['compile_s']:.1f} | {warm_s:.1f} | " + " | ".join(cells) + " |"
              if warm_s is not None else f"| {scope} | {cold['compile_s']:.1f} | failed | " + " | ".join(cells) + " |")
    (model, model_warm), (blocks, blocks_warm) = figures["model"], figures["blocks"]
    print(f"\nblocks/model: cold compile {blocks['compile_s'] / model['compile_s']:.2f}x"
          + (f", warm start {blocks_warm / model_warm:.2f}x" if model_warm and blocks_warm else ""))
    for batch in args.batch_list:
        key = str(batch)
        print(f"batch {batch}: compiled over eager, model {model['eager'][key] / model['compiled'][key]:.2f}x, "
              f"blocks {blocks['eager'][key] / blocks['compiled'][key]:.2f}x; s/img blocks/model "
              f"{blocks['compiled'][key] / model['compiled'][key]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
