"""Images per second by batch size and shape bucket on this machine, and the ``max_batch_images`` to configure.

    python -m bench.batch_sizes --model sd15                     # config.yaml's sd15, its buckets, batches 1/2/4/8
    python -m bench.batch_sizes --model sd15 --out sd15-batches.yaml --runs 5
    python -m bench.batch_sizes --model builtin:tiny --sizes 64x64 --batches 1,2 --steps 2 --device cpu   # smoke

Buckets are the shapes the bot serves for the model: its default size and the configured aspects (``bot.aspects``)
rescaled to its pixel count, as /imagine does; ``--sizes`` names others. For each bucket and batch size, one
warm-up call, then ``--runs`` timed calls of one request of that many images through ``generation.runner.Runner``
(the executor's own code, one pipeline call per batch), previews off; the median gives images/s.

The choice: in each bucket, the smallest batch size whose images/s is within ``--tolerance`` (5 %) of the bucket's
best, since a larger batch gains nothing there and only makes everyone in it wait longer; the model's value is the
largest of those (a smaller one would cost throughput in the buckets where bigger batches pay), never above a
batch size that failed in some bucket. The scheduler then caps a batch of this model at
min(executor.max_batch_images, models.<name>.max_batch_images).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

from bot.core.config import AppConfig, load_config
from generation.config import GenerationConfig, ModelConfig
from generation.errors import ImagineError
from generation.request import GenerationRequest, validate
from generation.runner import Runner

MIN_SIDE = 64  # the smallest side generation.request.validate accepts


def bucket_sizes(aspects: dict[str, str], model: ModelConfig) -> list[tuple[int, int]]:
    """The model's default size, then each configured aspect size rescaled to the model's pixel count the way
    /imagine does it (``bot/features/imagine/compose.py``; a test holds the two together), without repeats."""
    base = model.default_width * model.default_height
    sizes = [(model.default_width, model.default_height)]
    for size in aspects.values():
        width, height = (int(part) for part in size.split("x"))
        factor = max(math.sqrt(base / (width * height)), MIN_SIDE / max(1, min(width, height)))
        multiple = model.size_multiple
        scaled = (max(multiple, round(width * factor / multiple) * multiple),
                  max(multiple, round(height * factor / multiple) * multiple))
        if scaled not in sizes:
            sizes.append(scaled)
    return sizes


@dataclass
class Table:
    """images/s per (width, height) bucket and batch size; None where the call failed."""

    rates: dict[tuple[int, int], dict[int, float | None]] = field(default_factory=dict)
    peak_vram: dict[tuple[int, int], dict[int, int]] = field(default_factory=dict)

    def batch_sizes(self) -> list[int]:
        return sorted({size for row in self.rates.values() for size in row})


def knee(row: dict[int, float | None], tolerance: float, ceiling: int) -> int | None:
    """The smallest batch size (at most ``ceiling``) within ``tolerance`` of the row's best images/s."""
    ran = {size: rate for size, rate in row.items() if rate is not None and size <= ceiling}
    if not ran:
        return None
    best = max(ran.values())
    return min(size for size, rate in ran.items() if rate >= (1 - tolerance) * best)


def choose(table: Table, tolerance: float = 0.05) -> int | None:
    """The model's max_batch_images: the largest per-bucket knee, below the first size that failed anywhere."""
    ceiling = 0
    for size in table.batch_sizes():
        if any(row.get(size) is None for row in table.rates.values()):
            break
        ceiling = size
    knees = [knee(row, tolerance, ceiling) for row in table.rates.values()]
    found = [size for size in knees if size is not None]
    return max(found) if found and ceiling else None


def measure(runner: Runner, name: str, model: ModelConfig, width: int, height: int, images: int, steps: int,
            runs: int) -> tuple[float | None, int]:
    """images/s of one ``images``-image request at width x height (None if it failed), and peak VRAM bytes."""
    request = validate(GenerationRequest("a red fox in snow, photo", width=width, height=height, steps=steps,
                                         seed=1, count=images), name, model)
    cuda = torch.cuda.is_available() and runner.model(name).placement.is_cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for attempt in range(1 + runs):  # the first call warms up (kernels, allocator, this shape)
        started = time.perf_counter()
        [outcome] = runner.run([request])
        if isinstance(outcome, ImagineError):
            print(f"  {width}x{height} batch {images}: failed: {outcome}", file=sys.stderr)
            return None, 0
        if attempt:
            seconds.append(time.perf_counter() - started)
    peak = int(torch.cuda.max_memory_allocated()) if cuda else 0
    return images / statistics.median(seconds), peak


