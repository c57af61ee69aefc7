"""What /stats and /me say, in plain words: no config keys (a refusal's reason is named, not its limit's key),
user text escaped, mentions shown but never pinging (the replies go out with allowed mentions off)."""

from __future__ import annotations

from bot.core.text import format_duration
from bot.discord_ui.texts import MESSAGE_LIMIT, sanitize_user_text
from bot.features.stats.queries import Made
from bot.features.stats.service import MemberStats, ServerStats, Usage

CHART_TITLE = "Images per day, last 14 days"
MY_CHART_TITLE = "Your images per day, last 14 days"
PROMPT_CHARS = 60
# Refusals by the key of the limit that refused them, in words a member understands.
_REASONS = {
    "limits.user_rate": "asking too fast",
    "limits.guild_rate": "the server asking too fast",
    "limits.max_queued_per_user": "too many requests waiting",
    "limits.max_queued_per_guild": "the server's queue full",
    "scheduler.max_queued": "the bot's queue full",
    "limits.daily_images_per_user": "daily quota used up",
    "guilds.channels": "channel not enabled",
    "paused": "queue paused",
    "shutdown": "bot restarting",
}


def reason_text(key: str | None) -> str:
    if key is None:
        return "reason not recorded"  # refused before the bot kept the reason
    if key.startswith("models."):
        return "model unavailable"
    return _REASONS.get(key, "other")


def _usage_line(usage: Usage) -> str:
    return f"Images: **{usage.today}** today · **{usage.week}** in the last 7 days · **{usage.total}** in all"


def _fit(lines: list[str]) -> str:
    """The lines as one message. Five images with prompts cut to 60 characters (120 once escaped) and five
    mentions stay far below Discord's limit; the cut is a guard, not a layout."""
    return "\n".join(lines)[:MESSAGE_LIMIT]


def server_text(server_name: str | None, stats: ServerStats) -> str:
    where = sanitize_user_text(server_name) if server_name else "this server"
    lines = [f"**/imagine in {where}**", _usage_line(stats.usage)]
    if stats.top_users:
        ranked = " · ".join(f"<@{user_id}> {images}" for user_id, images in stats.top_users)
        lines.append(f"Most images in the last 7 days: {ranked}")
    if stats.waits is not None:
        waits = stats.waits
        started = "1 request" if waits.jobs == 1 else f"{waits.jobs} requests"
        lines.append(f"Wait before a request starts (last 7 days, {started}): median {format_duration(waits.median_s)}"
                     f" · 9 in 10 within {format_duration(waits.p90_s)}")
    lines.append(f"GPU time: {format_duration(stats.gpu_week_s)} in the last 7 days · "
                 f"{format_duration(stats.gpu_total_s)} in all")
    if stats.refusals:
        counted: dict[str, int] = {}
        for key, count in stats.refusals:  # several keys can read the same (every model's name)
            counted[reason_text(key)] = counted.get(reason_text(key), 0) + count
        listed = " · ".join(f"{reason} {count}" for reason, count in sorted(counted.items(), key=lambda i: -i[1]))
        lines.append(f"Refused in the last 7 days: {listed}")
    else:
        lines.append("Refused in the last 7 days: none")
    return _fit(lines)


def jump_url(guild_id: int, made: Made) -> str | None:
    """The link to a result's message (None when it was never recorded)."""
    if made.message_id is None or made.channel_id is None:
        return None
    return f"https://discord.com/channels/{guild_id or '@me'}/{made.channel_id}/{made.message_id}"


def _made_line(guild_id: int, made: Made) -> str:
    prompt = made.prompt if len(made.prompt) <= PROMPT_CHARS else made.prompt[:PROMPT_CHARS - 1].rstrip() + "…"
    images = "1 image" if made.images == 1 else f"{made.images} images"
    link = jump_url(guild_id, made)
    where = f" {link}" if link is not None else ""
    return f"• <t:{int(made.finished_at.timestamp())}:d> “{sanitize_user_text(prompt)}” ({images}){where}"


def member_text(guild_id: int, stats: MemberStats, resets_in_s: float) -> str:
    """``guild_id`` 0: the member's direct messages with the bot."""
    here = "here" if guild_id else "in direct messages"
    lines = [f"**Your /imagine use {here}**", _usage_line(stats.usage)]
    quota = stats.quota
    if quota.limit is None:
        lines.append("Daily quota: none, you can make as many images as the queue allows.")
    else:
        resets = int(quota.resets_at)
        lines.append(f"Daily quota: **{quota.left}** of {quota.limit} images left today; it resets in "
                     f"{format_duration(resets_in_s)} (<t:{resets}:t>).")
    if stats.last:
        lines.append("Your latest images:")
        lines.extend(_made_line(guild_id, made) for made in stats.last)
    else:
        lines.append("No images yet: try /imagine.")
    return _fit(lines)
