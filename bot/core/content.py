"""Content rules: the words and patterns a server refuses in prompts, matched after undoing the usual disguises.

Discord-free and torch-free. A request's effective rules are every server's defaults (``content:``) plus its own
(``guilds.<id>.content``): the server's rules are added, its ``default_negative`` and ``max_prompt_chars`` replace
the defaults when set (``resolve_content``, the counterpart of ``resolve_limits``).

Matching reads the text as a person would: ``normalise`` applies Unicode NFKC (full-width letters, ligatures,
mathematical letters), casefolding, removes format characters (zero-width spaces and joiners, word joiner,
byte-order mark, soft hyphen: Unicode's Cf category), strips accents and maps look-alike Cyrillic and Greek
letters to Latin ones. ``readings`` then reads leetspeak as letters (0→o, 1→i or l, 3→e, 4→a, 5→s, 7→t, @→a,
$→s) inside words and inside runs of letters spaced out one by one, so "1990" stays a number. A rule's words
match whole words of a reading (so "class" never matches "ass"), letters stretched by repetition included
("gooore"; a letter written once or twice in the word matches itself or three and more, so "god" does not match
"good"), and spelled out one letter at a time with anything between them (``g o r e``, ``g.o.r.e``,
``g-o-r-e``), even next to a lone "a".
A rule's patterns are regular expressions searched in each reading, and in it with spaced-out letters joined.

Words and patterns are compiled once per config object (``ContentRules``, which the imagine feature owns): a
reload brings a new config object, and with it a fresh compile.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.core.config import AppConfig
from bot.core.policy import ContentConfig, ContentRule
from generation.request import MAX_PROMPT_CHARS

# Cyrillic and Greek letters that look like Latin ones (lower case: text is casefolded first), and a few Latin
# letters that NFKD leaves alone. Enough to undo the common disguises, not Unicode's whole confusables table.
_LOOKALIKES = str.maketrans({
    "а": "a", "в": "b", "г": "r", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "п": "n", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ь": "b", "һ": "h", "ѕ": "s", "і": "i", "ј": "j", "ӏ": "l",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ү": "y", "ɡ": "g",
    "α": "a", "β": "b", "γ": "y", "ε": "e", "ζ": "z", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v",
    "ο": "o", "ρ": "p", "σ": "o", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c",
    "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ŀ": "l",
})
# Leetspeak, read as letters inside a word. "1" stands for i or l: each reading takes one of them.
_LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
_LEET_ONES = (str.maketrans({**_LEET, "1": "i"}), str.maketrans({**_LEET, "1": "l"}))
_WORD_CHAR = r"[^\W_]"  # a letter or digit in any script
_SEP = r"[\W_]"  # anything else: spaces, punctuation, underscores
# Three or more lone letters or digits (or leetspeak's @ and $) in a row, each set apart by separators:
# "s p a c e d", "s.p.a.c.e.d", "a $ $".
_LONE = r"(?:[^\W_]|[@$])"
_APART = r"(?:[^\w@$]|_)+"
_SPACED_OUT = re.compile(rf"(?<!{_LONE}){_LONE}(?:{_APART}{_LONE}(?!{_LONE})){{2,}}")
_SEPARATORS = re.compile(rf"{_SEP}+")
_WORD_OR_RUN = re.compile(rf"{_SPACED_OUT.pattern}|(?:[^\W_]|[@$])+")
# Scripts written without spaces between words: a rule's word in them matches anywhere, not at word boundaries.
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def normalise(text: str) -> str:
    """``text`` as matching sees it: NFKC, casefolded, without format characters and accents, look-alikes Latin."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(char for char in text if unicodedata.category(char) != "Cf")
    text = "".join(char for char in unicodedata.normalize("NFKD", text) if unicodedata.category(char) not in
                   ("Mn", "Me"))
    return unicodedata.normalize("NFC", text).translate(_LOOKALIKES)


def _read_leet(text: str, table: dict[int, str]) -> str:
    # Only in words (or spaced-out runs) that have a letter: "p0rn" and "p 0 r n" are read as letters, "1990"
    # and "$100" stay as they are.
    return _WORD_OR_RUN.sub(lambda m: m[0].translate(table) if any(c.isalpha() for c in m[0]) else m[0], text)


def join_spaced(text: str) -> str:
    """``text`` with each run of spaced-out letters written as one word: "a g o r e" → "agore"."""
    return _SPACED_OUT.sub(lambda m: re.sub(_APART, "", m[0]), text)


def readings(text: str) -> tuple[str, ...]:
    """The normalised text in each way its leetspeak may be read (a 1 as i, or as l)."""
    base = normalise(text)
    return tuple(dict.fromkeys(_read_leet(base, table) for table in _LEET_ONES))


def _letters(token: str) -> str:
    """A word's letters as a pattern that also matches them stretched: a run written once or twice matches itself
    or three and more ("gore" matches "gooore"; "god" never matches "good")."""
    parts = []
    for run in re.finditer(r"(.)\1*", token):
        char, length = re.escape(run[1]), len(run[0])
        parts.append(f"{char}{{{length},}}" if length > 2 else f"(?:{char * length}|{char}{{3,}})")
    return "".join(parts)


