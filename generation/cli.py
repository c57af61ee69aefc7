"""``python -m generation PROMPT [options]``: one-off images through the synchronous core.

Exit codes: 0 done; 2 bad input or set-up (arguments, config file, request fields, input image, a
model that cannot be loaded: offline and not cached, gated, missing); 1 the generation failed; 130
interrupted. The config is ``--config``, else ``IMAGINE_CONFIG``, else ``./config.yaml`` when present
(as the bot reads it), else the built-in defaults.

``--out`` is a file whose name says its format (``.png``, ``.webp``, ``.jpg``/``.jpeg``; several images get
``-1``, ``-2`` ... before the suffix) or a folder (``imagine-SEED.png`` in it). Every file carries its
parameters where SD tools read them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn, TextIO

from PIL import Image

from generation.config import SCHEDULERS, GenerationConfig, load_generation_config
from generation.errors import ConfigError, ImagineError, InvalidRequest, ModelLoadError
from generation.imagefiles import ALLOWED_FORMATS, encode_with_parameters, input_image_problem
from generation.request import MAX_INIT_IMAGE_SIDE, GenerationRequest, GenerationResult, ProgressEvent, validate
from generation.warmup import DownloadProgress

_log = logging.getLogger(__name__)
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage dump: say what was wrong and point at --help.
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see --help)\n")


class BadInput(Exception):
    """A CLI-level input problem (exit 2)."""


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 768x512") from None
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m generation", description="Generate images from a prompt with Stable Diffusion.")
    parser.add_argument("prompt")
    parser.add_argument("--model", help="configured model name or a source "
                        "(default: IMAGINE_MODEL, else the config's default, else builtin:tiny)")
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--size", type=_size, help="WIDTHxHEIGHT, e.g. 768x512")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--scheduler", choices=SCHEDULERS)
    parser.add_argument("--init", type=Path, help="input image for image-to-image")
    parser.add_argument("--strength", type=float, help="how much of the input image to repaint (0.05 to 1)")
    parser.add_argument("--lora", action="append", default=[], metavar="NAME[:WEIGHT]",
                        help="a LoRA from the config's loras: (repeatable); weight default: its default_weight")
    parser.add_argument("--out", type=Path, default=Path("out"),
                        help="a .png, .webp or .jpg file (several images: NAME-1, NAME-2, ...) or a folder "
                        "(default: out/)")
    parser.add_argument("--config", type=Path,
                        help="config.yaml (default: env IMAGINE_CONFIG, else ./config.yaml, else built-in)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser


def _config(args: argparse.Namespace) -> GenerationConfig:
    path = args.config or (Path(os.environ["IMAGINE_CONFIG"]) if os.environ.get("IMAGINE_CONFIG") else None)
    if path is None and Path("config.yaml").is_file():
        path = Path("config.yaml")
    config = load_generation_config(path)
    env_model = os.environ.get("IMAGINE_MODEL")
    return config.with_default_model(env_model) if env_model else config


def _request(args: argparse.Namespace, config: GenerationConfig) -> GenerationRequest:
    init = None if args.init is None else _read_input_image(args.init)
    width, height = args.size if args.size else (None, None)
    request = GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative, width=width, height=height, steps=args.steps,
        guidance=args.guidance, seed=args.seed, count=args.count, scheduler=args.scheduler,
        init_image=init, strength=args.strength, loras=tuple(_lora(text, config) for text in args.lora),
    )
    name, model = config.model(args.model)
    return validate(request, name, model, loras=config)


def _lora(text: str, config: GenerationConfig) -> tuple[str, float]:
    name, _, weight = text.partition(":")
    if not weight:  # an unknown name gets 0 here and is refused by validate, with the names that fit
        return name, config.loras[name].default_weight if name in config.loras else 0.0
    try:
        return name, float(weight)
    except ValueError:
        raise BadInput(f"--lora {text}: weight {weight!r} is not a number; allowed: NAME or NAME:WEIGHT") from None


def _read_input_image(path: Path) -> bytes:
    """The input image's bytes, checked before the model loads: readable, an image, not too large."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"input image {path} cannot be read ({exc.strerror or exc}); "
                       "allowed: a PNG, JPEG or WebP file") from exc
    problem = input_image_problem(data, MAX_INIT_IMAGE_SIDE)  # no decoder but PNG, JPEG or WebP ever runs
    if problem is None:
        return data
    if problem.kind == "too_large":
        width, height = problem.size
        reason = f"is {width}x{height}; allowed: at most {MAX_INIT_IMAGE_SIDE} pixels on each side"
    elif problem.kind == "damaged":
        reason = "is damaged and cannot be decoded; allowed: a whole PNG, JPEG or WebP file"
    else:
        reason = f"is {problem.other or 'not an image'}; allowed: {ALLOWED_FORMATS}"
    raise BadInput(f"input image {path} {reason}")


