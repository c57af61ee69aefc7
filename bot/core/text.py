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
