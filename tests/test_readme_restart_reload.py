"""README claims about restarts and live configuration, proven through the real bot and the fake Discord.

Each test's docstring quotes the README sentence it proves.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from bot.core.config_store import ConfigStore
from tests.bot_harness import button, decode, is_result, public, running_bot, tiny_app_config
from tests.fake_discord import FakeDiscord

FILE_CONFIG = """\
models:
  default: tiny
  tiny: {{source: "builtin:tiny", default_steps: 2, max_steps: 50, default_width: 64, default_height: 64}}
{extra_models}
executor: {{device: cpu, preview_every_steps: 1, max_batch_images: 4}}
scheduler: {{batch_window_ms: 0, position_update_s: 0, reload_poll_s: {poll}}}
limits: {{user_rate: null, guild_rate: null, max_queued_per_user: {cap}, daily_images_per_user: null}}
bot: {{progress_interval_s: 0}}
"""
OTHER_MODEL = '  pixie: {source: "builtin:tiny", default_steps: 3, default_width: 96, default_height: 64}'


def write_config(path: Path, *, extra_models: str = "", cap: int = 5, poll: float = 3600, stamp: int = 1) -> None:
    path.write_text(FILE_CONFIG.format(extra_models=extra_models, cap=cap, poll=poll))
    os.utime(path, ns=(stamp * 1_000_000_000, stamp * 1_000_000_000))  # a distinct mtime per version


def reloaded(store: ConfigStore) -> asyncio.Event:
    event = asyncio.Event()
    store.subscribe(lambda config: event.set())
    return event


async def test_buttons_keep_working_after_a_restart(fake: FakeDiscord, tmp_path: Path, database_url: str) -> None:
    """README: "Buttons keep working after restarts." A result made by one run of the bot is upscaled,
    varied, rerolled and deleted by the next run, on the same data directory and database (SQLite, PostgreSQL)."""
    config = tiny_app_config(fake)
    async with running_bot(fake, tmp_path, config, database_url=database_url):
        handle = await fake.slash("imagine", {"prompt": "a lantern --seed 3"}, user="alice")
        result = await handle.wait_original(is_result)
    # A new bot: new client, storage, scheduler, executor.
    async with running_bot(fake, tmp_path, config, database_url=database_url):
        for label, note, size in (("U1", "Upscaled 2×", (128, 128)), ("V1", "Variations", (64, 64)),
                                  ("🔄", "Rerolled", (64, 64))):
            click = await fake.click(result, button(result, label), user="alice")
            made = await click.wait_original(is_result)
            assert "**a lantern**" in made.content and note in made.content and decode(made).size == size
        delete = await fake.click(result, button(result, "🗑"), user="alice")
        await fake.wait_until(lambda: fake.message(result.id).deleted, what="the restarted bot's delete")
        assert delete.response_type == 6


async def test_a_changed_file_is_served_without_a_restart(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "The bot re-reads the file when it changes" and "moderators tune it in `config.yaml`
    without a restart". The file watcher picks up a new model and a new limit on the running bot, and
    the executor serves the new model at once."""
    path = tmp_path / "config.yaml"
    write_config(path, poll=0.05)
    store = ConfigStore(path)
    changed = reloaded(store)
    async with running_bot(fake, tmp_path / "data", store, watch_config=True):
        refused = await fake.slash("imagine", {"prompt": "a kite --model pixie"}, user="alice")
        assert "model 'pixie' is not available; allowed: tiny" in (await refused.wait_original()).content

        changed.clear()  # the start-up published the config too (stored /mod settings laid over it)
        write_config(path, extra_models=OTHER_MODEL, cap=1, poll=0.05, stamp=2)
        await asyncio.wait_for(changed.wait(), timeout=60)  # the bot's own watcher noticed the file

        served = await fake.slash("imagine", {"prompt": "a kite --model pixie"}, user="alice")
        result = await served.wait_original(is_result)
        assert "model pixie" in result.content and decode(result).size == (96, 64)  # pixie's own defaults
        assert store.current.limits.max_queued_per_user == 1


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX only")
async def test_sighup_reloads_a_running_bot(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "The bot re-reads the file ... on SIGHUP". The watcher polls only hourly here, so the
    signal alone brings the new model in."""
    path = tmp_path / "config.yaml"
    write_config(path)
    store = ConfigStore(path)
    changed = reloaded(store)
    async with running_bot(fake, tmp_path / "data", store, watch_config=True):
        changed.clear()  # the start-up published the config too (stored /mod settings laid over it)
        write_config(path, extra_models=OTHER_MODEL, stamp=2)
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(changed.wait(), timeout=60)
        handle = await fake.slash("imagine", {"prompt": "a comet --model pixie"}, user="alice")
        assert "model pixie" in (await handle.wait_original(is_result)).content


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX only")
async def test_an_invalid_file_is_rejected_and_the_running_config_stays(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "An invalid file is rejected with a message naming the key, its line and what is allowed;
    the running config stays." The bot keeps serving with the config it had."""
    path = tmp_path / "config.yaml"
    write_config(path, extra_models=OTHER_MODEL)
    store = ConfigStore(path)
    rejected: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    store.subscribe(lambda config: None, on_rejected=rejected.set_result)
    async with running_bot(fake, tmp_path / "data", store, watch_config=True):
        path.write_text(path.read_text().replace("max_queued_per_user: 5", "max_queued_per_user: -2"))
        os.kill(os.getpid(), signal.SIGHUP)
        reason = await asyncio.wait_for(rejected, timeout=60)
        assert "limits.max_queued_per_user (line 7)" in reason and store.current.limits.max_queued_per_user == 5
        handle = await fake.slash("imagine", {"prompt": "a comet --model pixie"}, user="alice")
        assert "model pixie" in (await handle.wait_original(is_result)).content  # still serving, as before
    assert all("pixie" in m.content for m in public(fake) if is_result(m))
