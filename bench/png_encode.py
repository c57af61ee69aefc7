"""What a stored PNG costs: Pillow's encoder against ``quick_png``, side by side in one run.

    python -m bench.png_encode [--size 512] [--runs 20]

Each image the bot finishes is encoded once, on the way to its upload (``ResultFiles``): that encode sits
between "images ready" and "upload started". Both encoders run on the same images at zlib levels 1 (what the
bot stores) and 6 (the CLI's files), alternating, and the median of ``--runs`` is kept. The images:

- ``noise``: uniform noise, what the builtin models with random weights make (the tests' and benches' images);
- ``photo``: smooth colour gradients with a little grain, closer to what a trained model makes;
- ``flat``: flat shapes on a plain background, with some text (an illustration or a logo).

It prints milliseconds and bytes per encode and the ratios quick / Pillow (time below 1 is faster; bytes near 1
is the same size). ``quick_png`` deflates a big image in parts on up to ``DEFLATE_THREADS`` threads, at level 1
with ISA-L where it is installed; the last columns time it on one thread, and on one thread with zlib alone
(``--zlib`` leaves ISA-L out of every column).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from generation import imagefiles
from generation.imagefiles import quick_png

PARAMETERS = "a red fox in snow\nSteps: 25, Sampler: PNDM, CFG scale: 7.0, Seed: 5, Size: 512x512, Model: sd15"


def images(size: int) -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    axis = np.linspace(0, 6, size)
    waves = np.sin(axis[None, :, None] * np.array([1.0, 1.3, 0.7]) + axis[:, None, None]) * 100 + 128
    photo = np.clip(waves + rng.normal(0, 6, waves.shape), 0, 255).astype(np.uint8)
    flat = Image.new("RGB", (size, size), (240, 240, 250))
    draw = ImageDraw.Draw(flat)
    for index in range(20):
        x, y = index * size // 25, index * size // 34
        draw.ellipse((x, y, x + size // 4, y + size // 6), fill=(index * 12, 100, 200 - index * 8))
    draw.text((10, 10), "a red fox in snow " * 4, fill=(0, 0, 0))
    return {"noise": Image.fromarray(noise), "photo": Image.fromarray(photo), "flat": flat}


def pillow_png(image: Image.Image, level: int) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", PARAMETERS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=level)
    return buffer.getvalue()


def timed(encode: Callable[[], bytes], runs: list[float]) -> int:
    start = time.perf_counter()
    data = encode()
    runs.append(time.perf_counter() - start)
    return len(data)


def quick_png_with(image: Image.Image, level: int, *, threads: int, isal: bool) -> bytes:
    saved = imagefiles.DEFLATE_THREADS, imagefiles.isal_zlib
    imagefiles.DEFLATE_THREADS = threads
    if not isal:
        imagefiles.isal_zlib = None  # type: ignore[assignment]
    try:
        return quick_png(image, PARAMETERS, level=level)
    finally:
        imagefiles.DEFLATE_THREADS, imagefiles.isal_zlib = saved


def main(size: int, runs: int, isal: bool) -> None:
    isal = isal and imagefiles.isal_zlib is not None
    threads = imagefiles.DEFLATE_THREADS
    print(f"{size}x{size} RGB, median of {runs} encodes each, alternating; quick_png on up to {threads} threads, "
          f"level 1 with {'ISA-L' if isal else 'zlib'}")
    print(f"{'image':>6} {'level':>5} {'Pillow ms':>10} {'quick ms':>9} {'time ratio':>11} "
          f"{'Pillow bytes':>13} {'quick bytes':>12} {'bytes ratio':>12} {'1 thread ms':>12} {'zlib 1 thread ms':>17}")
    for name, image in images(size).items():
        for level in (1, 6):
            pillow: list[float] = []
            quick: list[float] = []
            single: list[float] = []
            plain: list[float] = []
            for _ in range(runs):
                pillow_bytes = timed(lambda im=image, lv=level: pillow_png(im, lv), pillow)
                quick_bytes = timed(lambda im=image, lv=level: quick_png_with(im, lv, threads=threads, isal=isal),
                                    quick)
                timed(lambda im=image, lv=level: quick_png_with(im, lv, threads=1, isal=isal), single)
                timed(lambda im=image, lv=level: quick_png_with(im, lv, threads=1, isal=False), plain)
            slow, fast = statistics.median(pillow), statistics.median(quick)
            print(f"{name:>6} {level:>5} {slow * 1000:>10.1f} {fast * 1000:>9.1f} {fast / slow:>11.2f} "
                  f"{pillow_bytes:>13} {quick_bytes:>12} {quick_bytes / pillow_bytes:>12.3f} "
                  f"{statistics.median(single) * 1000:>12.1f} {statistics.median(plain) * 1000:>17.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--zlib", action="store_true", help="leave ISA-L out: zlib in every column")
    args = parser.parse_args()
    main(args.size, args.runs, isal=not args.zlib)