def _word_pattern(word: str) -> str | None:
    tokens = [token for token in _SEPARATORS.split(word) if token]
    if not tokens:
        return None
    body = f"{_SEP}*".join(_letters(token) for token in tokens)  # "blood bath" also as "bloodbath", "blood-bath"
    if _UNSPACED.search(word):
        return body
    whole = f"(?<!{_WORD_CHAR}){body}(?!{_WORD_CHAR})"
    letters = "".join(tokens)
    if len(letters) < 2:
        return whole
    # Spelled out: each letter alone, anything but a letter between them. Matched inside a longer run too, so
    # "a g o r e" is caught after its article (the cost: an innocent word spelled out that way, which nobody does).
    spaced = _APART.join(re.escape(char) for char in letters)
    return f"{whole}|(?<!{_WORD_CHAR}){spaced}(?!{_WORD_CHAR})"


def _words_regex(words: Iterable[str]) -> re.Pattern[str] | None:
    alternatives: dict[str, None] = {}
    for word in words:
        for reading in readings(word):
            pattern = _word_pattern(reading)
            if pattern is not None:
                alternatives[pattern] = None
    return re.compile("|".join(alternatives)) if alternatives else None


@dataclass(frozen=True)
class _Compiled:
    id: str
    words: re.Pattern[str] | None
    patterns: tuple[re.Pattern[str], ...]

    def matches(self, texts: Sequence[str]) -> bool:
        if self.words is not None and any(self.words.search(text) for text in texts):
            return True
        joined = [*texts, *(join_spaced(text) for text in texts)]  # a pattern sees "g o r e" as "gore" too
        return any(pattern.search(text) for pattern in self.patterns for text in dict.fromkeys(joined))


class ContentMatcher:
    """Rules compiled for matching: ``first_match(text)`` is the id of the first rule the text breaks, or None."""

    def __init__(self, rules: Sequence[ContentRule]) -> None:
        self._rules = tuple(_Compiled(rule.id, _words_regex(rule.words),
                                      tuple(re.compile(pattern, re.IGNORECASE) for pattern in rule.patterns))
                            for rule in rules)

    def first_match(self, text: str) -> str | None:
        if not text or not self._rules:
            return None
        texts = readings(text)
        return next((rule.id for rule in self._rules if rule.matches(texts)), None)


def resolve_content(config: AppConfig, guild_id: int) -> ContentConfig:
    """A server's effective content settings: the default rules plus its own; its other keys replace the defaults
    when set. Direct messages (guild 0) get the defaults."""
    defaults = config.content
    guild = config.guilds.get(guild_id) if guild_id else None
    if guild is None:
        return defaults
    own = guild.content
    return ContentConfig(
        rules=[*defaults.rules, *own.rules],
        default_negative=own.default_negative if own.default_negative is not None else defaults.default_negative,
        max_prompt_chars=own.max_prompt_chars if own.max_prompt_chars is not None else defaults.max_prompt_chars)


@dataclass(frozen=True)
class GuildContent:
    """One server's effective content settings, with its rules compiled."""

    matcher: ContentMatcher
    default_negative: str | None
    max_prompt_chars: int

    def default_terms(self) -> list[str]:
        return _terms(self.default_negative or "")

    def with_default_negative(self, negative: str) -> str:
        """``negative`` with the server's default negative prompt appended (comma-joined), leaving out the terms
        it already has."""
        have = {term.casefold() for term in _terms(negative)}
        missing = [term for term in self.default_terms() if term.casefold() not in have]
        return ", ".join([negative.strip(), *missing] if negative.strip() else missing)

    def members_part(self, negative: str) -> str:
        """A stored negative prompt without the default terms the bot added: what a member wrote (so that a
        server's default negative, "nude" say, never trips its own rules when a follow-up is checked again)."""
        added = {term.casefold() for term in self.default_terms()}
        return ", ".join(term for term in _terms(negative) if term.casefold() not in added)


def _terms(text: str) -> list[str]:
    return [term.strip() for term in text.split(",") if term.strip()]


class ContentRules:
    """Compiled content settings per (config object, server), each compiled once: owned by the feature that checks
    prompts (no module-level state), bounded so that reloads never pile compiled rules up."""

    def __init__(self, max_cached: int = 256) -> None:
        self._max_cached = max_cached
        self._cache: OrderedDict[tuple[int, int], tuple[AppConfig, GuildContent]] = OrderedDict()

    def for_guild(self, config: AppConfig, guild_id: int) -> GuildContent:
        key = (id(config), guild_id)
        cached = self._cache.get(key)
        if cached is not None and cached[0] is config:  # the entry holds its config, so its id is never reused
            self._cache.move_to_end(key)
            return cached[1]
        content = resolve_content(config, guild_id)
        compiled = GuildContent(ContentMatcher(content.rules), content.default_negative,
                                content.max_prompt_chars or MAX_PROMPT_CHARS)
        self._cache[key] = (config, compiled)
        if len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return compiled


class ContentStats:
    """How many requests each content rule refused, per server: ``counts()`` for metrics; kept in memory."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[int, str]] = Counter()

    def count(self, guild_id: int, rule_id: str) -> None:
        self._counts[(guild_id, rule_id)] += 1

    def counts(self) -> dict[tuple[int, str], int]:
        """(guild id, rule id) → matches since start-up (guild 0: direct messages)."""
        return dict(self._counts)
