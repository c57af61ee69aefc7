"""The short path from a finished batch to its upload (issue 14): each image is encoded once, that PNG is both
the stored copy and (for one image) the upload, nothing just stored is read back, and "done" is still stored
before the result is shown."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import generation.request
from bot.discord_ui.images import read_parameters, upload_limit
from bot.discord_ui.result_files import ResultFiles
from bot.storage import JobRecord
from generation.imagefiles import quick_png
from generation.request import GenerationRequest, GenerationResult, Timings, validate
from tests.bot_harness import GateExecutor, WatchedStorage, is_result, public, running_bot, tiny_model
from tests.fake_discord import FakeDiscord


def count_png_encodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image encoded as PNG from now on: spies on Pillow's PNG encoder (the grid) and on
    ``quick_png`` (each stored image)."""
    sizes: list[tuple[int, int]] = []
    encoder: Callable[..., Any] = Image.SAVE["PNG"]

    def spy(image: Image.Image, *args: Any, **kwargs: Any) -> Any:
        sizes.append(image.size)
        return encoder(image, *args, **kwargs)

    def quick_spy(image: Image.Image, *args: Any, **kwargs: Any) -> bytes:
        sizes.append(image.size)
        return quick_png(image, *args, **kwargs)

    monkeypatch.setitem(Image.SAVE, "PNG", spy)
    monkeypatch.setattr(generation.request, "quick_png", quick_spy)
    return sizes


class ReadCountingStorage(WatchedStorage):
    """Real storage that counts reads of stored images, and can hold the write that stores a result and "done"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image_reads = 0
        self.result_ready_to_store = asyncio.Event()
        self.done_gate = asyncio.Event()
        self.done_gate.set()

    async def load_result_image(self, job_id: str, index: int) -> bytes | None:
        self.image_reads += 1
        return await super().load_result_image(job_id, index)

    async def store_result(self, *args: Any, **kwargs: Any) -> Any:
        self.result_ready_to_store.set()  # every PNG is encoded by now
        await self.done_gate.wait()
        return await super().store_result(*args, **kwargs)


async def only_job(storage: ReadCountingStorage) -> JobRecord:
    [job] = await storage.jobs_in_states(["done"])
    return job


def open_gpu() -> GateExecutor:
    gpu = GateExecutor()
    gpu.gate.set()
    return gpu


async def test_one_image_is_encoded_once_and_its_stored_file_is_the_upload(
        fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encodes = count_png_encodes(monkeypatch)
    async with running_bot(fake, tmp_path, executor=open_gpu(), storage_class=ReadCountingStorage) as bot:
        handle = await fake.slash("imagine", {"prompt": "a lighthouse at dusk --seed 3"}, user="alice")
        result = await handle.wait_original(is_result)
        storage = bot.services.storage
        assert isinstance(storage, ReadCountingStorage)
        reads_before_upload = storage.image_reads
        job = await only_job(storage)
        stored = await storage.load_result_image(job.id, 0)
    assert encodes == [(64, 64)]  # one PNG encode for the image, none for the upload
    assert reads_before_upload == 0  # uploaded from memory: nothing just stored was read back
    [attachment] = result.attachments
    assert attachment.data == stored  # the very bytes kept in storage
    parameters = read_parameters(attachment.data)
    assert parameters is not None and "a lighthouse at dusk" in parameters and "Seed: 3" in parameters


async def test_several_images_are_encoded_once_each_plus_the_grid(
        fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encodes = count_png_encodes(monkeypatch)
    async with running_bot(fake, tmp_path, executor=open_gpu(), storage_class=ReadCountingStorage) as bot:
        handle = await fake.slash("imagine", {"prompt": "three kites --seed 7 --count 3"}, user="alice")
        result = await handle.wait_original(is_result)
        storage = bot.services.storage
        assert isinstance(storage, ReadCountingStorage)
        assert storage.image_reads == 0
        job = await only_job(storage)
        stored = [await storage.load_result_image(job.id, index) for index in range(3)]
    assert sorted(encodes) == [(64, 64), (64, 64), (64, 64), (128, 128)]  # three stored PNGs, one 2x2 grid
    grid = Image.open(io.BytesIO(result.attachments[0].data)).convert("RGB")
    for index, png in enumerate(stored):
        assert png is not None
        cell = grid.crop(((index % 2) * 64, (index // 2) * 64, (index % 2) * 64 + 64, (index // 2) * 64 + 64))
        assert np.array_equal(np.asarray(cell), np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
    parameters = read_parameters(result.attachments[0].data)
    assert parameters is not None and "three kites" in parameters


async def test_the_result_waits_until_done_is_stored(fake: FakeDiscord, tmp_path: Path) -> None:
    """The outbox's guarantee holds on the short path: encodes run early, but nothing is shown before "done"."""
    async with running_bot(fake, tmp_path, executor=open_gpu(), storage_class=ReadCountingStorage) as bot:
        storage = bot.services.storage
        assert isinstance(storage, ReadCountingStorage)
        storage.done_gate.clear()
        handle = await fake.slash("imagine", {"prompt": "two boats --seed 1 --count 2"}, user="alice")
        await asyncio.wait_for(storage.result_ready_to_store.wait(), 30)
        assert not any(is_result(message) for message in public(fake))  # images encoded, not stored yet
        storage.done_gate.set()
        result = await handle.wait_original(is_result)
        job = await storage.wait_until(lambda: _delivered(storage), what="the delivery recorded")
    assert result.id == job.result_message_id


async def _delivered(storage: ReadCountingStorage) -> JobRecord | None:
    job = await only_job(storage)
    return job if job.delivery == "delivered" else None


def _noise_result(count: int, side: int) -> GenerationResult:
    name, model = "tiny", tiny_model(max_width=512, max_height=512)
    request = validate(GenerationRequest("noise", seed=1, count=count, width=side, height=side), name, model)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(count)]
    return GenerationResult(request, images, request.seeds(), Timings())


async def test_a_grid_encoded_for_another_limit_is_not_uploaded_where_it_does_not_fit() -> None:
    """The grid is encoded before the upload's target is certain; a smaller limit than assumed gets its own."""
    files = ResultFiles.start("f" * 32, _noise_result(2, 128), None)
    grid = await files.grid(upload_limit(None))
    assert grid is not None and grid.format == "PNG" and not grid.scaled
    assert await files.grid(len(grid.data) + 1) is grid  # a PNG within the limit is what encode_to_fit makes first
    assert await files.grid(len(grid.data) - 1) is None
    assert len(await files.pngs()) == 2


async def test_flagged_images_get_no_grid_before_the_safety_mode_is_known() -> None:
    result = _noise_result(2, 64)
    flagged = GenerationResult(result.request, result.images, result.seeds, Timings(), nsfw=[True, False])
    files = ResultFiles.start("f" * 32, flagged, None)
    assert await files.grid(upload_limit(None)) is None
    assert len(await files.pngs()) == 2