def run_table(config: GenerationConfig, name: str, sizes: Sequence[tuple[int, int]], batches: Sequence[int],
              steps: int | None, runs: int) -> Table:
    # One pipeline call per batch (no split by the executor's usual limit), no previews: the bare throughput.
    executor = config.executor.model_copy(update={"max_batch_images": max(batches), "preview_every_steps": 0})
    runner = Runner(config.model_copy(update={"executor": executor}))
    model = config.models[name]
    table = Table()
    try:
        for width, height in sizes:
            for images in batches:
                rate, peak = measure(runner, name, model, width, height, images, steps or model.default_steps, runs)
                table.rates.setdefault((width, height), {})[images] = rate
                table.peak_vram.setdefault((width, height), {})[images] = peak
                shown = "failed" if rate is None else f"{rate:.3f} images/s"
                print(f"  {width}x{height} batch {images}: {shown}", flush=True)
    finally:
        runner.close()
    return table


def render(table: Table, name: str, chosen: int | None, header: str, tolerance: float) -> str:
    """The table as YAML comments, then the snippet that config.yaml's ``models:`` entry can take."""
    sizes = table.batch_sizes()
    lines = [f"# python -m bench.batch_sizes --model {name}: {header}", "# images/s by batch size"
             + (", peak VRAM GiB in brackets" if any(any(row.values()) for row in table.peak_vram.values()) else ""),
             "# bucket     " + "".join(f"{size:>16}" for size in sizes) + "   knee"]
    for (width, height), row in table.rates.items():
        cells = []
        for size in sizes:
            rate, peak = row.get(size), table.peak_vram[(width, height)].get(size, 0)
            cell = "failed" if rate is None else f"{rate:.3f}" + (f" [{peak / 2**30:.1f}]" if peak else "")
            cells.append(f"{cell:>16}")
        found = knee(row, tolerance, max(sizes))
        lines.append(f"# {f'{width}x{height}':<11}" + "".join(cells) + f"   {found if found is not None else '-'}")
    lines.append(f"# max_batch_images: the largest knee (smallest batch within {tolerance:.0%} of the bucket's best)")
    if chosen is None:
        lines.append("# no batch size ran in every bucket: nothing to configure")
        return "\n".join(lines) + "\n"
    lines += ["models:", f"  {name}:", f"    max_batch_images: {chosen}"]
    return "\n".join(lines) + "\n"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        width, _, height = part.strip().partition("x")
        sizes.append((int(width), int(height)))
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_sizes", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a configured model name or source (default: the config's default model)")
    parser.add_argument("--config", type=Path, default=Path(os.environ.get("IMAGINE_CONFIG", "config.yaml")))
    parser.add_argument("--sizes", type=parse_sizes, help="WxH,WxH,... (default: the model's buckets, see above)")
    parser.add_argument("--batches", default="1,2,4,8", help="batch sizes (default 1,2,4,8)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's default_steps)")
    parser.add_argument("--runs", type=int, default=3, help="timed calls per cell after one warm-up (default 3)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="'as good as the best' (default 0.05)")
    parser.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], help="override executor.device")
    parser.add_argument("--out", type=Path, help="also write the YAML snippet to this file")
    args = parser.parse_args(argv)
    app = load_config(args.config) if args.config.exists() else AppConfig()
    generation = app.generation
    if args.device:
        generation = generation.model_copy(update={"executor": generation.executor.model_copy(
            update={"device": args.device})})
    name, model = generation.model(args.model)
    if name not in generation.models:  # a raw source: measured under the name the config would give it
        generation = generation.model_copy(update={"models": {**generation.models, name: model}})
    batches = sorted({int(size) for size in args.batches.split(",")})
    sizes = args.sizes or bucket_sizes(app.bot.aspects, model)
    device = generation.executor.device
    where = torch.cuda.get_device_name() if torch.cuda.is_available() and device in ("auto", "cuda") else device
    header = (f"{where}, torch {torch.__version__}, {args.steps or model.default_steps} steps, median of "
              f"{args.runs} runs")
    print(f"{name} ({model.source}) on {header}; buckets {', '.join(f'{w}x{h}' for w, h in sizes)}; "
          f"batches {', '.join(map(str, batches))}", flush=True)
    table = run_table(generation, name, sizes, batches, args.steps, args.runs)
    snippet = render(table, name, choose(table, args.tolerance), header, args.tolerance)
    print(snippet, end="")
    if args.out is not None:
        args.out.write_text(snippet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
