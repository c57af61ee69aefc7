"""What a member reads when a job fails: a fixed text and a reference, never the machine's details.

The executor's errors are written for operators (a model's path, an exception's text); they reach the
log under the reference that the member sees, so the two can be matched."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import InternalFailure
from bot.discord_ui.replies import error_text
from bot.discord_ui.texts import failure_text
from generation.errors import ConfigError, FixableFailure, GenerationFailed, InvalidRequest, ModelLoadError
from generation.interface import Outcome
from generation.request import GenerationRequest
from tests.bot_harness import GateExecutor, public, running_bot, tiny_app_config, tiny_model
from tests.fake_discord import FakeDiscord

SECRET = "/home/secret/models"
REFERENCE = re.compile(r"^❌ This image could not be made \(reference `([0-9a-f]{8})`\); please try again\.$")


def _logged(caplog: pytest.LogCaptureFixture, reference: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if reference in record.getMessage()]


async def test_a_model_that_cannot_load_shows_a_reference_not_its_path(fake: FakeDiscord, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """README: "the log has the details under the same reference, and members never see file paths or
    error internals." A model whose checkpoint is missing fails with its path in ModelLoadError's text."""
    models = {"tiny": tiny_model(), "lost": tiny_model(source=f"{SECRET}/sd15.safetensors")}
    async with running_bot(fake, tmp_path, tiny_app_config(fake, models=models)):
        handle = await fake.slash("imagine", {"prompt": "a fox", "model": "lost"}, user="alice")
        final = await handle.wait_original(lambda m: "could not be made" in m.content)
    assert SECRET not in final.content and "safetensors" not in final.content
    found = REFERENCE.match(final.content)
    assert found, final.content
    [detail] = _logged(caplog, found.group(1))  # the operator finds the whole story under that reference
    assert f"{SECRET}/sd15.safetensors" in detail and "ModelLoadError" in detail
    assert all(SECRET not in message.content for message in fake.messages)


class LeakyExecutor(GateExecutor):
    """Fails every request the way a pipeline crash reads in the runner: the exception's text, path and all."""

    async def run(self, batch: Sequence[GenerationRequest], on_progress: Any = None, *,
                  cancel_tokens: Any = None) -> list[Outcome]:
        text = f"generation failed: OSError: [Errno 2] No such file or directory: '{SECRET}/unet/weights.bin'"
        return [GenerationFailed(text) for _ in batch]


async def test_an_executor_failure_shows_a_reference_and_logs_the_detail(fake: FakeDiscord, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """README: "A job that fails for a reason on the bot's side says so with a reference"."""
    async with running_bot(fake, tmp_path, executor=LeakyExecutor()):
        first = await fake.slash("imagine", {"prompt": "a fox"}, user="alice")
        second = await fake.slash("imagine", {"prompt": "an owl"}, user="carol")
        shown = [await handle.wait_original(lambda m: "could not be made" in m.content) for handle in (first, second)]
    references = []
    for message in shown:
        assert SECRET not in message.content and "OSError" not in message.content
        found = REFERENCE.match(message.content)
        assert found, message.content
        references.append(found.group(1))
        [detail] = _logged(caplog, found.group(1))
        assert f"{SECRET}/unet/weights.bin" in detail
    assert references[0] != references[1]  # one reference per failure
    assert all(SECRET not in message.content for message in public(fake))


def test_replies_keep_operator_texts_out_of_chat(caplog: pytest.LogCaptureFixture) -> None:
    """The same rule for errors raised straight at a command: what the requester can act on is shown as it
    is; a model's path or a crash's text becomes a reference, the detail logged under it."""
    assert error_text(FixableFailure("out of GPU memory; try a smaller size")) == (
        "out of GPU memory; try a smaller size")
    assert "steps 80 is out of range" in error_text(InvalidRequest(["steps 80 is out of range; allowed: 1 to 50"]))
    for hidden in (ModelLoadError(f"model x: checkpoint file {SECRET}/x.safetensors does not exist"),
                   GenerationFailed(f"generation failed: OSError: {SECRET}"),
                   ConfigError(f"{SECRET}/config.yaml: bad")):
        text = error_text(hidden)
        assert SECRET not in text and "reference `" in text
        reference = text.split("`")[1]
        assert any(reference in r.getMessage() and r.exc_info and SECRET in str(r.exc_info[1]) for r in caplog.records)
    failure = InternalFailure("abcd1234")
    assert failure_text("failed", str(failure)) == (
        "❌ This image could not be made (reference `abcd1234`); please try again.")
    assert failure_text("failed", "out of GPU memory; try a smaller size") == (
        "❌ This image could not be made: out of GPU memory; try a smaller size.")
