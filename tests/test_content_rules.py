"""Content rules (``bot.core.content``): the matcher against the usual disguises, without false positives on
innocent words; the effective rules of a server; the default negative prompt; the compile cache."""

from __future__ import annotations

import pytest

from bot.core.config import AppConfig, GuildConfig
from bot.core.content import (
    ContentMatcher,
    ContentRules,
    ContentStats,
    join_spaced,
    normalise,
    readings,
    resolve_content,
)
from bot.core.policy import ContentConfig, ContentRule, SafetyConfig
from bot.core.safety import needs_check, resolve_safety

RULES = [ContentRule(id="gore", words=["gore", "blood bath"], patterns=[r"dis+membered"]),
         ContentRule(id="rude", words=["ass", "kill"])]
MATCHER = ContentMatcher(RULES)
ZW = "\u200b"  # zero-width space

BLOCKED = {
    # case and width
    "GORE": "gore", "Gore": "gore", "ｇｏｒｅ": "gore", "ＧＯＲＥ": "gore", "𝐠𝐨𝐫𝐞": "gore", "ⓖⓞⓡⓔ": "gore",
    # spacing tricks
    "g o r e": "gore", "g.o.r.e": "gore", "g-o-r-e": "gore", "g_o_r_e": "gore", "g . o . r . e": "gore",
    "a s s": "rude", "b l o o d b a t h": "gore", "a g o r e scene": "gore", "I saw g o r e": "gore",
    "d i s s m e m b e r e d": "gore",
    # zero-width and other format characters, soft hyphen
    f"g{ZW}o{ZW}r{ZW}e": "gore", "g\u200co\u200dre": "gore", "go\u2060re": "gore", "\ufeffgore": "gore",
    "go\u00adre": "gore", "as\u200bs": "rude",
    # accents
    "górë": "gore", "gôre": "gore", "àss": "rude",
    # look-alike Cyrillic and Greek letters
    "gоrе": "gore", "gοrε": "gore", "ԍore".replace("ԍ", "g"): "gore", "аss": "rude", "αss": "rude",
    "GΟRΕ": "gore", "кill": "rude",
    # leetspeak
    "g0r3": "gore", "g0re": "gore", "@ss": "rude", "a$$": "rude", "4ss": "rude", "k1ll": "rude", "ki11": "rude",
    "a55": "rude",
    # repeated letters
    "goooore": "gore", "gorrrre": "gore", "asssss": "rude", "kiiiill": "rude",
    # in a sentence, at its edges, with punctuation
    "a scene full of gore.": "gore", "gore, and more": "gore", "(gore)": "gore", "so much GORE!!!": "gore",
    # phrases and patterns
    "a blood bath": "gore", "bloodbath": "gore", "blood-bath": "gore", "dissssmembered": "gore",
    "DISMEMBERED": "gore",
    # disguises together
    f"Ｇ{ZW}０ｒ３": "gore", "g . 0 . r . 3": "gore", "Ａ ＄ ＄": "rude",
}

INNOCENT = [
    "class", "classic", "glass", "bass", "pass the salt", "assassin", "massive", "grass", "embassy",
    "gorefest", "gorgeous", "go red", "ego reflection", "let's go re-do", "good", "skill", "killer whale",
    "kilt", "bloody bathtub", "a red fox in snow", "1990", "$100", "a s", "Gorey",
]


@pytest.mark.parametrize("text", list(BLOCKED))
def test_disguised_terms_are_found(text: str) -> None:
    assert MATCHER.first_match(text) == BLOCKED[text]


@pytest.mark.parametrize("text", INNOCENT)
def test_innocent_words_that_contain_a_blocked_word_are_not_matched(text: str) -> None:
    assert MATCHER.first_match(text) is None


def test_the_first_rule_that_matches_is_named() -> None:
    assert MATCHER.first_match("kill the gore") == "gore"
    assert ContentMatcher([]).first_match("gore") is None
    assert MATCHER.first_match("") is None


