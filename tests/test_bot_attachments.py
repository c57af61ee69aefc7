"""Attachments in and out: image-to-image from an uploaded picture, and results sized to the upload limit."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, Image, PsdImagePlugin, TiffImagePlugin

from bot.discord_ui.images import read_parameters
from tests.bot_harness import decode, is_result, png, public, running_bot
from tests.fake_discord import FakeDiscord


async def test_image_attachment_runs_image_to_image_and_other_files_are_refused(fake: FakeDiscord,
                                                                               tmp_path: Path) -> None:
    async with running_bot(fake, tmp_path):
        upload = fake.serve_attachment(png("orange", (96, 64)), "sketch.png")
        handle = await fake.slash("imagine", {"prompt": "a fox --seed 3", "strength": 0.5},
                                  attachments={"image": upload}, user="alice")
        result = await handle.wait_original(is_result)
        assert fake.downloads == [f"/attachments/{upload.id}/sketch.png"]
        assert "strength 0.5" in result.content and decode(result).size == (64, 64)
        parameters = read_parameters(result.attachments[0].data)
        assert parameters is not None and "Denoising strength: 0.5" in parameters

        notes = fake.serve_attachment(b"not a picture", "notes.txt")
        refused = await fake.slash("imagine", {"prompt": "a fox"}, attachments={"image": notes}, user="alice")
        reply = await refused.wait_original()
        assert reply.ephemeral and "'notes.txt' is not an image" in reply.content and "PNG" in reply.content
        # A file that claims to be a picture but is not one is caught after the download.
        fake_png = fake.serve_attachment(b"\x89PNG but not really", "broken.png")
        broken = await fake.slash("imagine", {"prompt": "a fox"}, attachments={"image": fake_png}, user="alice")
        # The bot had deferred ("thinking…", public) for the download: it deletes that and answers in a
        # private followup. (Asserted on the request: the fake folds a followup into a deleted original.)
        sent = await fake.wait_until(lambda: [r.json for r in fake.requests if r.method == "POST"
                                              and r.path.endswith(broken.token)], what="the followup")
        assert sent[0]["flags"] & 64 and "could not be read as an image" in sent[0]["content"]
        assert broken.original is not None and broken.original.deleted
    assert [m for m in public(fake) if not is_result(m)] == []  # the refusals left nothing public
    assert len(fake.downloads) == 2  # the .txt was refused before any download


async def test_result_fits_a_small_upload_limit(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, tmp_path):
        handle = await fake.slash("imagine", {"prompt": "a storm --size 256x256 --count 4 --steps 1"},
                                  attachment_size_limit=20_000, user="alice")
        result = await handle.wait_original(is_result)
        attachment = result.attachments[0]
        assert attachment.size <= 20_000  # the fake also answers 413 (a test failure) above the limit
        image = decode(result)
        assert 64 <= image.width < 512 and image.width == image.height  # the 2x2 grid, scaled down
        assert "Scaled down to fit this server's upload limit; the U buttons give full size." in result.content
        assert read_parameters(attachment.data) is not None  # the recipe survives re-encoding


def tiff(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "olive").save(buffer, format="TIFF")
    return buffer.getvalue()


# What an EPS file starts with: Pillow would hand the rest to Ghostscript when the image is loaded.
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\nshowpage\n%%EOF\n"
PSD = b"8BPS\x00\x01" + bytes(6) + b"\x00\x03\x00\x00\x00\x40\x00\x00\x00\x40\x00\x08\x00\x03"


async def test_only_png_jpeg_and_webp_attachments_are_decoded(fake: FakeDiscord, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """README: "`image` (an attachment: image-to-image; PNG, JPEG or WebP ...)" and "a TIFF, PSD or EPS
    (which Pillow would hand to Ghostscript) is refused without any other decoder looking at it", whatever
    the file is called."""
    opened: list[str] = []
    for plugin in (TiffImagePlugin.TiffImageFile, EpsImagePlugin.EpsImageFile, PsdImagePlugin.PsdImageFile):
        monkeypatch.setattr(plugin, "_open", lambda self, name=plugin.format: opened.append(name))
    async with running_bot(fake, tmp_path):
        # Named as what it is: refused from what Discord says of the file, before any download.
        scan = fake.serve_attachment(tiff(), "scan.tif")
        named = await fake.slash("imagine", {"prompt": "a fox"}, attachments={"image": scan}, user="alice")
        reply = await named.wait_original()
        assert reply.ephemeral
        assert "the attachment 'scan.tif' is image/tiff; allowed: PNG, JPEG or WebP" in reply.content
        assert fake.downloads == []

        # Disguised as PNGs: refused from their bytes after the download.
        disguised = {"scan.png": (tiff(), "is a TIFF image"), "logo.png": (EPS, "is an EPS/PostScript file"),
                     "layers.png": (PSD, "is a Photoshop (PSD) file")}
        for name, (data, kind) in disguised.items():
            upload = fake.serve_attachment(data, name)
            handle = await fake.slash("imagine", {"prompt": "a fox"}, attachments={"image": upload}, user="alice")
            token = handle.token
            sent = await fake.wait_until(lambda: [r.json for r in fake.requests if r.method == "POST"
                                                  and r.path.endswith(token)], what="the followup")  # noqa: B023
            assert sent[0]["flags"] & 64, name  # private
            assert f"the attachment {name!r} {kind}; allowed: PNG, JPEG or WebP" in sent[0]["content"]
        assert len(fake.downloads) == 3
    assert opened == []  # no TIFF, EPS or PSD decoder ran, not even to read a header
    assert public(fake) == []
