"""The chart under /stats and /me: images per day as bars, drawn with Pillow (no plotting library needed for
fourteen bars). 640x300 px on Discord's dark grey: legible in the inline preview, which shows it at about
this size, and a few kilobytes as a PNG. ``png`` is CPU work: call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from PIL import Image, ImageDraw, ImageFont

from bot.features.stats.service import Day

SIZE = (640, 300)
BACKGROUND = (43, 45, 49)  # Discord's dark theme, so the picture sits in the chat without a frame
GRID = (64, 66, 73)
TEXT = (219, 222, 225)
MUTED = (148, 155, 164)
BAR = (88, 101, 242)  # blurple: past days
TODAY = (87, 242, 135)  # green: today, the day the quota counts
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 16, 52, 40  # room for the scale, the title and the day numbers
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class Bar:
    """Where one day's bar is drawn: ``left``..``right`` across, from ``top`` down to ``base`` (the zero line);
    ``top == base`` for a day without images."""

    left: int
    right: int
    top: int
    base: int


def scale_top(peak: int) -> int:
    """The scale's top: the peak rounded up to 1, 2 or 5 x a power of ten (at least 1), so the grid reads evenly."""
    if peak <= 1:
        return 1
    power = 10 ** math.floor(math.log10(peak))
    return int(next(step * power for step in (1, 2, 5, 10) if step * power >= peak))


def bars(counts: Sequence[int], size: tuple[int, int] = SIZE) -> list[Bar]:
    """The bars' boxes for ``counts``, left (oldest) to right (today): the drawing uses them, and so can a test."""
    width, height = size
    base = height - _BOTTOM
    plot_h = base - _TOP
    slot = (width - _LEFT - _RIGHT) / max(1, len(counts))
    top_value = scale_top(max(counts, default=0))
    boxes = []
    for index, count in enumerate(counts):
        left = _LEFT + index * slot + slot * 0.15
        right = _LEFT + (index + 1) * slot - slot * 0.15
        boxes.append(Bar(round(left), round(right), base - round(plot_h * count / top_value), base))
    return boxes


@cache
def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled TrueType font (needs FreeType)
    except (ImportError, OSError):
        return ImageFont.load_default()  # the small bitmap font: still legible


def _centered(draw: ImageDraw.ImageDraw, x: float, y: float, text: str, font: Font, fill: tuple[int, ...]) -> None:
    draw.text((x, y), text, font=font, fill=fill, anchor="ms")


def png(days: Sequence[Day], title: str) -> bytes:
    """The chart of ``days`` (oldest first, the last is today) as PNG bytes."""
    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    counts = [day.images for day in days]
    top_value = scale_top(max(counts, default=0))
    boxes = bars(counts)
    base = SIZE[1] - _BOTTOM
    small, label = _font(13), _font(15)
    draw.text((_LEFT, 30), title, font=_font(19), fill=TEXT, anchor="ls")
    if days:
        span = f"{days[0].date:%b} {days[0].date.day} to {days[-1].date:%b} {days[-1].date.day}"  # the font has no dash
        draw.text((SIZE[0] - _RIGHT, 30), span, font=small, fill=MUTED, anchor="rs")
    for value in (0, top_value // 2 if top_value >= 2 else None, top_value):
        if value is None:
            continue
        y = base - round((base - _TOP) * value / top_value)
        draw.line([(_LEFT, y), (SIZE[0] - _RIGHT, y)], fill=GRID, width=1)
        draw.text((_LEFT - 8, y), str(value), font=small, fill=MUTED, anchor="rm")
    for index, (day, box) in enumerate(zip(days, boxes, strict=True)):
        today = index == len(days) - 1
        middle = (box.left + box.right) / 2
        if day.images:
            draw.rectangle([box.left, box.top, box.right, box.base - 1], fill=TODAY if today else BAR)
            _centered(draw, middle, box.top - 5, str(day.images), label, TEXT)
        _centered(draw, middle, base + 20, str(day.date.day), label, TODAY if today else MUTED)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
