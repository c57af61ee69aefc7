"""config.yaml: the shipped file, error messages, limit resolution and live reload."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

import pytest

from bot.core import config_store as config_module
from bot.core.config import (
    AppConfig,
    BotConfig,
    Bucket,
    DiscordConfig,
    GuildConfig,
    Limits,
    SchedulerConfig,
    load_config,
    parse_config,
    resolve_limits,
)
from bot.core.config_store import ConfigStore
from bot.scheduler import SimulatedClock
from generation.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
GUILD, ROLE_A, ROLE_B, ROLE_MUTED = 42, 7, 8, 9

OVERRIDES = f"""
limits:
  user_rate: {{unit: requests, amount: 6, window_s: 60, burst: 3}}
  max_queued_per_user: 3
  daily_images_per_user: 100
guilds:
  "{GUILD}":
    weight: 3
    channels: [500, 501]
    moderator_roles: [77]
    limits:
      daily_images_per_user: 20
      max_queued_per_guild: null
    roles:
      "{ROLE_A}": {{daily_images_per_user: 200, user_rate: {{amount: 30, window_s: 60, burst: 10}}}}
      "{ROLE_B}": {{daily_images_per_user: null}}
      "{ROLE_MUTED}": {{daily_images_per_user: 0, max_queued_per_user: 0}}
"""


def test_shipped_config_is_valid_and_documents_every_limit() -> None:
    """Every key is shown with a comment; a server's keys in the commented-out example of ``guilds:``."""
    config = load_config(REPO / "config.yaml")
    lines = (REPO / "config.yaml").read_text().splitlines()
    keys = [
        *Limits.model_fields,
        *SchedulerConfig.model_fields,
        *GuildConfig.model_fields,
        *DiscordConfig.model_fields,
        *BotConfig.model_fields,
    ]
    for key in keys:
        example = key in GuildConfig.model_fields and key != "limits"
        index = next((i for i, line in enumerate(lines)
                      if (line.strip().lstrip("#").strip() if example else line.strip()).startswith(f"{key}:")), None)
        assert index is not None, f"config.yaml does not show {key}"
        assert "#" in lines[index] or "#" in lines[index - 1], f"config.yaml does not explain {key}"
    assert config.scheduler.batch_window_ms == 30
    assert config.generation.executor.max_batch_images == 4
    assert config.bot.aspects["16:9"] == "912x512"


def test_the_shipped_config_names_no_server_and_its_commented_example_is_valid() -> None:
    """Issue 11: the example server "looks like something you must edit": it is commented out, and following
    the comment (replace ``{}`` by the lines without their ``#``) gives a valid server entry."""
    text = (REPO / "config.yaml").read_text()
    assert load_config(REPO / "config.yaml").guilds == {}
    lines = text.splitlines()
    start = lines.index("guilds: {}")
    example = []
    for line in lines[start + 1:]:
        if not line.startswith("#  "):
            break
        example.append(line[1:])
    enabled = "\n".join([*lines[:start], "guilds:", *example, *lines[start + 1 + len(example):]])
    guild = parse_config(enabled).guilds[123456789012345678]
    assert guild.weight == 2.0 and guild.limits.daily_images_per_user == 50
    assert guild.roles[234567890123456789].max_queued_per_user == 6


def test_defaults_without_a_file_match_the_shipped_file() -> None:
    shipped = load_config(REPO / "config.yaml")
    default = AppConfig()
    assert shipped.limits == default.limits
    assert shipped.scheduler == default.scheduler


def test_invalid_value_names_key_line_and_allowed_values() -> None:
    text = "limits:\n  user_rate:\n    unit: images\n    amount: 3\nscheduler:\n  batch_window_ms: -1\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.yaml")
    message = str(caught.value)
    assert "limits.user_rate.unit (line 3)" in message and "'requests' or 'cost'" in message
    assert "scheduler.batch_window_ms (line 6): -1 is out of range; allowed: 0 to 5000 ms" in message


def test_unknown_keys_and_bad_zone_are_named() -> None:
    with pytest.raises(ConfigError, match=r"limts \(line 2\): unknown key"):
        parse_config("models: {}\nlimts: {}\n")
    with pytest.raises(ConfigError, match=r"quota_timezone \(line 1\).*IANA names"):
        parse_config("limits: {quota_timezone: Mars/Olympus}\n")
    with pytest.raises(ConfigError, match=r"guilds.42.roles.7.guild_rate .*unknown key"):
        parse_config('guilds:\n  "42":\n    roles:\n      "7": {guild_rate: {amount: 1}}\n')
    with pytest.raises(ConfigError, match=r"style 'x' lacks \{prompt\}"):
        parse_config("bot:\n  styles: {x: 'no placeholder'}\n")


def test_model_errors_come_through_generation_config() -> None:
    with pytest.raises(ConfigError, match=r"models\.default"):
        parse_config("models:\n  default: nope\n  tiny: {source: 'builtin:tiny'}\n")


def test_discord_and_bot_sections_accept_extra_keys_for_later() -> None:
    config = parse_config("discord: {dev_guilds: [1, 2], activity: drawing}\nbot: {database_url: 'sqlite:///x.db'}\n")
    assert config.discord.dev_guilds == [1, 2]
    assert config.bot.database_url == "sqlite:///x.db"
    assert config.bot.styles  # defaults kept


