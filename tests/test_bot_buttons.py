"""The buttons under results and status messages: U, V, reroll, delete and cancel, with permissions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.bot_harness import GateExecutor, button, decode, is_result, public, running_bot, tiny_app_config, tiny_model
from tests.fake_discord import FakeDiscord, FakeRejected, StoredMessage


def seeds_of(message: StoredMessage) -> list[int]:
    found = re.search(r"Seeds? ([\d, ]+) ·", message.content)
    assert found, message.content
    return [int(seed) for seed in found[1].split(", ")]


async def test_upscale_variation_and_reroll(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, tmp_path):
        handle = await fake.slash("imagine", {"prompt": "a red fox --seed 5 --count 2"}, user="alice")
        original = await handle.wait_original(is_result)

        upscale = await fake.click(original, button(original, "U2"), user="alice")
        upscaled = await upscale.wait_original(is_result)
        assert decode(upscaled).size == (128, 128)  # image 2 alone at twice the size
        assert "Upscaled 2×" in upscaled.content and seeds_of(upscaled) == [6]

        variation = await fake.click(original, button(original, "V1"), user="bob")
        varied = await variation.wait_original(is_result)
        assert "Variations" in varied.content and "strength 0.6" in varied.content
        assert decode(varied).size == (128, 64) and not set(seeds_of(varied)) & {5, 6}

        reroll = await fake.click(original, button(original, "🔄"), user="alice")
        rerolled = await reroll.wait_original(is_result)
        assert rerolled.content.startswith("**a red fox**") and "Rerolled" in rerolled.content
        assert len(seeds_of(rerolled)) == 2 and seeds_of(rerolled) != [5, 6]
        # Each follow-up is its own public message; the original stays as it was.
        assert len([m for m in public(fake) if is_result(m)]) == 4
        assert fake.message(original.id).content == original.content


async def test_upscale_beyond_the_model_limit_sends_the_full_size_image(fake: FakeDiscord, tmp_path: Path) -> None:
    config = tiny_app_config(fake, models={"tiny": tiny_model(max_width=64, max_height=64, max_pixels=64 * 64)})
    async with running_bot(fake, tmp_path, config):
        handle = await fake.slash("imagine", {"prompt": "a red fox --seed 5"}, user="alice")
        original = await handle.wait_original(is_result)
        click = await fake.click(original, button(original, "U1"), user="carol")
        reply = await click.wait_original(lambda m: bool(m.attachments))  # after the "thinking" defer
        assert not reply.ephemeral and decode(reply).size == (64, 64)
        assert "at full size (seed 5)" in reply.content and "allowed: 64 to 64" in reply.content
        assert reply.allowed_mentions == {"parse": []}  # names alice without pinging her


async def test_delete_by_owner_moderator_and_refused_for_others(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, tmp_path):
        mine = await (await fake.slash("imagine", {"prompt": "a cat"}, user="alice")).wait_original(is_result)
        other = await (await fake.slash("imagine", {"prompt": "a dog"}, user="alice")).wait_original(is_result)

        refused = await fake.click(mine, button(mine, "🗑"), user="carol")
        reply = await refused.wait_original()
        assert reply.ephemeral
        assert "Only the person who asked for this image or a moderator of this server can delete it." in reply.content
        assert not fake.message(mine.id).deleted

        owner = await fake.click(mine, button(mine, "🗑"), user="alice")
        await fake.wait_until(lambda: fake.message(mine.id).deleted, what="alice's delete")
        assert owner.response_type == 6  # acknowledged without a message of its own

        moderator = await fake.click(other, button(other, "🗑"), user="bob")  # bob holds the moderator role
        await fake.wait_until(lambda: fake.message(other.id).deleted, what="the moderator's delete")
        assert moderator.response_type == 6

        # A deleted image's buttons are gone with it: Discord delivers no click on a deleted message.
        with pytest.raises(FakeRejected, match="deleted"):
            await fake.click(mine, button(mine, "U1"), user="alice")


async def test_cancel_while_queued_and_refused_for_others(fake: FakeDiscord, tmp_path: Path) -> None:
    gpu = GateExecutor()
    async with running_bot(fake, tmp_path, executor=gpu):
        first = await fake.slash("imagine", {"prompt": "a slow castle"}, user="alice")
        await first.wait_original(lambda m: "Starting" in m.content)  # holds the GPU until the gate opens
        second = await fake.slash("imagine", {"prompt": "a waiting tower"}, user="alice")
        status = await second.wait_original(lambda m: "Queued" in m.content)

        refused = await fake.click(status, button(status, "Cancel"), user="carol")
        reply = await refused.wait_original()
        assert reply.ephemeral and "moderator" in reply.content
        assert "Queued" in fake.message(status.id).content

        cancel = await fake.click(status, button(status, "Cancel"), user="alice")
        assert (await cancel.wait_original()).content == "Cancelled." and cancel.original is not None
        assert cancel.original.ephemeral
        cancelled = await second.wait_original(lambda m: m.content.startswith("✖ Cancelled."))
        assert cancelled.components == []  # no buttons on a cancelled job

        gpu.gate.set()
        result = await first.wait_original(is_result)
        assert "a slow castle" in result.content and decode(result).size == (64, 64)
    assert [batch[0].prompt for batch in gpu.batches] == ["a slow castle"]  # the cancelled job never ran
