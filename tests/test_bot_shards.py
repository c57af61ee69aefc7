"""Sharding (README, Scaling out: "`discord.shards`"): the bot as discord.py's AutoShardedClient against the
fake Discord, which recommends shards and sends each guild's events to its own shard, as Discord does."""

from __future__ import annotations

import pytest

from bot.core.config import parse_config
from generation.errors import ConfigError


def test_shards_setting_accepts_none_auto_or_a_count_and_says_what_is_allowed() -> None:
    assert parse_config("discord: {}\n").discord.shards is None  # default: one connection, as before
    assert parse_config("discord: {shards: none}\n").discord.shards is None
    assert parse_config("discord: {shards: auto}\n").discord.shards == "auto"
    assert parse_config("discord: {shards: 4}\n").discord.shards == 4
    allowed = ("allowed: none (one gateway connection, the default), auto (as many shards as Discord recommends) "
               "or a number of shards from 1 to 10000")
    shown = {"many": "'many'", "0": "0", "-2": "-2", "2.5": "2.5", "true": "True", "10001": "10001"}
    for value, echoed in shown.items():
        with pytest.raises(ConfigError) as refused:
            parse_config(f"discord:\n  dev_guilds: []\n  shards: {value}\n")
        assert str(refused.value) == (f"config.yaml: invalid configuration: discord.shards (line 3): {echoed} is not "
                                      f"a shard setting; {allowed}")
    # discord.py's own name would otherwise be kept as an unknown key and silently run one shard.
    with pytest.raises(ConfigError, match=r"discord \(line 1\): shard_count is not a setting; use shards: none"):
        parse_config("discord:\n  shard_count: 2\n")
