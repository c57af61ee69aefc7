"""What previews cost: generation with previews off, with the linear preview and with TAESD, side by side in
one run (issue 14: TAESD previews at the default interval must cost under 2 % of generation time).

    HF_HUB_OFFLINE=1 python -m bench.previews          # GPU: builtin:sd15-random 512², fp16, 25 steps
    HF_HUB_OFFLINE=1 python -m bench.previews --cpu    # CPU: builtin:sd15-random 256², fp32, 10 steps

Full-size SD 1.5 architecture and TAESD's (``builtin:taesd-random``), random weights, nothing downloaded. One
``Runner`` at the default interval (``preview_every_steps: 5``); per round the three kinds run in rotated order on
the same request: ``off`` passes no progress callback (the runner makes no preview), ``linear`` one with the
preview decoder taken away (the latent-to-RGB approximation), ``taesd`` one with it. Each kind's callback does
what the bot's executor thread does with an event: nothing more, the previews are made and handed over.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from generation.config import ExecutorConfig, GenerationConfig, ModelConfig
from generation.models import RANDOM_PREVIEW_DECODER
from generation.preview import linear_preview, tiny_decoder_preview
from generation.request import GenerationRequest, GenerationResult, ProgressEvent, validate
from generation.runner import Runner

KINDS = ("off", "linear", "taesd")


def make_runner(args: argparse.Namespace) -> Runner:
    side = args.size
    model = ModelConfig(source="builtin:sd15-random", family="sd1", dtype="float32" if args.cpu else "float16",
                        default_steps=args.steps, default_width=side, default_height=side, max_width=1024,
                        max_height=1024, max_pixels=1024 * 1024, preview_decoder=RANDOM_PREVIEW_DECODER)
    executor = ExecutorConfig(device="cpu" if args.cpu else "cuda", preview_every_steps=args.every,
                              max_batch_images=1)
    return Runner(GenerationConfig(default_model="sd15", models={"sd15": model}, executor=executor))


def timed(runner: Runner, kind: str, seed: int) -> tuple[float, int]:
    """Seconds of one image of ``kind``, and how many previews it made."""
    loaded = runner.model(None)
    decoder = loaded.preview_decoder
    made = 0

    def on_progress(event: ProgressEvent) -> None:
        nonlocal made
        made += sum(preview is not None for preview in event.previews)

    name, entry = runner.config.model(None)
    request = validate(GenerationRequest("a red fox in snow, photo", seed=seed), name, entry)
    if kind == "linear":
        loaded.preview_decoder = None
    try:
        started = time.perf_counter()
        [outcome] = runner.run([request], None if kind == "off" else on_progress)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    finally:
        loaded.preview_decoder = decoder
    if not isinstance(outcome, GenerationResult):
        raise RuntimeError(f"{kind}: {outcome}")
    return seconds, made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.previews", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="on the CPU (fp32, default 256², 10 steps)")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--every", type=int, default=5, help="preview_every_steps (default 5, the shipped one)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of the three kinds (default 3)")
    args = parser.parse_args(argv)
    args.size = args.size or (256 if args.cpu else 512)
    args.steps = args.steps or (10 if args.cpu else 25)
    if not args.cpu and not torch.cuda.is_available():
        print("bench.previews: no CUDA device is visible; run it on a GPU machine, or pass --cpu", file=sys.stderr)
        return 2
    runner = make_runner(args)
    try:
        if runner.model(None).preview_decoder is None:
            print("bench.previews: the TAESD decoder did not load", file=sys.stderr)
            return 1
        timed(runner, "taesd", seed=0)  # first-call costs paid once, outside the figures
        decode_s = decode_times(runner, args)
        samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
        previews: dict[str, int] = {}
        for round_ in range(args.runs):
            for offset in range(len(KINDS)):
                kind = KINDS[(round_ + offset) % len(KINDS)]
                seconds, made = timed(runner, kind, seed=1 + round_)
                samples[kind].append(seconds)
                previews[kind] = made
    finally:
        runner.close()
    where = "CPU" if args.cpu else torch.cuda.get_device_name(0)
    print(f"## previews: {where}, builtin:sd15-random {args.size}², {args.steps} steps, a preview every {args.every} "
          f"steps, {args.runs} rounds, torch {torch.__version__}\n")
    print("| previews | s/image (median) | previews made | cost over off |")
    print("| --- | --- | --- | --- |")
    off = statistics.median(samples["off"])
    for kind in KINDS:
        median = statistics.median(samples[kind])
        print(f"| {kind} | {median:.3f} | {previews[kind]} | {(median / off - 1) * 100:+.2f} % |")
    print("\nOne preview timed alone (median of 5, the image's latent size):")
    shown = max(0, (args.steps - 1) // args.every)  # previews of one image: every N steps, none at the last
    for kind, seconds in decode_s.items():
        share = shown * seconds / off * 100
        print(f"- {kind}: {seconds * 1000:.1f} ms each; {shown} per image = {share:.2f} % of the image's time")
    # Steady state: one preview per ``every`` steps, whatever the step count (no preview at the last step makes a
    # short run's share smaller, so the goal is judged on this one).
    taesd = decode_s["taesd"] / (args.every * off / args.steps)
    print(f"- taesd, steady state: one preview per {args.every} steps = {taesd * 100:.2f} % of those steps' time")
    print(f"\ngoal TAESD previews < 2 % of generation time: {taesd * 100:.2f} % (from the timed decode; the "
          f"whole-image difference above is {(statistics.median(samples['taesd']) / off - 1) * 100:+.2f} %, "
          f"within the run-to-run spread) -> {'met' if taesd < 0.02 else 'not met'} on this device")
    return 0


def decode_times(runner: Runner, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per preview of each decoder, on a latent of the image's size (what the step callback decodes)."""
    loaded = runner.model(None)
    device = "cpu" if args.cpu else "cuda"
    dtype = torch.float32 if args.cpu else torch.float16
    latent = torch.randn((4, args.size // 8, args.size // 8), device=device, dtype=dtype)
    makers = {"linear": lambda: linear_preview(latent, loaded.config.family),
              "taesd": lambda: tiny_decoder_preview(loaded.preview_decoder, latent)}
    result: dict[str, float] = {}
    for kind, make in makers.items():
        make()
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            make()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            samples.append(time.perf_counter() - started)
        result[kind] = statistics.median(samples)
    return result


if __name__ == "__main__":
    sys.exit(main())
