"""Attachments in and out: image-to-image from an uploaded picture, and results sized to the upload limit."""

from __future__ import annotations

from pathlib import Path

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
        assert "scaled down to fit this server's upload limit" in result.content
        assert read_parameters(attachment.data) is not None  # the recipe survives re-encoding
