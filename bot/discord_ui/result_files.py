"""A fresh result's files, each encoded once, in parallel, off the event loop.

As soon as a batch's images are ready, ``ResultFiles.start`` begins every encode the result needs, each in its
own thread (zlib and Pillow's encoders free the GIL):

- one PNG per image, carrying its parameters: the copy storage keeps, and for a single image the upload itself
  (the same bytes, never encoded a second time);
- for several images, the grid the result message uploads, encoded while storage writes the PNGs.

The delivery guarantee is unchanged: the recorder stores the PNGs and "done" before the presenter shows the
result; only the CPU work moves earlier. The grid is prepared only when no image was flagged by the safety
checker: how a flagged image is shown depends on its server's safety mode at the moment it is posted, so such a
message is built then (``result_message``), as a re-post from storage is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.discord_ui.images import EncodedImage, encode_to_fit, make_grid, upload_limit
from generation.request import GenerationResult

_log = logging.getLogger(__name__)

STORED_COMPRESS_LEVEL = 1  # quick_png's fastest: a quarter of Pillow's time (bench/png_encode.py)


def result_basename(job_id: str) -> str:
    """The upload's file name without its extension (``imagine_<first 8 of the job id>``)."""
    return f"imagine_{job_id[:8]}"


class ResultFiles:
    """The encodes of one fresh result, under way; await ``pngs`` and ``grid`` for their bytes."""

    def __init__(self, pngs: asyncio.Future[list[bytes]], grid: asyncio.Future[EncodedImage] | None,
                 grid_limit: int) -> None:
        self._pngs = pngs
        self._grid = grid
        self._grid_limit = grid_limit
        for future in (pngs, grid):
            if future is not None:
                # Read a failure even when nobody awaits it (the save failed first): no "never retrieved" noise.
                future.add_done_callback(_consume)

    @classmethod
    def start(cls, job_id: str, result: GenerationResult, attachment_limit: int | None) -> ResultFiles:
        """Start every encode of ``result`` (on the running loop's default thread pool). ``attachment_limit``:
        the upload limit the grid is fitted to, as far as it is known now (None: Discord's default)."""
        pngs = asyncio.ensure_future(asyncio.gather(
            *(asyncio.to_thread(_stored_png, result, index) for index in range(len(result.images)))))
        limit = upload_limit(attachment_limit)
        grid = None
        if len(result.images) > 1 and not any(result.nsfw):
            parameters = result.parameters_text(0)
            images = list(result.images)
            grid = asyncio.ensure_future(asyncio.to_thread(
                lambda: encode_to_fit(make_grid(images), limit, parameters, basename=result_basename(job_id))))
        return cls(pngs, grid, limit)

    async def pngs(self) -> list[bytes]:
        """Each image's PNG, in order: what storage keeps, and a single image's upload."""
        return list(await self._pngs)

    async def grid(self, limit: int) -> EncodedImage | None:
        """The prepared grid, if there is one and it is the upload for ``limit`` bytes (else None: the result
        message encodes its own). A grid fitted to another limit still serves when it is a PNG within ``limit``:
        PNG is what ``encode_to_fit`` tries first, so it would make the same bytes again."""
        if self._grid is None:
            return None
        encoded = await self._grid
        if limit == self._grid_limit or (encoded.format == "PNG" and len(encoded.data) <= limit):
            return encoded
        return None


def _stored_png(result: GenerationResult, index: int) -> bytes:
    return result.png_bytes(index, compress_level=STORED_COMPRESS_LEVEL)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        _log.debug("an encode of a result that is not shown failed", exc_info=future.exception())
