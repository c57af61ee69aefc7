"""Text formatting shared by every message the bot writes (Discord-free: escaping lives in discord_ui)."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """One duration format everywhere: '4.2 s', '45 s', '3 min 20 s', '3 min', '2 h 5 min'.

    Tenths only under 10 s, where they matter (a generation time, a short retry); whole seconds up to
    an hour, so "Try again in 2 min 30 s" is exact; minutes above that."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f} s"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def plural(count: float, word: str) -> str:
    """'1 request', '6 requests', '2.5 images' (a plain trailing s: the words used here need no more)."""
    return f"{count:g} {word}{'' if count == 1 else 's'}"


def ordinal(number: int) -> str:
    """'1st', '2nd', '3rd', '4th', '11th', '22nd'."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


_PER = {1.0: "a second", 60.0: "a minute", 3600.0: "an hour", 86400.0: "a day"}


def per_window(seconds: float) -> str:
    """How often a limit refills, as members say it: 'a minute', 'an hour', 'every 10 min'."""
    return _PER.get(float(seconds)) or f"every {format_duration(seconds)}"


def one_of(items: list[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def rate_words(unit: str, amount: float, window_s: float, capacity: float) -> str:
    """A token bucket in members' words, without config keys: '6 requests a minute (3 at once)'; a bucket of
    cost units is GPU time, counted in 512×512 images at 25 steps (what one cost unit is)."""
    at_once = f" ({capacity:g} at once)" if capacity != amount else ""
    if unit == "requests":
        return f"{plural(amount, 'request')} {per_window(window_s)}{at_once}"
    return f"GPU time for about {plural(amount, 'image')} of 512×512 at 25 steps {per_window(window_s)}{at_once}"
