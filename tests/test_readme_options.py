"""The README's "Using it" section, end to end: /imagine options, the flags table, bad values, batching.

Each test sends /imagine through the real discord.py client to the fake Discord and checks what the
user sees: the result text, the decoded image and the recipe in the PNG ``parameters`` chunk.
"""

from __future__ import annotations

from pathlib import Path

from bot.core.config import BotConfig, SchedulerConfig
from bot.discord_ui.images import read_parameters
from tests.bot_harness import (
    GateExecutor,
    decode,
    is_result,
    png,
    public,
    running_bot,
    tiny_app_config,
    tiny_model,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.frozen_clock import FrozenClock


def parameters(result: StoredMessage) -> str:
    found = read_parameters(result.attachments[0].data)
    assert found is not None, "the result carries no parameters text"
    return found


def mention(fake: FakeDiscord, name: str) -> str:
    return f"<@{fake.user(name).id}>"


async def test_negative_and_guidance_options_are_shown_and_recorded(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "`/imagine prompt:<text>` with options `negative`, ... `guidance`"; "explicit options win
    over flags"; "Saved images carry their parameters in the PNG `parameters` text chunk"."""
    async with running_bot(fake, tmp_path):
        handle = await fake.slash("imagine", {"prompt": "a lighthouse --no rain --cfg 2", "negative": "fog, people",
                                              "guidance": 5.5, "seed": 11}, user="alice")
        result = await handle.wait_original(is_result)
    assert result.content.startswith(f"**a lighthouse** — {mention(fake, 'alice')}\nNegative: fog, people\n")
    assert "Seed 11 · model tiny · 64×64 · 2 steps · guidance 5.5 ·" in result.content
    assert "rain" not in result.content and "--" not in result.content
    assert parameters(result) == ("a lighthouse\nNegative prompt: fog, people\n"
                                  "Steps: 2, Sampler: PNDM, CFG scale: 5.5, Seed: 11, Size: 64x64, Model: tiny")


async def test_size_seed_count_no_steps_and_cfg_flags(fake: FakeDiscord, tmp_path: Path) -> None:
    """Flags table: "`--size WxH` | exact size in pixels"; "`--seed N` | ... image *i* of a request uses seed
    N+i"; "`--no words` | negative prompt; several `--no` are joined"; "`--steps N`, `--cfg N` ..."; "`--count N`";
    and "Flags typed in the prompt work too and are removed from it"."""
    async with running_bot(fake, tmp_path):
        handle = await fake.slash("imagine", {"prompt": "a red barn --size 96x64 --seed 7 --count 3 "
                                              "--no blurry --no text, watermark --steps 3 --cfg 3.5"}, user="carol")
        result = await handle.wait_original(is_result)
    assert result.content.startswith(f"**a red barn** — {mention(fake, 'carol')}\n"
                                     "Negative: blurry, text, watermark\n")
    assert "Seeds 7, 8, 9 · model tiny · 96×64 · 3 steps · guidance 3.5 ·" in result.content
    assert decode(result).size == (192, 128)  # three 96x64 images in a 2x2 grid
    assert parameters(result) == ("a red barn\nNegative prompt: blurry, text, watermark\n"
                                  "Steps: 3, Sampler: PNDM, CFG scale: 3.5, Seed: 7, Size: 96x64, Model: tiny")


async def test_n_guidance_and_model_flags_pick_a_configured_model(fake: FakeDiscord, tmp_path: Path) -> None:
    """Flags table: "`--count N` / `--n N` | images (1–4)"; "`--cfg N` / `--guidance N`"; "`--model NAME` ... |
    a configured model"."""
    models = {"tiny": tiny_model(), "tiny-wide": tiny_model(default_width=128, default_steps=3)}
    async with running_bot(fake, tmp_path, tiny_app_config(fake, models=models)):
        handle = await fake.slash("imagine", {"prompt": "a kite --n 2 --guidance 4 --model tiny-wide --seed 20"},
                                  user="alice")
        wide = await handle.wait_original(is_result)
        handle = await fake.slash("imagine", {"prompt": "a kite --seed 20"}, user="alice")
        default = await handle.wait_original(is_result)
    assert wide.content.startswith("**a kite** —")
    assert "Seeds 20, 21 · model tiny-wide · 128×64 · 3 steps · guidance 4 ·" in wide.content
    assert decode(wide).size == (256, 64)  # two 128x64 images side by side
    assert parameters(wide).endswith("CFG scale: 4.0, Seed: 20, Size: 128x64, Model: tiny-wide")
    assert "Seed 20 · model tiny · 64×64 · 2 steps · guidance 7 ·" in default.content  # the default model's defaults
    assert parameters(default).endswith("Seed: 20, Size: 64x64, Model: tiny")


async def test_aspect_flags_configured_and_arbitrary_ratios(fake: FakeDiscord, tmp_path: Path) -> None:
    """Flags table: "`--ar W:H`, `--aspect W:H` | aspect ratio (configured ratios, or any W:H from 1:4 to 4:1)".
    A configured ratio keeps its shape, scaled to the model's 64x64 pixel budget (short side at least 64)."""
    bot = BotConfig(progress_interval_s=0.0, aspects={"1:1": "512x512", "3:2": "768x512"})
    config = tiny_app_config(fake, models={"tiny": tiny_model(max_width=256, max_height=192, max_pixels=256 * 64)},
                             bot=bot)
    sizes = {}
    async with running_bot(fake, tmp_path, config):
        for prompt in ("a dune --ar 3:2", "a tower --aspect 1:3", "a train --ar 4:1"):
            result = await (await fake.slash("imagine", {"prompt": prompt}, user="alice")).wait_original(is_result)
            width, height = decode(result).size
            assert f"{width}×{height}" in result.content and f"Size: {width}x{height}" in parameters(result)
            assert "--a" not in result.content
            sizes[prompt.split(" --")[1]] = (width, height)
    assert sizes == {"ar 3:2": (96, 64), "aspect 1:3": (64, 192), "ar 4:1": (256, 64)}
    assert all(width * height <= 256 * 64 for width, height in sizes.values())  # within the model's limits


async def test_style_flag_wraps_the_prompt_and_explicit_seed_wins(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "`style` (presets from config that wrap the prompt)"; flags table: "`--style NAME` | a configured
    ... style"; "explicit options win over flags" (seed option 9 beats `--seed 5`)."""
    bot = BotConfig(progress_interval_s=0.0, styles={"neon": "neon sign of {prompt}, glowing"})
    async with running_bot(fake, tmp_path, tiny_app_config(fake, bot=bot)):
        handle = await fake.slash("imagine", {"prompt": "a fox --style neon --seed 5", "seed": 9}, user="alice")
        result = await handle.wait_original(is_result)
    assert result.content.startswith(f"**neon sign of a fox, glowing** — {mention(fake, 'alice')}\n")
    assert "Seed 9 ·" in result.content and "Seed 5" not in result.content
    recipe = parameters(result)
    assert recipe.startswith("neon sign of a fox, glowing\n") and "Seed: 9," in recipe


async def test_strength_flag_with_an_attached_image(fake: FakeDiscord, tmp_path: Path) -> None:
    """Flags table: "`--strength F` | with an image: how much to change it (0.05–1)"; README: "`image` (an
    attachment: image-to-image)"."""
    async with running_bot(fake, tmp_path):
        upload = fake.serve_attachment(png("orange", (64, 64)), "sketch.png")
        handle = await fake.slash("imagine", {"prompt": "a fox painting --strength 0.5 --steps 4 --seed 3"},
                                  attachments={"image": upload}, user="alice")
        result = await handle.wait_original(is_result)
    assert result.content.startswith("**a fox painting** —")
    assert "Seed 3 · model tiny · 64×64 · 4 steps · guidance 7 · strength 0.5 ·" in result.content
    assert decode(result).size == (64, 64)
    assert parameters(result).endswith("Seed: 3, Size: 64x64, Model: tiny, Denoising strength: 0.5")


async def test_bad_flag_values_get_one_private_reply_naming_each(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "Bad input gets an ephemeral reply naming the bad value and what is allowed" — for two bad flags
    among the prompt's flags (both found by the flag parser), one reply lists both."""
    async with running_bot(fake, tmp_path):
        handle = await fake.slash("imagine", {"prompt": "a cat --steps 0 --seed lots --count 9"}, user="alice")
        reply = await handle.wait_original()
    assert reply.ephemeral and reply.content.startswith("That request can't run:")
    assert "--steps 0 is out of range; allowed: whole numbers from 1" in reply.content
    assert "--seed lots is not a whole number; allowed: 0 to 4294967295" in reply.content
    assert "--count 9 is out of range; allowed: 1 to 4" in reply.content
    assert public(fake) == []


async def test_a_bad_flag_and_a_bad_aspect_are_reported_together(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "Bad input gets an ephemeral reply naming the bad value and what is allowed"; compose.draft:
    "Raises one ``InvalidRequest`` listing every problem"."""
    async with running_bot(fake, tmp_path):
        handle = await fake.slash("imagine", {"prompt": "a cat --steps 0 --ar 9:1"}, user="alice")
        reply = await handle.wait_original()
    assert reply.ephemeral and "--steps 0 is out of range; allowed: whole numbers from 1" in reply.content
    assert public(fake) == []
    assert "aspect 9:1 is not allowed" in reply.content and "any W:H from 1:4 to 4:1" in reply.content


async def test_two_users_compatible_jobs_share_one_batch(fake: FakeDiscord, clock: FrozenClock,
                                                         tmp_path: Path) -> None:
    """README: the queue "keeps one server's flood from blocking everyone else ... weighted fair queue"; the
    scheduler batches compatible jobs (same model, size, steps) of different users into one pipeline call,
    and each user still gets their own result."""
    gpu = GateExecutor()
    gpu.max_batch_images = 4
    config = tiny_app_config(fake, scheduler=SchedulerConfig(batch_window_ms=5000, position_update_s=0))
    async with running_bot(fake, tmp_path, config, executor=gpu):
        first = await fake.slash("imagine", {"prompt": "a slow castle --seed 1"}, user="bob")
        await first.wait_original(lambda m: "Queued" in m.content)  # waiting out the batch window
        await clock.advance(5)  # the window ends: bob's job runs alone and holds the executor
        await first.wait_original(lambda m: "Starting" in m.content)
        alice = await fake.slash("imagine", {"prompt": "a blue whale --seed 2"}, user="alice")
        carol = await fake.slash("imagine", {"prompt": "a green frog --seed 3"}, user="carol")
        for handle in (alice, carol):
            await handle.wait_original(lambda m: "Queued" in m.content)
        await clock.advance(5)  # their batch window has passed too: the next batch forms as soon as bob's ends
        gpu.gate.set()
        results = [await handle.wait_original(is_result) for handle in (first, alice, carol)]
    assert [sorted(request.prompt for request in batch) for batch in gpu.batches] == [
        ["a slow castle"], ["a blue whale", "a green frog"]]
    for result, user, prompt in zip(results, ("bob", "alice", "carol"), ("a slow castle", "a blue whale",
                                                                         "a green frog"), strict=True):
        assert result.content.startswith(f"**{prompt}** — {mention(fake, user)}\n")
        assert decode(result).size == (64, 64) and f"{prompt}\n" in parameters(result)
