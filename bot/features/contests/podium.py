"""The podium image of a round's results: its top three images side by side, standing on a podium.

Second place stands on the left, first in the middle (highest), third on the right, each on a step in its
medal's colour with its place written on it. Pure Pillow and CPU-bound: the poster runs ``compose`` in a
worker thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

TILE = 256  # each image's long side on the podium
GAP = 24
MARGIN = 32
STEP_HEIGHTS = {1: 150, 2: 105, 3: 70}
STEP_COLOURS = {1: (212, 175, 55), 2: (176, 180, 188), 3: (176, 112, 64)}
BACKGROUND = (30, 33, 40)
FRAME = (245, 245, 245)
ORDER = (2, 1, 3)  # left to right


def _tile(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        tile = image.convert("RGB")
    scale = TILE / max(tile.size)
    return tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))),
                       Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font
    except (TypeError, OSError):  # an old Pillow, or one built without FreeType
        return ImageFont.load_default()


def compose(pngs: Sequence[bytes]) -> bytes:
    """A PNG of the podium for the first, second and third place images (``pngs`` in that order; fewer
    places leave their steps empty)."""
    if not 1 <= len(pngs) <= 3:
        raise ValueError(f"a podium shows 1 to 3 images, not {len(pngs)}")
    tiles = {place: _tile(png) for place, png in enumerate(pngs, start=1)}
    width = 2 * MARGIN + 3 * TILE + 2 * GAP
    height = MARGIN + TILE + GAP // 2 + max(STEP_HEIGHTS.values()) + MARGIN  # first place's image at the top
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    floor = height - MARGIN
    font = _font(64)
    for column, place in enumerate(ORDER):
        left = MARGIN + column * (TILE + GAP)
        step_top = floor - STEP_HEIGHTS[place]
        draw.rectangle((left, step_top, left + TILE - 1, floor), fill=STEP_COLOURS[place])
        draw.text((left + TILE / 2, step_top + STEP_HEIGHTS[place] / 2), str(place), fill=BACKGROUND, font=font,
                  anchor="mm")
        tile = tiles.get(place)
        if tile is None:
            continue
        x = left + (TILE - tile.width) // 2
        y = step_top - GAP // 2 - tile.height
        draw.rectangle((x - 4, y - 4, x + tile.width + 3, y + tile.height + 3), fill=FRAME)
        canvas.paste(tile, (x, y))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
