"""The bot's part of the exception tree (rooted in ``generation.errors.ImagineError``).

Every refusal is raised at once by ``Scheduler.submit`` and its ``str()`` is the reply for the user:
it names the limit, its value, and when to retry (``retry_after`` seconds) or how long the queue is.

    ImagineError                       (generation.errors)
    ├── ConfigError                    (generation.errors) config.yaml is invalid; names key, line, allowed values
    ├── Refused                        a request was not admitted; nothing (tokens, quota) was consumed
    │   ├── RateLimited                a token bucket (per user or per server) is empty; ``retry_after`` seconds
    │   ├── QueueFull                  a cap on queued jobs (user, server or global) is reached; ``queue_length``
    │   ├── QuotaExceeded              the user's daily image quota is used up; ``resets_at`` (epoch seconds)
    │   ├── ChannelNotAllowed          the server allows /imagine only in some channels; ``allowed``
    │   ├── GuildPaused                a moderator paused this server's queue
    │   └── ShuttingDown               the bot is draining its queue before a restart
    ├── NotPermitted                   the caller may not do this (e.g. cancel someone else's job)
    ├── JobNotFound                    no queued or running job has this id (it may have finished already)
    └── JobExpired                     a queued job waited past ``scheduler.max_wait_s`` (the job's error)
"""

from __future__ import annotations

from collections.abc import Sequence

from generation.errors import ImagineError


def format_duration(seconds: float) -> str:
    """A short human duration: '45 s', '3 min 20 s', '2 h 5 min'."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class Refused(ImagineError):
    """The request was not admitted. ``limit`` is the config key that refused it, ``value`` its setting."""

    def __init__(self, message: str, *, limit: str, value: object = None, retry_after: float | None = None,
                 queue_length: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.retry_after = retry_after
        self.queue_length = queue_length


class RateLimited(Refused):
    """A token bucket is empty; ``retry_after`` says when enough tokens are back."""


class QueueFull(Refused):
    """A queued-jobs cap is reached; ``queue_length`` is the count that hit the cap."""


class QuotaExceeded(Refused):
    """The daily image quota is used up until ``resets_at`` (epoch seconds)."""

    def __init__(self, message: str, *, limit: str, value: object, retry_after: float, resets_at: float) -> None:
        super().__init__(message, limit=limit, value=value, retry_after=retry_after)
        self.resets_at = resets_at


class ChannelNotAllowed(Refused):
    """This server runs /imagine only in the channels listed in ``allowed``."""

    def __init__(self, message: str, *, allowed: Sequence[int]) -> None:
        super().__init__(message, limit="guilds.channels", value=list(allowed))
        self.allowed = list(allowed)


class GuildPaused(Refused):
    """A moderator paused this server's queue; queued jobs wait, new ones are refused."""


class ShuttingDown(Refused):
    """The bot is draining before a restart and admits nothing new."""


class NotPermitted(ImagineError):
    """The caller lacks the permission for this action; the message says who may do it."""


class JobNotFound(ImagineError):
    """No queued or running job has this id."""


class JobExpired(ImagineError):
    """The job waited in the queue longer than ``scheduler.max_wait_s`` and was dropped."""
