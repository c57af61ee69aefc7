"""The real first start, offline: the bot's default model is a hub repo (served by the fake hub over
loopback), and a request that arrives while it downloads waits with the download's real progress."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from generation.builtin import build_builtin
from generation.config import ExecutorConfig, GenerationConfig
from tests.bot_harness import WatchedStorage, is_result, running_bot, tiny_app_config, tiny_model
from tests.fake_discord import FakeDiscord
from tests.fake_hub import FakeHub, FakeRepo, point_hub_at, read_folder

UNET = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    build_builtin("builtin:tiny").save_pretrained(tmp_path / "repo")
    with FakeHub([FakeRepo.of("community/sd15-tiny", {"main": read_folder(tmp_path / "repo")})]) as fake:
        point_hub_at(monkeypatch, fake.endpoint, tmp_path / "hf-home")
        yield fake
    fake.assert_no_failures()


# The hub serves the model only: its images are judged by the builtin checker (tests/test_safety_checker.py fetches
# the real checker's repo through the same hub path).
CPU_TINY_CHECKER = ExecutorConfig(device="cpu", safety_checker="builtin:tiny")


async def test_a_request_waits_with_the_real_download_progress_then_gets_its_image(
        fake: FakeDiscord, hub: FakeHub, tmp_path: Path) -> None:
    """Issue: "Start-up loads the default model at once, in the background, while the bot connects. Requests
    that arrive meanwhile are queued. Their status says "Loading model sd15 — 45 % (1.9 of 4.3 GB)", with
    progress taken from the real download's byte counts"."""
    hub.hold_after(UNET, 20_000)  # the download stops partway until the test has looked
    generation = GenerationConfig(default_model="sd15", models={"sd15": tiny_model(source="community/sd15-tiny")},
                                  executor=CPU_TINY_CHECKER, cache_dir=str(tmp_path / "weights"))
    async with running_bot(fake, tmp_path, tiny_app_config(fake, generation=generation)):
        handle = await fake.slash("imagine", {"prompt": "a harbour at dawn"}, user="alice")
        waiting = await handle.wait_original(lambda m: "Loading model sd15 —" in m.content)
        shown = re.fullmatch(r"Queued — next in line\n⏳ Loading model sd15 — (\d+)% \(([\d.]+) of ([\d.]+) MB\); "
                             r"requests start as soon as it is ready\.", waiting.content)
        assert shown is not None, waiting.content
        assert 0 <= int(shown[1]) < 100 and float(shown[2]) < float(shown[3])
        hub.release()
        result = await handle.wait_original(is_result)
    assert "a harbour at dawn" in result.content
    assert any(path.name == "model_index.json" for path in (tmp_path / "weights").rglob("*"))  # models.cache_dir


async def test_a_shutdown_during_the_download_stops_it_and_keeps_the_request(fake: FakeDiscord, hub: FakeHub,
                                                                              tmp_path: Path) -> None:
    """A bot stopped while its first download runs stops the download at its next chunk (it does not wait for
    gigabytes), and the request that waited is kept for the next start rather than started meanwhile."""
    hub.hold_after(UNET, 20_000)
    cache = tmp_path / "weights"
    generation = GenerationConfig(default_model="sd15", models={"sd15": tiny_model(source="community/sd15-tiny")},
                                  executor=CPU_TINY_CHECKER, cache_dir=str(cache))
    async with running_bot(fake, tmp_path, tiny_app_config(fake, generation=generation)) as bot:
        handle = await fake.slash("imagine", {"prompt": "a harbour at night"}, user="alice")
        await handle.wait_original(lambda m: "Loading model sd15 —" in m.content)
        storage = bot.services.storage
        assert isinstance(storage, WatchedStorage)
        await storage.wait_until(lambda: _status_recorded(storage), what="the status message recorded")
        warmup = bot.services.warmup
        assert warmup is not None
        await warmup.stop()  # what the shutdown does first
        hub.release()  # the next chunk arrives; the download stops there
    assert not any(path.name == UNET.rsplit("/", 1)[1] for path in cache.rglob("*"))  # no whole UNet stored
    status = await handle.wait_original(lambda m: "continues when the bot is back" in m.content)
    assert status.content.startswith("⏸")


async def _status_recorded(storage: WatchedStorage) -> bool:
    jobs = await storage.jobs_in_states(["queued"])
    return bool(jobs) and all(job.status_message_id is not None for job in jobs)
