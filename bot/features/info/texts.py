"""What /help and /queue say, built from plain values so that the snapshot test renders them without Discord."""

from __future__ import annotations

from collections.abc import Sequence

from bot.core.config import AppConfig, Limits
from bot.core.text import format_duration, plural, rate_words
from bot.discord_ui.texts import MESSAGE_LIMIT, fit_user_text, queue_place
from bot.scheduler import DailyImages, Job, QueueEntry
from generation.config import LORA_WEIGHT_LIMIT

# The project has no public address of its own: the guide is named by its place in the README, which every copy
# of the bot ships. An operator who publishes it can set the address here; /help then links it.
MEMBER_GUIDE = "README → Using it"
MEMBER_GUIDE_URL: str | None = None

FLAGS_HELP = (
    "`--ar W:H` shape, e.g. 16:9 · `--size WxH` size in pixels · `--seed N` the same picture again · "
    "`--no words` what to leave out · `--steps N` more is slower and finer · `--count N` 1-4 images · "
    "`--guidance N` how closely to follow the prompt · `--model NAME` · `--style NAME` · "
    "`--strength F` with an attached image: how much to change it (0.05-1)"
)


def _loras_help(names: list[str], cap: int) -> str:
    shown = ", ".join(f"`{name}`" for name in names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
    weights = f"{-LORA_WEIGHT_LIMIT:g} to {LORA_WEIGHT_LIMIT:g}"
    return (f"LoRAs: `<lora:NAME:WEIGHT>` in the prompt (weight {weights}; left out: the LoRA's default) or the "
            f"`lora` option, at most {cap} per request: {shown}")


def limits_line(limits: Limits, daily: DailyImages | None) -> str:
    """A member's own limits in plain words: rate, waiting requests, and today's images left."""
    bucket = limits.user_rate
    rate = "no rate limit"
    if bucket is not None:  # the same words as the refusal: "You can make 6 requests a minute (3 at once)"
        verb = "make" if bucket.unit == "requests" else "use"
        rate = f"you can {verb} {rate_words(bucket.unit, bucket.amount, bucket.window_s, bucket.capacity)}"
    waiting = "no cap on waiting requests" if limits.max_queued_per_user is None else \
        f"up to {plural(limits.max_queued_per_user, 'request')} waiting at a time"
    if daily is None:
        images = "no daily image limit"
    else:
        reset = f"{limits.quota_reset_hour:02d}:00 {limits.quota_timezone}"
        images = (f"{daily.left} of your {plural(daily.limit, 'daily image')} left "
                  f"(they reset at {reset}, in {format_duration(daily.resets_in_s)})")
    return f"**Your limits here:** {rate} · {waiting} · {images}."


def guide_line() -> str:
    guide = f"[{MEMBER_GUIDE}](<{MEMBER_GUIDE_URL}>)" if MEMBER_GUIDE_URL else MEMBER_GUIDE
    return f"More in the member guide: {guide}"


def help_text(config: AppConfig, limits: Limits, daily: DailyImages | None) -> str:
    """/help: what /imagine does, its flags, the models, styles and LoRAs, the buttons, your limits, the guide."""
    generation = config.generation
    lines = [
        "**/imagine** turns a prompt into images. Add flags after the prompt, or use the command's options:",
        FLAGS_HELP,
        f"Models: {', '.join(generation.enabled_names())} · aspects: {', '.join(config.bot.aspects) or 'any'} · "
        f"styles: {', '.join(config.bot.styles) or 'none'}",
        *([_loras_help(sorted(generation.loras), generation.max_loras_per_request)] if generation.loras else []),
        "Under each result: **U** one image at full size (2× upscaled where the model allows), **V** variations "
        "of it, 🔄 new seed, 🗑 delete (yours, or as a moderator).",
        limits_line(limits, daily),
        guide_line(),
    ]
    return "\n".join(lines)[:MESSAGE_LIMIT]


def queue_text(user_id: int, in_server: bool, running: Sequence[Job], queued: Sequence[QueueEntry], *,
               here_waiting: int, total_waiting: int, paused: bool) -> str:
    """/queue: the member's own jobs (running, then waiting with their place and start), then the queue's length.

    ``running`` and ``queued`` are this server's (or the member's direct messages'); only the member's own are
    listed by prompt."""
    lines = [f"▶ Running: {fit_user_text(job.request.prompt, 80)}" for job in running if job.user_id == user_id]
    for entry in queued:
        if entry.job.user_id != user_id:
            continue
        place = "paused by a moderator" if entry.position is None else queue_place(entry.position, entry.eta_s)
        lines.append(f"⏳ {place[0].upper()}{place[1:]}: {fit_user_text(entry.job.request.prompt, 80)}")
    if not lines:
        lines.append("You have nothing waiting or running.")
    if in_server:
        lines.append(f"This server: {here_waiting} waiting, {len(running)} running · "
                     f"all servers: {total_waiting} waiting")
        if paused:
            lines.append("A moderator paused this server's queue.")
    else:
        lines.append(f"All servers: {total_waiting} waiting")
    return "\n".join(lines)[:MESSAGE_LIMIT]
