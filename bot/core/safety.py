"""Which safety mode applies to a request: the server's, or its setting for channels Discord marks age-restricted.

Discord-free and torch-free. ``safety:`` holds every server's defaults and ``guilds.<id>.safety`` a server's own
keys, each replacing the default when set (``resolve_safety``, the counterpart of ``resolve_limits``). A mode
says what members see of an image the safety checker flags: ``off`` shows it as made, ``spoiler`` hides it behind
Discord's spoiler, ``blur`` blurs it and marks it a spoiler, ``refuse`` withholds it. Anything but ``off`` asks
the checker to look at the request's images (``needs_check``); with ``off`` it does not run at all.
"""

from __future__ import annotations

from bot.core.config import AppConfig
from bot.core.policy import SafetyMode

# What applies when neither the file's defaults nor the server say (``safety: {mode: spoiler}`` alone leaves the
# age-restricted setting unsaid): the shipped defaults.
DEFAULT_MODE: SafetyMode = "blur"
DEFAULT_NSFW_CHANNEL_MODE: SafetyMode = "off"


def resolve_safety(config: AppConfig, guild_id: int, channel_nsfw: bool) -> SafetyMode:
    """The mode for a request in ``guild_id`` (0: a direct message, the defaults), in an age-restricted channel or
    not (a thread follows its channel)."""
    defaults = config.safety
    guild = config.guilds.get(guild_id) if guild_id else None
    own = guild.safety if guild is not None else None
    if channel_nsfw:
        chosen = own.nsfw_channel_mode if own is not None else None
        return chosen or defaults.nsfw_channel_mode or DEFAULT_NSFW_CHANNEL_MODE
    chosen = own.mode if own is not None else None
    return chosen or defaults.mode or DEFAULT_MODE


def needs_check(mode: SafetyMode) -> bool:
    """Whether images shown under ``mode`` must go through the safety checker first."""
    return mode != "off"
