"""How long one 512x512 image takes on this machine's CPU: ``sd15`` against ``fast``, side by side.

``python -m bench.cpu_first_image`` builds SD 1.5's full-size architecture with random weights
(``builtin:sd15-random``: the same work per step as the real weights, no download) and times, in one
run: the shipped ``sd15`` entry's settings (25 steps, guidance 7, so two UNet passes a step) and the
``fast`` entry's (LCM, 4 steps, guidance 1, one pass a step; its merged LCM-LoRA costs nothing per
step). ``sd15``'s denoising is measured over ``--sd15-steps`` steps and scaled to 25, which the
output says; ``fast`` runs its 4 steps in full. The ratio printed is what IMAGINE_MODEL=fast saves.
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from generation.config import ExecutorConfig, GenerationConfig, ModelConfig
from generation.request import GenerationRequest, validate
from generation.runner import Runner


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _seconds(runner: Runner, name: str, model: ModelConfig, steps: int) -> tuple[float, float]:
    request = validate(GenerationRequest("a red fox in snow", steps=steps, seed=1), name, model)
    outcome = runner.run([request])[0]
    if isinstance(outcome, Exception):
        raise SystemExit(f"{name}: {outcome}")
    return outcome.timings.denoise_s, outcome.timings.decode_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15-steps", type=int, default=3, help="steps timed for sd15 (scaled to 25)")
    args = parser.parse_args()
    base = {"source": "builtin:sd15-random", "max_pixels": 512 * 512}
    sd15 = ModelConfig(**base, default_guidance=7.0)
    fast = ModelConfig(**base, scheduler="lcm", default_steps=4, max_steps=8, default_guidance=1.0)
    config = GenerationConfig(default_model="sd15", models={"sd15": sd15, "fast": fast},
                              executor=ExecutorConfig(device="cpu", preview_every_steps=0))
    runner = Runner(config)
    _seconds(runner, "fast", fast, 1)  # warm-up: first-call costs are not what a member waits for
    fast_denoise, fast_decode = _seconds(runner, "fast", fast, 4)
    sd15_denoise, sd15_decode = _seconds(runner, "sd15", sd15, args.sd15_steps)
    sd15_total = sd15_denoise / args.sd15_steps * 25 + sd15_decode
    fast_total = fast_denoise + fast_decode
    print(f"machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"sd15, 512x512, 25 steps, guidance 7: {sd15_total:.1f} s per image "
          f"({sd15_denoise / args.sd15_steps:.2f} s per step measured over {args.sd15_steps}, "
          f"decode {sd15_decode:.1f} s)")
    print(f"fast, 512x512, 4 steps (LCM), guidance 1: {fast_total:.1f} s per image "
          f"({fast_denoise / 4:.2f} s per step, decode {fast_decode:.1f} s)")
    print(f"ratio sd15/fast: {sd15_total / fast_total:.1f}x")


if __name__ == "__main__":
    main()
