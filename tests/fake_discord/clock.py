"""The fake's notion of wall-clock time: snowflake timestamps and interaction-token expiry.

``FakeDiscord(clock=...)`` takes anything with ``time() -> float`` (epoch seconds), e.g. the
bot's ``bot.scheduler.SimulatedClock`` or a test's settable clock, so a test can age a token
past Discord's 15 minutes without waiting.  The 3-second first-response deadline is not on
this clock: it stays on the event loop's real time (a simulated clock never makes a bot late).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

# Interaction tokens (callbacks, followups, @original) are valid this long after dispatch.
TOKEN_LIFETIME_S = 15 * 60.0


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock time in epoch seconds."""
        ...


class SystemClock:
    """The real wall clock (``time.time``); the default."""

    def time(self) -> float:
        return time.time()


def iso_at(epoch_s: float) -> str:
    """ISO 8601 timestamp, as Discord writes message timestamps."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()
