"""LoRAs end to end: `/imagine` with `<lora:NAME:WEIGHT>` in the prompt or the `lora` option, through the real
bot, the real tiny model and a small random LoRA, against the fake Discord."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.core.config import AppConfig, SchedulerConfig
from bot.discord_ui.images import read_parameters
from generation.config import ExecutorConfig, GenerationConfig, LoraConfig
from tests.bot_harness import GateExecutor, button, is_result, public, running_bot, tiny_app_config, tiny_model
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.frozen_clock import FrozenClock
from tests.lora_files import write_random_lora

if not os.environ.get("CI"):  # under CI a missing peft fails: it is in requirements.txt
    pytest.importorskip("peft", reason="peft (requirements.txt) is not installed; diffusers needs it for LoRAs")


@pytest.fixture(scope="module")
def ink_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_lora(tmp_path_factory.mktemp("loras") / "ink.safetensors", seed=1)


def lora_app_config(fake: FakeDiscord, ink: Path, **sections: object) -> AppConfig:
    models = {"tiny": tiny_model(), "tiny-xl": tiny_model(source="builtin:tiny-xl", family="sdxl")}
    loras = {
        "ink": LoraConfig(source=str(ink), families=["sd1"], trigger_words=["inkwash"]),
        "fur": LoraConfig(source=str(ink), families=["sd1"], default_weight=0.6),
        "glow": LoraConfig(source=str(ink.with_name("glow.safetensors")), families=["sdxl"]),
        "broken": LoraConfig(source=str(ink.with_name("broken.safetensors")), families=["sd1"]),
    }
    generation = GenerationConfig(default_model="tiny", models=models, loras=loras, executor=ExecutorConfig(
        device="cpu", preview_every_steps=1, max_batch_images=4))
    return tiny_app_config(fake, models=models, generation=generation, **sections)


def parameters(result: StoredMessage) -> str:
    found = read_parameters(result.attachments[0].data)
    assert found is not None, "the result carries no parameters text"
    return found


async def test_a_lora_in_the_prompt_is_shown_recorded_and_kept_by_rerolls_and_variations(
        fake: FakeDiscord, tmp_path: Path, ink_file: Path) -> None:
    async with running_bot(fake, tmp_path, lora_app_config(fake, ink_file)):
        handle = await fake.slash("imagine", {"prompt": "a fox <lora:ink:0.8>", "seed": 5}, user="alice")
        result = await handle.wait_original(is_result)
        reroll = await fake.click(result, button(result, "🔄"), user="alice")
        rerolled = await reroll.wait_original(is_result)
        variation = await fake.click(result, button(result, "V1"), user="alice")
        varied = await variation.wait_original(is_result)
    # The tag is gone from the prompt the model saw; the LoRA's trigger word was added, once.
    assert result.content.startswith(f"**a fox, inkwash** — <@{fake.user('alice').id}>\n")
    assert "Seed 5 · model tiny · LoRA <lora:ink:0.8> · 64×64 · 2 steps ·" in result.content
    assert parameters(result).splitlines()[0] == "a fox, inkwash <lora:ink:0.8>"
    for follow_up, note in ((rerolled, "Rerolled"), (varied, "Variations")):
        assert follow_up.content.startswith("**a fox, inkwash** —") and note in follow_up.content
        assert "· LoRA <lora:ink:0.8> ·" in follow_up.content
        assert parameters(follow_up).splitlines()[0] == "a fox, inkwash <lora:ink:0.8>"


async def test_the_lora_option_uses_the_default_weight(fake: FakeDiscord, tmp_path: Path, ink_file: Path) -> None:
    async with running_bot(fake, tmp_path, lora_app_config(fake, ink_file)):
        handle = await fake.slash("imagine", {"prompt": "a fox <lora:ink:-0.5>", "lora": "fur"}, user="alice")
        result = await handle.wait_original(is_result)
    assert "· LoRAs <lora:ink:-0.5> <lora:fur:0.6> ·" in result.content


async def test_bad_loras_are_refused_privately_saying_what_fits(fake: FakeDiscord, tmp_path: Path,
                                                                ink_file: Path) -> None:
    cases = [
        ({"prompt": "a fox <lora:nope:1>"}, "unknown LoRA 'nope'; LoRAs for model tiny: broken, fur, ink"),
        ({"prompt": "a fox", "lora": "glow"},
         "LoRA 'glow' is made for sdxl models, not for model tiny (sd1); LoRAs for model tiny: broken, fur, ink"),
        ({"prompt": "a fox <lora:ink>", "model": "tiny-xl"},
         "LoRA 'ink' is made for sd1 models, not for model tiny-xl (sdxl); LoRAs for model tiny-xl: glow"),
        ({"prompt": "a fox <lora:ink:9>"}, "<lora:ink:9> has weight 9, out of range; allowed: -2 to 2"),
        ({"prompt": "a fox <lora:ink> <lora:fur> <lora:broken> <lora:ink:1>"},
         "4 LoRAs given; allowed: at most 3 per request"),
    ]
    async with running_bot(fake, tmp_path, lora_app_config(fake, ink_file)):
        for options, expected in cases:
            reply = await (await fake.slash("imagine", options, user="alice")).wait_original()
            assert reply.ephemeral and expected in reply.content, reply.content
        help_ = await (await fake.slash("help", user="alice")).wait_original()
    assert public(fake) == []
    assert ("LoRAs: `<lora:NAME:WEIGHT>` in the prompt (weight -2 to 2; left out: the LoRA's default) or the "
            "`lora` option, at most 3 per request: `broken`, `fur`, `glow`, `ink`") in help_.content


async def test_a_lora_that_does_not_load_fails_its_job_with_a_clear_message(fake: FakeDiscord, tmp_path: Path,
                                                                            ink_file: Path) -> None:
    async with running_bot(fake, tmp_path, lora_app_config(fake, ink_file)):
        failed = await fake.slash("imagine", {"prompt": "a fox <lora:broken>"}, user="alice")
        shown = await failed.wait_original(lambda m: "could not be made" in m.content)
        fine = await (await fake.slash("imagine", {"prompt": "a fox"}, user="alice")).wait_original(is_result)
    assert shown.content == ("❌ This image could not be made: LoRA 'broken' could not be loaded on this bot; "
                             "try again without it (the bot's operators see why in its log).")
    assert "LoRA" not in fine.content


async def test_autocomplete_offers_the_loras_of_the_chosen_model(fake: FakeDiscord, tmp_path: Path,
                                                                 ink_file: Path) -> None:
    async with running_bot(fake, tmp_path, lora_app_config(fake, ink_file)):
        async def offered(options: dict[str, object]) -> list[object]:
            return [choice["value"] for choice in await fake.autocomplete("imagine", "lora", options)]

        assert await offered({"prompt": "x", "lora": ""}) == ["broken", "fur", "ink"]  # the default model's
        assert await offered({"prompt": "x", "lora": "U"}) == ["fur"]
        assert await offered({"prompt": "x", "model": "tiny-xl", "lora": ""}) == ["glow"]
        assert await offered({"prompt": "x --model tiny-xl", "lora": ""}) == ["glow"]
        assert await offered({"prompt": "x", "model": "no-such", "lora": ""}) == ["broken", "fur", "ink"]


async def test_jobs_share_a_batch_only_with_the_same_loras(fake: FakeDiscord, clock: FrozenClock, tmp_path: Path,
                                                          ink_file: Path) -> None:
    """Fair order is whale, crab, frog, swan: only whale and crab have the same LoRAs and weights."""
    gpu = GateExecutor()
    gpu.max_batch_images = 4
    config = lora_app_config(fake, ink_file, scheduler=SchedulerConfig(batch_window_ms=5000, position_update_s=0))
    async with running_bot(fake, tmp_path, config, executor=gpu):
        first = await fake.slash("imagine", {"prompt": "a slow castle"}, user="bob")
        await first.wait_original(lambda m: "Queued" in m.content)
        await clock.advance(5)  # bob's job runs alone and holds the executor while the others queue
        await first.wait_original(lambda m: "Starting" in m.content)
        handles = []
        for prompt, user in (("a whale <lora:ink:0.8>", "alice"), ("a crab <lora:ink:0.8>", "carol"),
                             ("a frog", "bob"), ("a swan <lora:ink:0.5>", "alice")):
            # One at a time: the bot handles interactions concurrently, and alice's swan must queue after her whale.
            handles.append(await fake.slash("imagine", {"prompt": prompt}, user=user))
            await handles[-1].wait_original(lambda m: "Queued" in m.content)
        await clock.advance(5)
        gpu.gate.set()
        for handle in (first, *handles):
            await handle.wait_original(is_result)
    batches = sorted(sorted(request.prompt.split(",")[0] for request in batch) for batch in gpu.batches)
    assert batches == [["a crab", "a whale"], ["a frog"], ["a slow castle"], ["a swan"]]
