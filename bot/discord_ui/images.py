"""Images for uploads: result grids, attachments sized to the upload limit, parameters they carry, and what a
server's safety mode does to a flagged image (``veiled``: blurred, or a notice in its place; ``spoiler_name``).

Pure functions without Discord I/O. ``make_grid`` and ``encode_to_fit`` are CPU-heavy and sync:
callers run them in a thread (``asyncio.to_thread``) so the event loop never blocks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, features

from generation.imagefiles import encode_with_parameters
from generation.imagefiles import read_parameters as read_parameters  # re-exported: the bot's callers read here

_log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # Discord's standard per-file limit
UPLOAD_MARGIN = 16 * 1024  # headroom below the limit, so rounding on Discord's side never gives a 413
_MIN_SIDE = 64
SPOILER_PREFIX = "SPOILER_"  # Discord hides an attachment so named until the viewer clicks it
NOTICE_COLOUR = (43, 45, 49)  # Discord's dark background: a withheld image's cell reads as empty


@dataclass(frozen=True)
class EncodedImage:
    """An attachment ready to upload: ``data`` is at most the limit it was encoded for."""

    data: bytes
    filename: str
    format: str  # "PNG", "WEBP" or "JPEG"
    scaled: bool  # True when the image had to be made smaller than the original to fit


def upload_limit(attachment_size_limit: int | None) -> int:
    """Bytes one attachment may take: the interaction's limit (else 10 MiB) less a safety margin."""
    limit = attachment_size_limit if attachment_size_limit and attachment_size_limit > 0 else DEFAULT_UPLOAD_LIMIT
    return max(limit - UPLOAD_MARGIN, limit // 2)


def make_grid(images: Sequence[Image.Image]) -> Image.Image:
    """One image for the result message: the image itself, 1x2 for two, 2x2 for three or four."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    if len(images) == 1:
        return images[0]
    columns, rows = (2, 1) if len(images) == 2 else (2, math.ceil(len(images) / 2))
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images)
    grid = Image.new("RGB", (cell_w * columns, cell_h * rows), (0, 0, 0))
    for index, image in enumerate(images):
        x, y = (index % columns) * cell_w, (index // columns) * cell_h
        # Centre smaller images in their cell (all are usually the same size).
        grid.paste(image.convert("RGB"), (x + (cell_w - image.width) // 2, y + (cell_h - image.height) // 2))
    return grid


def _encode(image: Image.Image, fmt: str, parameters_text: str, *, lossless: bool, quality: int) -> bytes:
    return encode_with_parameters(image, fmt, parameters_text, lossless=lossless, quality=quality)


def encode_to_fit(
    image: Image.Image, limit_bytes: int, parameters_text: str, *, basename: str = "imagine"
) -> EncodedImage:
    """The best encoding of ``image`` that fits ``limit_bytes``, carrying ``parameters_text``.

    Tries PNG ("parameters" text chunk), lossless WebP, quality-90 WebP (JPEG without WebP support),
    then smaller sizes. Raises ``ValueError`` only when even a tiny image cannot fit the limit.
    """
    lossy = "WEBP" if features.check("webp") else "JPEG"
    attempts = [("PNG", True, 100), ("WEBP", True, 80), (lossy, False, 90)] if lossy == "WEBP" else [
        ("PNG", True, 100), (lossy, False, 90)]
    for fmt, lossless, quality in attempts:
        data = _encode(image, fmt, parameters_text, lossless=lossless, quality=quality)
        if len(data) <= limit_bytes:
            return EncodedImage(data, _filename(basename, fmt), fmt, scaled=False)
    current = image
    while min(current.size) > _MIN_SIDE:
        # Bytes scale with pixels: aim a little under the limit, and shrink at least 10% per try.
        scale = min(0.9, math.sqrt(limit_bytes / len(data)) * 0.95)
        size = (max(_MIN_SIDE, int(current.width * scale)), max(_MIN_SIDE, int(current.height * scale)))
        current = image.resize(size, Image.Resampling.LANCZOS)
        data = _encode(current, lossy, parameters_text, lossless=False, quality=85)
        if len(data) <= limit_bytes:
            _log.info("image scaled to %sx%s to fit %d bytes", *current.size, limit_bytes)
            return EncodedImage(data, _filename(basename, lossy), lossy, scaled=True)
    raise ValueError(f"image cannot fit {limit_bytes} bytes even at {current.width}x{current.height}")


def _filename(basename: str, fmt: str) -> str:
    return f"{basename}.{ {'PNG': 'png', 'WEBP': 'webp', 'JPEG': 'jpg'}[fmt] }"


def blurred(image: Image.Image) -> Image.Image:
    """A strong Gaussian blur: colours and rough shapes stay, nothing in the picture can be made out. The radius
    grows with the image (a twelfth of its long side), so a 512 px image blurs as much as a 64 px one."""
    radius = max(8, max(image.size) // 12)
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius))


def notice(size: tuple[int, int], text: str = "withheld") -> Image.Image:
    """What stands in a grid for an image withheld by a server's safety setting: a plain tile with one word."""
    tile = Image.new("RGB", size, NOTICE_COLOUR)
    draw = ImageDraw.Draw(tile)
    left, top, right, bottom = draw.textbbox((0, 0), text)
    draw.text(((size[0] - (right - left)) / 2, (size[1] - (bottom - top)) / 2), text, fill=(181, 186, 193))
    return tile


def spoiler_name(filename: str) -> str:
    return filename if filename.startswith(SPOILER_PREFIX) else f"{SPOILER_PREFIX}{filename}"
