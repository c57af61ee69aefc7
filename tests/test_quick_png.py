"""``quick_png``: the one-pass PNG writer behind every stored result. Whatever it writes must decode, in Pillow
and so in Discord and in SD tools, to exactly the pixels and the parameters it was given."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from generation import imagefiles
from generation.imagefiles import quick_png, read_parameters


def random_image(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (37, 5), (64, 64), (3, 200)])
def test_every_pixel_comes_back_as_written(mode: str, size: tuple[int, int]) -> None:
    image = random_image(mode, size)
    with Image.open(io.BytesIO(quick_png(image, "a fox"))) as back:
        assert back.format == "PNG" and back.mode == mode and back.size == size
        assert np.array_equal(np.asarray(back), np.asarray(image))


@pytest.mark.parametrize("text", [
    "a red fox in snow\nSteps: 25, Seed: 5",
    "Füchse im Schnee, café",  # Latin-1: a tEXt chunk
    "a 🦊 in 雪\nNegative prompt: ✗",  # beyond Latin-1: an iTXt chunk in UTF-8
])
def test_the_parameters_read_back_exactly(text: str) -> None:
    data = quick_png(random_image("RGB", (8, 8)), text)
    assert read_parameters(data) == text


def test_without_parameters_there_is_no_text_chunk() -> None:
    data = quick_png(random_image("RGB", (8, 8)))
    assert read_parameters(data) is None
    assert b"tEXt" not in data and b"iTXt" not in data


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_every_zlib_level_decodes_to_the_same_image(level: int) -> None:
    image = random_image("RGB", (40, 30), seed=level)
    with Image.open(io.BytesIO(quick_png(image, "x", level=level))) as back:
        assert np.array_equal(np.asarray(back), np.asarray(image))


def test_a_mode_it_does_not_write_itself_goes_through_pillow() -> None:
    palette = random_image("RGB", (16, 16)).convert("P")
    data = quick_png(palette, "a palette image")
    with Image.open(io.BytesIO(data)) as back:
        assert back.mode == "P"
        assert np.array_equal(np.asarray(back.convert("RGB")), np.asarray(palette.convert("RGB")))
    assert read_parameters(data) == "a palette image"


def test_flat_areas_and_gradients_are_compressed() -> None:
    flat = Image.new("RGB", (256, 256), (30, 120, 200))
    assert len(quick_png(flat)) < 2_000  # of 196,608 bytes of pixels: runs of equal bytes cost next to nothing
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    gradient = Image.fromarray(np.stack([ramp, ramp.T, ramp], axis=2))
    assert len(quick_png(gradient)) < 256 * 256 * 3 // 4  # the Up filter leaves small, repeated differences


@pytest.fixture(params=["isal", "zlib"])
def deflate(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test below runs with ISA-L (what level 1 uses where it is installed) and with zlib alone."""
    if request.param == "isal":
        if imagefiles.isal_zlib is None:
            pytest.skip("ISA-L (the isal package, in requirements.txt) is not installed: zlib alone is tested")
    else:
        monkeypatch.setattr(imagefiles, "isal_zlib", None)
    return str(request.param)


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_a_big_image_deflated_in_parts_on_several_threads_decodes_to_the_same_pixels(
        deflate: str, threads: int, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imagefiles, "DEFLATE_THREADS", threads)
    monkeypatch.setattr(imagefiles, "DEFLATE_PART_MIN_BYTES", 64 * 1024)
    monkeypatch.setattr(imagefiles, "ISAL_PART_MIN_BYTES", 64 * 1024)
    image = random_image(mode, (600, 500), seed=threads)  # 300,000 bytes or more: a part for each thread
    data = quick_png(image, "a fox in parts")
    with Image.open(io.BytesIO(data)) as back:
        back.load()  # the whole stream, to its checksum: a part that broke it fails here
        assert back.mode == mode and np.array_equal(np.asarray(back), np.asarray(image))
    assert read_parameters(data) == "a fox in parts"


def test_parts_cost_next_to_nothing_in_size(deflate: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ramp = np.tile(np.arange(512, dtype=np.uint16).astype(np.uint8), (512, 1))
    gradient = Image.fromarray(np.stack([ramp, ramp.T, ramp // 2], axis=2))
    monkeypatch.setattr(imagefiles, "DEFLATE_THREADS", 1)
    whole = len(quick_png(gradient))
    monkeypatch.setattr(imagefiles, "DEFLATE_THREADS", 4)
    monkeypatch.setattr(imagefiles, "DEFLATE_PART_MIN_BYTES", 64 * 1024)
    monkeypatch.setattr(imagefiles, "ISAL_PART_MIN_BYTES", 64 * 1024)
    assert len(quick_png(gradient)) <= whole + 64  # each part starts its repeats afresh: a few bytes each