def test_normalising_and_readings() -> None:
    assert normalise("ＣＡＦÉ\u200b") == "cafe"
    assert readings("s p 4 c e d") == ("s p a c e d",)  # leetspeak is read inside spaced-out runs too
    assert join_spaced("a s.p-a c e d word") == "aspaced word"
    assert set(readings("k1ll")) == {"kill", "klll"}  # 1 read as i, and as l
    assert readings("1990 and $100") == ("1990 and $100",)  # numbers stay numbers


def test_words_in_unspaced_scripts_match_inside_text() -> None:
    matcher = ContentMatcher([ContentRule(id="jp", words=["禁止"])])
    assert matcher.first_match("これは禁止です") == "jp"


def test_a_blocked_word_written_in_leetspeak_or_look_alikes_is_read_the_same_way() -> None:
    matcher = ContentMatcher([ContentRule(id="x", words=["gоr3"])])  # a Cyrillic о and a 3 in the rule itself
    assert matcher.first_match("GORE") == "x"


def test_server_rules_add_to_the_defaults_and_other_keys_replace_them() -> None:
    config = AppConfig(
        content=ContentConfig(rules=[RULES[0]], default_negative="nsfw", max_prompt_chars=300),
        guilds={1: GuildConfig(content=ContentConfig(rules=[RULES[1]], max_prompt_chars=100)),
                2: GuildConfig()})
    one = resolve_content(config, 1)
    assert [rule.id for rule in one.rules] == ["gore", "rude"]
    assert one.default_negative == "nsfw" and one.max_prompt_chars == 100
    assert resolve_content(config, 2) == resolve_content(config, 0) == config.content
    assert resolve_content(config, 3) == config.content  # a server without overrides


def test_rules_compile_once_per_config_object() -> None:
    rules = ContentRules()
    config = AppConfig(content=ContentConfig(rules=RULES))
    first = rules.for_guild(config, 1)
    assert rules.for_guild(config, 1) is first
    reloaded = config.model_copy()
    assert rules.for_guild(reloaded, 1) is not first  # a reload is a new config object: compiled anew


def test_the_default_negative_prompt_is_appended_once() -> None:
    content = ContentRules().for_guild(AppConfig(content=ContentConfig(default_negative="nsfw, nude")), 0)
    assert content.with_default_negative("") == "nsfw, nude"
    assert content.with_default_negative("blurry") == "blurry, nsfw, nude"
    assert content.with_default_negative("blurry, NSFW") == "blurry, NSFW, nude"
    assert content.with_default_negative("blurry, nsfw, nude") == "blurry, nsfw, nude"
    assert content.members_part("blurry, nsfw, nude") == "blurry"
    assert ContentRules().for_guild(AppConfig(), 0).with_default_negative("blurry") == "blurry"


def test_stats_count_per_server_and_rule() -> None:
    stats = ContentStats()
    stats.count(1, "gore")
    stats.count(1, "gore")
    stats.count(2, "rude")
    assert stats.counts() == {(1, "gore"): 2, (2, "rude"): 1}


def test_the_effective_safety_mode() -> None:
    config = AppConfig(guilds={1: GuildConfig(safety=SafetyConfig(mode="refuse")),
                               2: GuildConfig(safety=SafetyConfig(nsfw_channel_mode="spoiler"))})
    assert resolve_safety(config, 0, False) == "blur" and resolve_safety(config, 0, True) == "off"
    assert resolve_safety(config, 1, False) == "refuse" and resolve_safety(config, 1, True) == "off"
    assert resolve_safety(config, 2, False) == "blur" and resolve_safety(config, 2, True) == "spoiler"
    # A file that sets one key leaves the other at the shipped default.
    partial = AppConfig(safety=SafetyConfig(mode="spoiler"))
    assert resolve_safety(partial, 5, False) == "spoiler" and resolve_safety(partial, 5, True) == "off"
    assert needs_check("blur") and not needs_check("off")
