"""What the bot shows: image grids, attachments sized to the upload limit, and message texts.

Pure functions without Discord I/O. ``make_grid`` and ``encode_to_fit`` are CPU-heavy and sync:
callers run them in a thread (``asyncio.to_thread``) so the event loop never blocks.

Prompts are user text: every echo goes through ``sanitize_user_text`` (markdown escaped, mentions
broken with a zero-width space) even though messages are also sent with allowed mentions off.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import discord.utils
from PIL import Image, PngImagePlugin, features

_log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # Discord's standard per-file limit
UPLOAD_MARGIN = 16 * 1024  # headroom below the limit, so rounding on Discord's side never gives a 413
MESSAGE_LIMIT = 2000
_ZWSP = "\u200b"
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\x00"  # EXIF UserComment character code, as read by common SD tools
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


def _exif_with_parameters(parameters_text: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _UNICODE_PREFIX + parameters_text.encode("utf-16-be")
    return exif.tobytes()


def _encode(image: Image.Image, fmt: str, parameters_text: str, *, lossless: bool, quality: int) -> bytes:
    buffer = io.BytesIO()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters_text)
        image.save(buffer, format="PNG", pnginfo=info)
    elif fmt == "WEBP":
        exif = _exif_with_parameters(parameters_text)
        image.save(buffer, format="WEBP", lossless=lossless, quality=quality, exif=exif)
    else:
        exif = _exif_with_parameters(parameters_text)
        image.convert("RGB").save(buffer, format="JPEG", quality=quality, exif=exif)
    return buffer.getvalue()


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


def read_parameters(data: bytes) -> str | None:
    """The generation parameters an encoded image carries (PNG text chunk or EXIF UserComment)."""
    with Image.open(io.BytesIO(data)) as image:
        text = image.info.get("parameters")
        if isinstance(text, str):
            return text
        comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(comment, bytes) and comment.startswith(_UNICODE_PREFIX):
        return comment[len(_UNICODE_PREFIX) :].decode("utf-16-be", errors="replace")
    return None


def sanitize_user_text(text: str) -> str:
    """User text made safe to echo: one line, markdown escaped, no mention that could ping."""
    text = " ".join(text.split())  # newlines would allow headings, quotes and lists
    text = discord.utils.escape_mentions(discord.utils.escape_markdown(text))
    # Defence in depth beyond discord.py's patterns: any "<@" and any @everyone/@here spelling.
    text = re.sub(f"<@(?!{_ZWSP})", f"<@{_ZWSP}", text)
    return re.sub(r"@(?=everyone|here)", f"@{_ZWSP}", text, flags=re.IGNORECASE)


def _fit(text: str, budget: int) -> str:
    """``sanitize_user_text(text)`` cut (with an ellipsis) to at most ``budget`` characters."""
    safe = sanitize_user_text(text)
    if len(safe) <= budget:
        return safe

    def cut(length: int) -> str:
        # Cut the raw text, then escape: cutting escaped text could split an escape or a mention guard.
        return sanitize_user_text(text[:length]).rstrip("\\") + "…"

    low, high = 0, len(text)  # binary search: escaping lengthens text by a varying amount
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if len(cut(middle)) <= budget else (low, middle - 1)
    fitted = cut(low)
    return fitted if len(fitted) <= budget else ""


def format_duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{round(seconds)} s"
    return f"{round(seconds / 60)} min"


def result_message_text(
    prompt: str,
    requester_id: int,
    seeds: Sequence[int],
    model: str,
    size: tuple[int, int],
    steps: int,
    elapsed_s: float,
    *,
    negative: str = "",
    guidance: float | None = None,
    strength: float | None = None,
    note: str = "",
) -> str:
    """The result message: prompt, who asked, seeds, model, size, steps, time; at most 2000 chars.

    ``note`` is bot-written text (e.g. "Variation of image 2", "scaled to fit") and is not escaped.
    """
    details = [f"Seed{'s' if len(seeds) > 1 else ''} {', '.join(str(seed) for seed in seeds)}",
               f"Model {sanitize_user_text(model)}", f"{size[0]}×{size[1]}", f"{steps} steps"]
    if guidance is not None:
        details.append(f"CFG {guidance:g}")
    if strength is not None:
        details.append(f"strength {strength:g}")
    details.append(format_duration(elapsed_s))
    requester = f" — <@{requester_id}>"
    negative_line = f"\nNegative: {_fit(negative, 300)}" if negative else ""
    note_line = f"\n{note}" if note else ""
    details_line = "\n" + " · ".join(details)
    fixed = len(requester) + len(negative_line) + len(note_line) + len(details_line) + 4  # 4: bold markers
    text = f"**{_fit(prompt, MESSAGE_LIMIT - fixed)}**{requester}{negative_line}{note_line}{details_line}"
    return text[:MESSAGE_LIMIT]  # only a very long note can get here


def progress_bar(fraction: float, width: int = 12) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "▰" * filled + "▱" * (width - filled)


def progress_text(step: int, total: int, position: int | None = None, eta_s: float | None = None) -> str:
    """Status while running: a bar, the step, and (when known) the batch slot and time left.

    ``position`` is the job's slot when several jobs share one pipeline call (shown when > 0).
    """
    fraction = step / total if total > 0 else 0.0
    text = f"Generating {progress_bar(fraction)} {round(fraction * 100)}% (step {step}/{total})"
    if position is not None and position > 0:
        text += f" · batch slot {position}"
    if eta_s is not None and eta_s >= 0:
        text += f" · about {format_duration(eta_s)} left"
    return text


def queued_text(position: int, eta_s: float | None = None) -> str:
    """Status while queued: place in line and, when known, when it should start."""
    place = "next in line" if position <= 1 else f"position {position} in the queue"
    text = f"Queued — {place}"
    if eta_s is not None and eta_s >= 0:
        text += f" · starts in about {format_duration(eta_s)}"
    return text


def problems_text(problems: Sequence[str], *, heading: str = "That request can't run:") -> str:
    """An ephemeral error reply listing each problem (they quote user input, so sanitised)."""
    lines = [heading, *(f"• {_fit(problem, 400)}" for problem in problems[:10])]
    if len(problems) > 10:
        lines.append(f"…and {len(problems) - 10} more")
    return "\n".join(lines)[:MESSAGE_LIMIT]
