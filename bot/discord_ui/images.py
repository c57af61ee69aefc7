"""Images for uploads: result grids, attachments sized to the upload limit, parameters they carry.

Pure functions without Discord I/O. ``make_grid`` and ``encode_to_fit`` are CPU-heavy and sync:
callers run them in a thread (``asyncio.to_thread``) so the event loop never blocks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, features

from generation.imagefiles import encode_with_parameters
from generation.imagefiles import read_parameters as read_parameters  # re-exported: the bot's callers read here

_log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # Discord's standard per-file limit
UPLOAD_MARGIN = 16 * 1024  # headroom below the limit, so rounding on Discord's side never gives a 413
_MIN_SIDE = 64


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