def test_resolution_guild_overrides_defaults_and_keeps_the_rest() -> None:
    config = parse_config(OVERRIDES)
    plain = resolve_limits(config, GUILD, [])
    assert plain.daily_images_per_user == 20
    assert plain.max_queued_per_guild is None  # null = no limit, explicitly
    assert plain.max_queued_per_user == 3  # inherited
    other_guild = resolve_limits(config, 1, [ROLE_A])
    assert other_guild.daily_images_per_user == 100  # role ids of another server do nothing here


def test_resolution_most_generous_role_wins() -> None:
    config = parse_config(OVERRIDES)
    assert resolve_limits(config, GUILD, [ROLE_A]).daily_images_per_user == 200
    assert resolve_limits(config, GUILD, [ROLE_A, ROLE_B]).daily_images_per_user is None
    assert resolve_limits(config, GUILD, [ROLE_MUTED]).daily_images_per_user == 0
    both = resolve_limits(config, GUILD, [ROLE_MUTED, ROLE_A])
    assert both.daily_images_per_user == 200
    assert both.max_queued_per_user == 0  # only the muted role sets it, so it applies
    assert both.user_rate == Bucket(amount=30, window_s=60, burst=10)
    assert config.guild_weight(GUILD) == 3 and config.guild_weight(5) == 1.0
    assert config.is_moderator(GUILD, [77]) and not config.is_moderator(GUILD, [ROLE_A])


def _write(path: Path, text: str, stamp: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(stamp, stamp))


def test_reload_valid_file_takes_effect_and_invalid_file_keeps_running_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    _write(path, "limits: {daily_images_per_user: 5}\n", 1_000_000_000)
    store = ConfigStore(path)
    seen: list[AppConfig] = []
    store.subscribe(seen.append)
    _write(path, "limits: {daily_images_per_user: 9}\n", 2_000_000_000)
    assert store.reload().limits.daily_images_per_user == 9
    _write(path, "limits:\n  daily_images_per_user: lots\n", 3_000_000_000)
    with pytest.raises(ConfigError, match=r"daily_images_per_user \(line 2\).*valid integer"):
        store.reload()
    assert store.current.limits.daily_images_per_user == 9
    assert store.last_error is not None and "line 2" in store.last_error
    assert [config.limits.daily_images_per_user for config in seen] == [9]


async def test_watcher_reloads_on_change_with_simulated_time(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    _write(path, "limits: {max_queued_per_user: 1}\n", 1_000_000_000)
    store = ConfigStore(path)
    outcomes: asyncio.Queue[str] = asyncio.Queue()
    store.subscribe(lambda config: outcomes.put_nowait("accepted"), on_rejected=outcomes.put_nowait)
    parsed_on: list[int] = []
    real_load = config_module.load_config
    monkeypatch.setattr(config_module, "load_config",
                        lambda where: (parsed_on.append(threading.get_ident()), real_load(where))[1])
    clock = SimulatedClock()
    watcher = asyncio.create_task(store.watch(clock.sleep, 5.0))
    _write(path, "limits: {max_queued_per_user: 4}\n", 2_000_000_000)
    await clock.advance(4.9)
    assert store.current.limits.max_queued_per_user == 1 and outcomes.empty()
    await clock.advance(0.2)
    assert await asyncio.wait_for(outcomes.get(), 60) == "accepted"
    assert store.current.limits.max_queued_per_user == 4
    _write(path, "limits: {max_queued_per_user: [}\n", 3_000_000_000)
    await clock.advance(5.0)
    assert "not valid YAML" in await asyncio.wait_for(outcomes.get(), 60)
    assert store.current.limits.max_queued_per_user == 4  # broken file: logged, old config stays
    assert store.last_error is not None and "not valid YAML" in store.last_error
    # Both files were read and parsed on a worker thread, never on the event loop's.
    assert len(parsed_on) == 2 and threading.get_ident() not in parsed_on
    watcher.cancel()


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX only")
async def test_sighup_reloads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    _write(path, "limits: {max_queued_per_user: 1}\n", 1_000_000_000)
    store = ConfigStore(path)
    loop = asyncio.get_running_loop()
    reloaded = asyncio.Event()
    store.subscribe(lambda config: reloaded.set())
    assert store.install_sighup(loop)
    try:
        _write(path, "limits: {max_queued_per_user: 2}\n", 2_000_000_000)
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(reloaded.wait(), timeout=60)  # the signal handler runs on the loop
        assert store.current.limits.max_queued_per_user == 2
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_unquoted_numeric_keys_and_non_utf8_files_are_reported_clearly(tmp_path: Path) -> None:
    text = "guilds:\n  123:\n    roles:\n      77:\n        daily_images_per_user: -5\n"
    with pytest.raises(ConfigError, match=r"guilds.123.roles.77.daily_images_per_user \(line 5\)"):
        parse_config(text, "config.yaml")
    broken = tmp_path / "config.yaml"
    broken.write_bytes(b"limits:\n  quota_timezone: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(broken)
