"""User text echoed in the bot's messages: escaped once, and only where Discord's Markdown would read it.

discord.py's ``escape_markdown`` escapes every ``_``, ``\\`` and leading ``-``, so a second pass (or a
first one on text that never needed it) shows members ``my\\_cool\\_style`` and ``\\--bogus``. Here a
character is escaped only when Discord would otherwise change what it means:

- ``*`` and `````: always (emphasis and code open anywhere, inside words too);
- ``_``: at a word edge or next to another ``_`` (``my_cool_style`` stays as typed; ``_x_`` and ``a__b__``
  would be italic and underlined);
- ``~`` and ``|``: when doubled (strikethrough, spoilers);
- ``\\``: before ASCII punctuation or at the end (where it would escape the next character, maybe the
  bot's own ``**``);
- ``[``: when ``](`` follows (a masked link).

Links are left as they are (an escape inside one would break it). Line-start syntax (headings, quotes,
lists) needs no escape: the text is made one line and always follows other text on its line.
"""

from __future__ import annotations

import re

import discord.utils

_ZWSP = "\u200b"
# Discord's autolink pattern: what it turns into a link, escapes and all.
_URL = re.compile(r"https?://[^\s<]+[^<.,:;\"')\]\s]")
_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _is_word(char: str) -> bool:
    # Discord's parser uses JavaScript's \b: ASCII letters, digits and "_" only.
    return char.isascii() and (char.isalnum() or char == "_")


def _needs_escape(text: str, index: int) -> bool:
    char = text[index]
    before = text[index - 1] if index > 0 else ""
    after = text[index + 1] if index + 1 < len(text) else ""
    if char in "*`":
        return True
    if char == "_":
        return "_" in (before, after) or not _is_word(before) or not _is_word(after)
    if char in "~|":
        return char in (before, after)
    if char == "\\":
        return after == "" or after in _ASCII_PUNCTUATION
    if char == "[":
        return "](" in text[index:]
    return False


def _escape_markdown(text: str) -> str:
    return "".join("\\" + char if _needs_escape(text, index) else char for index, char in enumerate(text))


def sanitize_user_text(text: str) -> str:
    """User text made safe to echo after other text on a line: one line, Markdown escaped once where it
    would apply, no mention that could ping (even though messages also go out with mentions off)."""
    text = " ".join(text.split())  # newlines would allow headings, quotes and lists
    parts, start = [], 0
    for link in _URL.finditer(text):
        parts += [_escape_markdown(text[start:link.start()]), link[0]]
        start = link.end()
    parts.append(_escape_markdown(text[start:]))
    text = discord.utils.escape_mentions("".join(parts))
    # Defence in depth beyond discord.py's patterns: any "<@" and any @everyone/@here spelling.
    text = re.sub(f"<@(?!{_ZWSP})", f"<@{_ZWSP}", text)
    return re.sub(r"@(?=everyone|here)", f"@{_ZWSP}", text, flags=re.IGNORECASE)


def fit_user_text(text: str, budget: int) -> str:
    """``sanitize_user_text(text)`` cut (with an ellipsis) to at most ``budget`` characters."""
    safe = sanitize_user_text(text)
    if len(safe) <= budget:
        return safe

    def cut(length: int) -> str:
        # Cut the raw text, then escape: cutting escaped text could split an escape or a mention guard.
        return sanitize_user_text(text[:length]) + "…"

    low, high = 0, len(text)  # binary search: escaping lengthens text by a varying amount
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if len(cut(middle)) <= budget else (low, middle - 1)
    fitted = cut(low)
    return fitted if len(fitted) <= budget else ""