FILE_FORMATS = {".png": "PNG", ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG"}
_OUT_ALLOWED = "allowed: a .png, .webp, .jpg or .jpeg file, or a folder"


def check_out(out: Path) -> None:
    """Refuse, before any work, an ``--out`` that would not be written as asked: another image format's name
    (``x.gif`` would otherwise become a folder, as ``x.jpg`` once did), or an existing file that is no image."""
    suffix = out.suffix.lower()
    if out.is_dir() or suffix in FILE_FORMATS:
        return
    if suffix in Image.registered_extensions():
        raise BadInput(f"--out {out}: {suffix} files cannot be written; {_OUT_ALLOWED}")
    if out.exists():
        raise BadInput(f"--out {out} is an existing file, not a folder; {_OUT_ALLOWED}")


def output_files(out: Path, seeds: list[int]) -> list[tuple[Path, str]]:
    """Where each image goes and in which format: a file named ``out`` (numbered when there are several), or
    ``imagine-SEED.png`` files in the folder ``out`` (one that exists stays a folder, whatever its name)."""
    fmt = FILE_FORMATS.get(out.suffix.lower())
    if fmt is None or out.is_dir():
        return [(out / f"imagine-{seed}.png", "PNG") for seed in seeds]
    if len(seeds) == 1:
        return [(out, fmt)]
    return [(out.with_name(f"{out.stem}-{index + 1}{out.suffix}"), fmt) for index in range(len(seeds))]


class _ProgressBar:
    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self._stream, self._width, self._open = stream, width, False

    def __call__(self, event: ProgressEvent) -> None:
        filled = self._width * event.step // max(event.total, 1)
        self._stream.write(f"\r[{'#' * filled}{'.' * (self._width - filled)}] step {event.step}/{event.total}")
        self._stream.flush()
        self._open = True

    def finish(self) -> None:
        if self._open:
            self._stream.write("\n")
            self._open = False


class _DownloadBar:
    """``downloading weights: 45 % (1.9 of 4.3 GB)`` on one line, redrawn at most once per percent."""

    def __init__(self, stream: TextIO) -> None:
        self._stream, self._shown = stream, -1

    def __call__(self, progress: DownloadProgress) -> None:
        percent = int(progress.fraction * 100)
        if percent == self._shown:
            return
        self._shown = percent
        unit, size = ("GB", 1e9) if progress.total_bytes >= 1e9 else ("MB", 1e6)
        self._stream.write(f"\rdownloading weights: {percent} % ({progress.done_bytes / size:.1f} of "
                           f"{progress.total_bytes / size:.1f} {unit})")
        if percent >= 100:
            self._stream.write("\n")
        self._stream.flush()


def _save(result: GenerationResult, out: Path) -> list[Path]:
    files = output_files(out, result.seeds)
    for index, (path, fmt) in enumerate(files):
        path.parent.mkdir(parents=True, exist_ok=True)
        data = result.png_bytes(index) if fmt == "PNG" else \
            encode_with_parameters(result.images[index], fmt, result.parameters_text(index), quality=95)
        path.write_bytes(data)
    return [path for path, _ in files]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        check_out(args.out)
        config = _config(args)
        request = _request(args, config)
    except (ConfigError, InvalidRequest, BadInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # The runner imports torch and diffusers: only after the cheap checks passed.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from generation.runner import Runner

    runner = Runner(config)
    bar = _ProgressBar(sys.stderr)
    try:
        runner.model(request.model, on_download=_DownloadBar(sys.stderr))  # the first run downloads the weights
        outcome = runner.run([request], bar)[0]
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        bar.finish()
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        bar.finish()
    if isinstance(outcome, ImagineError):
        print(f"error: {outcome}", file=sys.stderr)
        return EXIT_FAILED
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    timings = outcome.timings
    for path, seed in zip(_save(outcome, args.out), outcome.seeds, strict=True):
        print(f"{path}  seed {seed}  load {timings.load_s:.2f}s  denoise {timings.denoise_s:.2f}s  "
              f"decode {timings.decode_s:.2f}s")
    return 0
