"""Servers' stored settings without Discord: how they meet config.yaml (bot.core.overrides, ConfigStore), how
/mod edits them, and values as moderators type them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.config import AppConfig, Bucket, GuildConfig, Limits, UserLimits, resolve_limits
from bot.core.config_store import ConfigStore
from bot.core.errors import InvalidSetting
from bot.core.overrides import file_entry, merge
from bot.core.policy import ContentConfig, ContentRule
from bot.features.moderation import settings
from bot.features.moderation.values import parse_value, show_value
from generation.errors import ConfigError

GUILD, ROLE = 42, 7
FILE = f"""
limits: {{max_queued_per_user: 3}}
guilds:
  "{GUILD}":
    channels: [500]
    limits: {{guild_rate: {{unit: cost, amount: 240, window_s: 600}}, daily_images_per_user: 20}}
    roles:
      "{ROLE}": {{daily_images_per_user: 200, max_queued_per_user: 6}}
    content:
      default_negative: blurry
      rules: [{{id: gore, words: [blood]}}, {{id: spam, words: [buy now]}}]
"""


def store_on(tmp_path: Path, text: str = FILE) -> ConfigStore:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return ConfigStore(path)


def test_an_override_wins_key_by_key_and_leaves_the_files_other_keys() -> None:
    base = file_entry(GuildConfig.model_validate({"channels": [500], "limits": {"daily_images_per_user": 20},
                                                  "roles": {ROLE: {"max_queued_per_user": 6}},
                                                  "content": {"rules": [{"id": "gore", "words": ["blood"]},
                                                                        {"id": "spam", "words": ["buy now"]}]}}))
    merged = merge(base, {"channels": [], "limits": {"user_rate": {"amount": 2, "window_s": 60}},
                          "roles": {str(ROLE): {"daily_images_per_user": None}},
                          "content": {"rules": [{"id": "gore", "words": []}]}})
    assert merged["channels"] == []  # a list is replaced whole
    assert merged["limits"] == {"daily_images_per_user": 20, "user_rate": {"amount": 2, "window_s": 60}}
    assert merged["roles"] == {str(ROLE): {"max_queued_per_user": 6, "daily_images_per_user": None}}
    assert merged["content"]["rules"] == [{"id": "spam", "words": ["buy now"]}, {"id": "gore", "words": []}]


def test_the_store_runs_the_file_with_overrides_and_keeps_the_file_apart(tmp_path: Path) -> None:
    store = store_on(tmp_path)
    heard: list[AppConfig] = []
    store.subscribe(heard.append)
    store.set_overrides(GUILD, {"limits": {"daily_images_per_user": 0}})
    assert resolve_limits(store.current, GUILD).daily_images_per_user == 0
    assert resolve_limits(store.current, GUILD).guild_rate == Bucket(unit="cost", amount=240, window_s=600)
    assert resolve_limits(store.current, GUILD, {ROLE}).daily_images_per_user == 200  # the role still wins
    assert resolve_limits(store.file, GUILD).daily_images_per_user == 20
    assert heard == [store.current]  # subscribers hear of it as of a reload
    store.set_overrides(GUILD, {})
    assert store.current.guilds[GUILD] == store.file.guilds[GUILD]


def test_a_bad_override_gets_the_files_message_and_changes_nothing(tmp_path: Path) -> None:
    store = store_on(tmp_path)
    before = store.current
    with pytest.raises(ConfigError) as caught:
        store.set_overrides(GUILD, {"limits": {"max_queued_per_guild": -1}})
    assert str(caught.value) == (f"/mod: invalid configuration: guilds.{GUILD}.limits.max_queued_per_guild: -1 is "
                                 "out of range; allowed: 0 to 100000")
    assert store.current is before and store.overrides(GUILD) == {}


def test_overrides_survive_a_reload_and_a_broken_one_is_skipped_not_fatal(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    store = store_on(tmp_path)
    store.load_overrides({GUILD: {"limits": {"daily_images_per_user": 0}}, 43: {"limits": {"retired": 1}}})
    assert 43 in store.skipped_overrides and "guilds.43.limits.retired: unknown key" in caplog.text
    assert 43 not in store.current.guilds  # the file's values apply there
    (tmp_path / "config.yaml").write_text(FILE.replace("max_queued_per_user: 3}", "max_queued_per_user: 9}"))
    store.reload()
    assert store.current.limits.max_queued_per_user == 9  # the file's change
    assert resolve_limits(store.current, GUILD).daily_images_per_user == 0  # the override, re-applied
    assert caplog.text.count("guilds.43.limits.retired") == 1  # a skipped override is logged once, not per reload


def test_limit_sources_name_the_file_the_stored_override_and_the_role(tmp_path: Path) -> None:
    store = store_on(tmp_path)
    store.set_overrides(GUILD, {"limits": {"max_queued_per_guild": 5}, "roles": {str(ROLE): {"user_rate": None}}})
    lines = {line.key: line for line in settings.limit_lines(store.current, store.overrides(GUILD), GUILD, {ROLE})}
    assert lines["max_queued_per_user"].source == "role override <@&7> (config.yaml)"
    assert (lines["user_rate"].value, lines["user_rate"].source) == (None, "role override <@&7> (set by /mod)")
    assert lines["guild_rate"].source == "server override (config.yaml)"
    assert lines["max_queued_per_guild"].source == "server override (set by /mod)"
    assert lines["quota_timezone"].source == "config.yaml default"
    assert set(lines) == set(Limits.model_fields) and set(settings.ROLE_KEYS) == set(UserLimits.model_fields)


def test_edits_keep_only_what_moderators_changed() -> None:
    edited = settings.set_limit({}, "max_queued_per_user", 5, role_id=ROLE)
    assert edited == {"roles": {str(ROLE): {"max_queued_per_user": 5}}}
    assert settings.reset_limit(edited, "max_queued_per_user", role_id=ROLE) == {}
    with pytest.raises(InvalidSetting, match="is not set by /mod for this server"):
        settings.reset_limit({}, "max_queued_per_user")
    gore = [ContentRule(id="gore", words=["blood"])]
    added = settings.add_term({}, gore, "gore", " Blood Bath ")
    assert added == {"content": {"rules": [{"id": "gore", "words": ["blood", "Blood Bath"], "patterns": []}]}}
    with pytest.raises(InvalidSetting, match="already has that term"):
        settings.add_term({}, gore, "gore", "BLOOD")
    made = settings.add_term({}, [], "brands", "acme")
    assert settings.remove_term(made, [ContentRule(id="brands", words=["acme"])], [], "brands", "ACME",
                                from_file=False) == {}  # a rule only /mod made goes with its last term
    emptied = settings.remove_term({}, gore, [], "gore", "blood", from_file=True)
    assert emptied == {"content": {"rules": [{"id": "gore", "words": [], "patterns": []}]}}  # stays emptied
    assert ContentConfig.model_validate(merge({"rules": [{"id": "gore", "words": ["blood"]}]},
                                              emptied["content"])).rules[0].words == []
    assert settings.set_safety(settings.set_safety({}, "mode", "refuse"), "mode", None) == {}


@pytest.mark.parametrize(("typed", "value"), [
    ("6/60s", {"unit": "requests", "amount": 6, "window_s": 60.0}),
    ("6/1m burst 3", {"unit": "requests", "amount": 6, "window_s": 60.0, "burst": 3}),
    ("240 cost/10m burst 60", {"unit": "cost", "amount": 240, "window_s": 600.0, "burst": 60}),
    ("2.5 requests / 1h", {"unit": "requests", "amount": 2.5, "window_s": 3600.0}),
    ("{amount: 6, window_s: 60}", {"amount": 6, "window_s": 60}),
    ("null", None),
])
def test_buckets_are_typed_short_and_shown_the_same_way(typed: str, value: object) -> None:
    assert parse_value("user_rate", typed) == value
    if isinstance(value, dict) and "unit" in value:
        assert parse_value("user_rate", show_value(value)) == {**value, "burst": value.get("burst", value["amount"])}


def test_other_values_read_as_yaml_scalars() -> None:
    assert parse_value("daily_images_per_user", "50") == 50
    assert parse_value("daily_images_per_user", "null") is None
    assert parse_value("quota_timezone", "Europe/Berlin") == "Europe/Berlin"
    assert show_value(Bucket(amount=6, window_s=60, burst=3)) == "6 requests/60s burst 3"
    with pytest.raises(ConfigError, match="is not a bucket; allowed: AMOUNT/WINDOW such as 6/60s"):
        parse_value("user_rate", "6 per/minute")
