"""Rendering: grids, attachments that always fit the upload limit, and messages that never ping."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.discord_ui.images import DEFAULT_UPLOAD_LIMIT, encode_to_fit, make_grid, read_parameters, upload_limit
from bot.discord_ui.texts import (
    MESSAGE_LIMIT,
    problems_text,
    progress_text,
    queued_text,
    result_message_text,
    sanitize_user_text,
)

PARAMS = "a red fox, ünïcode ✓\nNegative prompt: text\nSteps: 25, Seed: 42, Size: 256x256, Model: tiny"


def flat(size: tuple[int, int], color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", size, color)


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def test_grid_layouts() -> None:
    one = flat((64, 48), (255, 0, 0))
    assert make_grid([one]) is one
    assert make_grid([one, one]).size == (128, 48)
    assert make_grid([one] * 3).size == (128, 96)
    grid = make_grid([flat((64, 48), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]])
    assert grid.size == (128, 96)
    # Image order reads left to right, top to bottom (U1..U4 match the quadrants).
    assert [grid.getpixel(p) for p in [(10, 10), (70, 10), (10, 60), (70, 60)]] == [
        (255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]
    with pytest.raises(ValueError):
        make_grid([])


def test_small_image_stays_png_with_parameters() -> None:
    encoded = encode_to_fit(flat((256, 256), (10, 20, 30)), DEFAULT_UPLOAD_LIMIT, PARAMS)
    assert (encoded.format, encoded.filename, encoded.scaled) == ("PNG", "imagine.png", False)
    assert read_parameters(encoded.data) == PARAMS


def photo_like(size: int = 256) -> Image.Image:
    """A smooth gradient with a little grain: compresses like a generated picture, unlike pure noise."""
    y, x = np.mgrid[0:size, 0:size]
    grain = np.random.default_rng(0).integers(-4, 5, (size, size, 3))
    pixels = np.stack([x, y, (x + y) // 2], -1) * (255 // max(1, size - 1)) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


@pytest.mark.parametrize("limit_fraction, lossless", [(0.8, True), (0.2, False)])
def test_tighter_limits_fall_back_to_webp_that_fits_decodes_and_carries_parameters(
    limit_fraction: float, lossless: bool
) -> None:
    image = make_grid([photo_like()] * 4)
    png_size = len(encode_to_fit(image, 10**9, PARAMS).data)
    limit = int(png_size * limit_fraction)
    encoded = encode_to_fit(image, limit, PARAMS, basename="grid")
    assert len(encoded.data) <= limit
    assert (encoded.format, encoded.filename, encoded.scaled) == ("WEBP", "grid.webp", False)
    with Image.open(io.BytesIO(encoded.data)) as decoded:
        pixels = np.asarray(decoded.convert("RGB"), dtype=np.int16)
    assert pixels.shape == (512, 512, 3)  # full size: no downscale was needed
    difference = np.abs(pixels - np.asarray(image, dtype=np.int16))
    assert (difference.max() == 0) if lossless else (difference.mean() < 4)  # lossy, but high quality
    assert read_parameters(encoded.data) == PARAMS


def test_very_tight_limit_scales_down_and_never_exceeds() -> None:
    image = noise((512, 512), 7)
    for limit in (60_000, 20_000, 8_000):
        encoded = encode_to_fit(image, limit, PARAMS)
        assert len(encoded.data) <= limit
        assert encoded.scaled
        with Image.open(io.BytesIO(encoded.data)) as decoded:
            assert decoded.width < 512 and decoded.width == decoded.height
        assert read_parameters(encoded.data) == PARAMS


def test_impossible_limit_raises_instead_of_exceeding() -> None:
    with pytest.raises(ValueError, match="cannot fit 100 bytes"):
        encode_to_fit(noise((256, 256)), 100, PARAMS)


def test_upload_limit_uses_interaction_limit_or_standard() -> None:
    assert upload_limit(None) < DEFAULT_UPLOAD_LIMIT
    assert DEFAULT_UPLOAD_LIMIT - upload_limit(None) <= 64 * 1024
    assert 25 * 2**20 - 64 * 1024 < upload_limit(25 * 2**20) < 25 * 2**20


def test_prompt_cannot_ping_or_format() -> None:
    prompt = "@everyone @here @EVERYONE <@123456789012345678> <@!123456789012345678> <@&987654321098765432> " \
             "**bold** __u__ `code` ||spoiler||\n# Heading\n> quote"
    text = result_message_text(prompt, 42, [7], "tiny", (512, 512), 25, 3.0)
    for raw in ("@everyone", "@here", "@EVERYONE", "<@123", "<@!", "<@&"):
        assert raw not in text
    assert "<@42>" in text  # the requester is named (allowed mentions are off, so no ping)
    assert "**bold**" not in text and "\\*\\*bold\\*\\*" in text
    assert "\n#" not in text and "\n>" not in text
    assert text.count("\n") == 1  # prompt line + details line


def test_result_text_names_everything_a_user_needs() -> None:
    text = result_message_text("a fox", 42, [7, 8, 9, 10], "sd15", (768, 512), 30, 12.34, negative="text",
                               guidance=7.5, note="Variation of image 2")
    assert text.splitlines() == [
        "**a fox** — <@42>", "Negative: text", "Variation of image 2",
        "Seeds 7, 8, 9, 10 · model sd15 · 768×512 · 30 steps · guidance 7.5 · made in 12 s",
    ]


@pytest.mark.parametrize("prompt", ["a" * 5000, "*" * 3000, "@everyone " * 600, "x\\" * 2000])
def test_long_prompts_are_cut_with_an_ellipsis_within_2000(prompt: str) -> None:
    text = result_message_text(prompt, 42, [1, 2, 3, 4], "tiny", (512, 512), 25, 1.0, negative="n" * 1000)
    assert len(text) <= MESSAGE_LIMIT
    assert "…**" in text and "@everyone" not in text
    assert len(text) > MESSAGE_LIMIT - 30  # the budget is used, not wasted
    assert text.endswith("25 steps · made in 1.0 s")


def test_sanitize_keeps_plain_text() -> None:
    assert sanitize_user_text("a cat, 4k") == "a cat, 4k"


def test_progress_and_queue_texts() -> None:
    assert progress_text(6, 20, eta_s=12.3) == "Generating ▰▰▰▰▱▱▱▱▱▱▱▱ 30% (step 6/20) · about 12 s left"
    assert progress_text(0, 0).startswith("Generating ▱▱▱")
    assert queued_text(1) == "Queued — next in line"
    assert queued_text(4, 150) == "Queued — 4th in line · starts in about 2 min 30 s"


@pytest.mark.parametrize("start_s", [0.0, 0.004, 0.99])
def test_a_job_about_to_start_says_starting_now_not_in_about_0_s(start_s: float) -> None:
    assert queued_text(1, start_s) == "Queued — next in line · starting now"
    assert queued_text(2, start_s) == "Queued — 2nd in line · starting now"


def test_problem_replies_list_each_problem_safely() -> None:
    text = problems_text(["--seed @everyone is not a whole number; allowed: 0 to 4294967295", "count 9 too big"])
    assert text.splitlines()[1:] == [
        "• --seed @\u200beveryone is not a whole number; allowed: 0 to 4294967295", "• count 9 too big"]


@pytest.mark.parametrize("typed, shown", [
    ("--bogus", "--bogus"),  # mid-line a dash starts no list: no backslash
    ("my_cool_style", "my_cool_style"),  # underscores inside a word are not italics in Discord
    ("snake_case and _italic_ and a__b__c", r"snake_case and \_italic\_ and a\_\_b\_\_c"),
    ("**bold** `code` ~~gone~~ ||spoiler|| a~b a|b", r"\*\*bold\*\* \`code\` \~\~gone\~\~ \|\|spoiler\|\| a~b a|b"),
    (r"C:\path and a\*", r"C:\path and a\\\*"),  # a backslash is doubled only where it would escape
    ("ends with \\", "ends with \\\\"),  # ...such as the bot's own closing ** right after it
    ("[click](https://x.example/a_b_)", r"\[click](https://x.example/a_b_)"),  # no masked link; the URL intact
    ("# not a heading > nor a quote - nor a list", "# not a heading > nor a quote - nor a list"),
])
def test_user_text_is_escaped_once_and_only_where_markdown_would_apply(typed: str, shown: str) -> None:
    assert sanitize_user_text(typed) == shown


def test_a_problem_quoting_user_text_is_escaped_once_through_the_error_reply() -> None:
    r"""Members saw ``\--bogus`` and ``my\_cool\_style``: the reply escaped what the list escaped again."""
    from bot.discord_ui.replies import error_text
    from generation.errors import InvalidRequest

    text = error_text(InvalidRequest(["--bogus is not a known flag", "style 'my_cool_style' is unknown"]))
    assert text.splitlines()[1:] == ["• --bogus is not a known flag", "• style 'my_cool_style' is unknown"]


@pytest.mark.parametrize("size, expected", [((39, 26), (256, 171)), ((8, 8), (256, 256)), ((64, 128), (128, 256)),
                                            ((1024, 768), (256, 192))])
def test_previews_are_scaled_to_256_px_on_the_long_side(size: tuple[int, int], expected: tuple[int, int]) -> None:
    """A linear preview is the latent's size (39×26 for a 312×208 request): scaled up to be seen in Discord."""
    from bot.discord_ui.presenter import preview_png

    with Image.open(io.BytesIO(preview_png(noise(size)))) as preview:
        assert preview.format == "PNG" and preview.size == expected
