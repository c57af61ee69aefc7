"""Every text a member reads about a job: results, progress, queue places, refusals and failures.

Prompts are user text: every echo goes through ``sanitize_user_text`` (markdown escaped, mentions
broken with a zero-width space) even though messages are also sent with allowed mentions off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import discord.utils

from bot.core.text import format_duration
from generation.request import LoraChoice, lora_tags

MESSAGE_LIMIT = 2000
_ZWSP = "\u200b"


def sanitize_user_text(text: str) -> str:
    """User text made safe to echo: one line, markdown escaped, no mention that could ping."""
    text = " ".join(text.split())  # newlines would allow headings, quotes and lists
    text = discord.utils.escape_mentions(discord.utils.escape_markdown(text))
    # Defence in depth beyond discord.py's patterns: any "<@" and any @everyone/@here spelling.
    text = re.sub(f"<@(?!{_ZWSP})", f"<@{_ZWSP}", text)
    return re.sub(r"@(?=everyone|here)", f"@{_ZWSP}", text, flags=re.IGNORECASE)


def _fit(text: str, budget: int) -> str:
    """``sanitize_user_text(text)`` cut (with an ellipsis) to at most ``budget`` characters."""
    safe = sanitize_user_text(text)
    if len(safe) <= budget:
        return safe

    def cut(length: int) -> str:
        # Cut the raw text, then escape: cutting escaped text could split an escape or a mention guard.
        return sanitize_user_text(text[:length]).rstrip("\\") + "…"

    low, high = 0, len(text)  # binary search: escaping lengthens text by a varying amount
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if len(cut(middle)) <= budget else (low, middle - 1)
    fitted = cut(low)
    return fitted if len(fitted) <= budget else ""


def result_message_text(
    prompt: str,
    requester_id: int,
    seeds: Sequence[int],
    model: str,
    size: tuple[int, int],
    steps: int,
    elapsed_s: float,
    *,
    negative: str = "",
    guidance: float | None = None,
    strength: float | None = None,
    loras: Sequence[LoraChoice] = (),
    note: str = "",
) -> str:
    """The result message: prompt, who asked, seeds, model, LoRAs, size, steps, time; at most 2000 chars.

    ``note`` is bot-written text (e.g. "Variation of image 2", "scaled to fit") and is not escaped.
    """
    details = [f"Seed{'s' if len(seeds) > 1 else ''} {', '.join(str(seed) for seed in seeds)}",
               f"Model {sanitize_user_text(model)}", f"{size[0]}×{size[1]}", f"{steps} steps"]
    if loras:  # as A1111 writes them, so the recipe can be typed again
        details.insert(2, f"LoRA{'s' if len(loras) > 1 else ''} {_fit(lora_tags(loras), 600)}")
    if guidance is not None:
        details.append(f"CFG {guidance:g}")
    if strength is not None:
        details.append(f"strength {strength:g}")
    details.append(format_duration(elapsed_s))
    requester = f" — <@{requester_id}>"
    negative_line = f"\nNegative: {_fit(negative, 300)}" if negative else ""
    note_line = f"\n{note}" if note else ""
    details_line = "\n" + " · ".join(details)
    fixed = len(requester) + len(negative_line) + len(note_line) + len(details_line) + 4  # 4: bold markers
    text = f"**{_fit(prompt, MESSAGE_LIMIT - fixed)}**{requester}{negative_line}{note_line}{details_line}"
    return text[:MESSAGE_LIMIT]  # only a very long note can get here


def progress_bar(fraction: float, width: int = 12) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "▰" * filled + "▱" * (width - filled)


def progress_text(step: int, total: int, position: int | None = None, eta_s: float | None = None) -> str:
    """Status while running: a bar, the step, and (when known) the batch slot and time left.

    ``position`` is the job's slot when several jobs share one pipeline call (shown when > 0).
    """
    fraction = step / total if total > 0 else 0.0
    text = f"Generating {progress_bar(fraction)} {round(fraction * 100)}% (step {step}/{total})"
    if position is not None and position > 0:
        text += f" · batch slot {position}"
    if eta_s is not None and eta_s >= 0:
        text += f" · about {format_duration(eta_s)} left"
    return text


def queued_text(position: int, eta_s: float | None = None, *, loading: str | None = None) -> str:
    """Status while queued: place in line and, when known, when it should start (``loading``: the model
    is still loading, e.g. "Loading model sd15 — 45 % (1.9 of 4.3 GB)"; no ETA holds until it is done)."""
    place = "next in line" if position <= 1 else f"position {position} in the queue"
    text = f"Queued — {place}"
    if loading is not None:
        return f"{text}\n⏳ {loading}; requests start as soon as it is ready."
    if eta_s is not None and eta_s >= 0:
        text += f" · starts in about {format_duration(eta_s)}"
    return text


def problems_text(problems: Sequence[str], *, heading: str = "That request can't run:") -> str:
    """An ephemeral error reply listing each problem (they quote user input, so sanitised)."""
    lines = [heading, *(f"• {_fit(problem, 400)}" for problem in problems[:10])]
    if len(problems) > 10:
        lines.append(f"…and {len(problems) - 10} more")
    return "\n".join(lines)[:MESSAGE_LIMIT]


INTERRUPTED_TEXT = "⏸ Interrupted by a bot restart; it continues when the bot is back."


def kind_note(kind: str) -> str:
    """The line a follow-up's result carries (an /imagine result carries none)."""
    return {"upscale": "Upscaled 2×", "variation": "Variations", "reroll": "Rerolled"}.get(kind, "")


_NOT_MADE = "This image could not be made"


def failure_text(status: str, error: str | None) -> str:
    """What a job that ended without images says, in words a user understands.

    ``error`` is the stored text the scheduler chose for the requester: for a failure whose detail is
    for operators it is already the fixed "This image could not be made (reference `…`)…", shown once."""
    if status == "failed" and error and error.startswith(_NOT_MADE):
        return f"❌ {error}"[:MESSAGE_LIMIT]
    heading = {
        "cancelled": "✖ Cancelled.",
        "expired": "⌛ This request waited too long in the queue and was dropped; please try again.",
        "failed": f"❌ {_NOT_MADE}.",
        "dropped": "❌ This request was dropped when the bot restarted.",
        "refused": "⛔ This request was not accepted.",
    }.get(status, f"This request ended ({status}).")
    return f"{heading} {error or ''}".strip()[:MESSAGE_LIMIT]


IMAGES_GONE_TEXT = "❌ The images of this request are no longer stored; please run /imagine again."
POSTING_RETRY_TEXT = "✅ The images are made, but posting them failed; trying again shortly."


def undeliverable_text(prompt: str, reference: str) -> str:
    """Told to the owner directly when their result or its explanation could not be posted at all."""
    return (f"Your /imagine request **{sanitize_user_text(prompt)[:300]}** finished, but the bot could not post "
            f"it in its channel after several tries (reference `{reference}`). Please run it again.")
