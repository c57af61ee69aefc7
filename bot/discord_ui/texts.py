"""Every text a member reads about a job: results, progress, queue places, refusals and failures.

One voice: short sentences, a capital at the start of each message, durations through
``format_duration``, no config keys or internal ids. Prompts are user text: every echo goes through
``sanitize_user_text`` (``bot.discord_ui.markdown``: escaped once, mentions broken) even though
messages are also sent with allowed mentions off. ``tests/snapshots/member_texts.txt`` holds every
template rendered, so a wording change is a reviewed change.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.core.text import format_duration, ordinal
from bot.discord_ui.markdown import fit_user_text as fit_user_text  # re-exported: texts' callers use it too
from bot.discord_ui.markdown import sanitize_user_text as sanitize_user_text
from generation.request import LoraChoice, lora_tags

MESSAGE_LIMIT = 2000
STARTING_NOW_S = 1.0  # a start estimate under this reads "starting now", never "in about 0.0 s"


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

    ``note`` is bot-written text (e.g. "Variations", "scaled to fit") and is not escaped.
    """
    details = [f"Seed{'s' if len(seeds) > 1 else ''} {', '.join(str(seed) for seed in seeds)}",
               f"model {sanitize_user_text(model)}", f"{size[0]}×{size[1]}", f"{steps} steps"]
    if loras:  # as A1111 writes them, so the recipe can be typed again
        details.insert(2, f"LoRA{'s' if len(loras) > 1 else ''} {fit_user_text(lora_tags(loras), 600)}")
    if guidance is not None:  # "guidance", as the option and /help call it (A1111's "CFG scale")
        details.append(f"guidance {guidance:g}")
    if strength is not None:
        details.append(f"strength {strength:g}")
    details.append(f"made in {format_duration(elapsed_s)}")
    requester = f" — <@{requester_id}>"
    negative_line = f"\nNegative: {fit_user_text(negative, 300)}" if negative else ""
    note_line = f"\n{note}" if note else ""
    details_line = "\n" + " · ".join(details)
    fixed = len(requester) + len(negative_line) + len(note_line) + len(details_line) + 4  # 4: bold markers
    text = f"**{fit_user_text(prompt, MESSAGE_LIMIT - fixed)}**{requester}{negative_line}{note_line}{details_line}"
    return text[:MESSAGE_LIMIT]  # only a very long note can get here


def progress_bar(fraction: float, width: int = 12) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "▰" * filled + "▱" * (width - filled)


MOVED_TEXT = "↪ The GPU running this stopped, so it moved to another GPU and starts again."


def progress_text(step: int, total: int, eta_s: float | None = None, *, moved: bool = False) -> str:
    """Status while running: a bar, the step (1 to the steps asked for) and, when known, the time left; after the
    batch ``moved`` to another GPU (a cluster's worker stopped), a line that says so (alone, until it restarts)."""
    if moved and step <= 0:
        return MOVED_TEXT
    fraction = step / total if total > 0 else 0.0
    text = f"Generating {progress_bar(fraction)} {round(fraction * 100)}% (step {step}/{total})"
    if eta_s is not None and eta_s >= 0:
        text += f" · about {format_duration(eta_s)} left"
    return f"{text}\n{MOVED_TEXT}" if moved else text


def queue_place(position: int, start_s: float | None) -> str:
    """'next in line · starting now', '3rd in line · starts in about 2 min' (``start_s``: until it starts)."""
    place = "next in line" if position <= 1 else f"{ordinal(position)} in line"
    if start_s is None or start_s < 0:
        return place
    if start_s < STARTING_NOW_S:
        return f"{place} · starting now"
    return f"{place} · starts in about {format_duration(start_s)}"


def queued_text(position: int, start_s: float | None = None, *, loading: str | None = None) -> str:
    """Status while queued: place in line and, when known, when it starts (``loading``: the model is still
    loading, e.g. "Loading model sd15 — 45% (1.9 of 4.3 GB)"; no start time holds until it is done)."""
    if loading is not None:
        return f"Queued — {queue_place(position, None)}\n⏳ {loading}; requests start as soon as it is ready."
    return f"Queued — {queue_place(position, start_s)}"


PAUSED_TEXT = "Queued — a moderator paused this server's queue; your request keeps its place."
STARTING_TEXT = "Starting…"
CANCELLED_REPLY = "Cancelled."  # the private answer to ✖; the status message says "✖ Cancelled."
DONE_BELOW_TEXT = "✅ Done — the result is posted below."


def problems_text(problems: Sequence[str], *, heading: str = "That request can't run:") -> str:
    """An ephemeral error reply listing each problem. Problems quote user input: they are escaped here, once
    (callers pass them raw)."""
    lines = [heading, *(f"• {fit_user_text(problem, 400)}" for problem in problems[:10])]
    if len(problems) > 10:
        lines.append(f"…and {len(problems) - 10} more")
    return "\n".join(lines)[:MESSAGE_LIMIT]


INTERRUPTED_TEXT = "⏸ Interrupted by a bot restart; it continues when the bot is back."


def kind_note(kind: str) -> str:
    """The line a follow-up's result carries (an /imagine result carries none)."""
    return {"upscale": "Upscaled 2×", "variation": "Variations", "reroll": "Rerolled"}.get(kind, "")


SCALED_NOTE = "Scaled down to fit this server's upload limit; the U buttons give full size."
_NOT_MADE = "This image could not be made"


def _sentence(text: str) -> str:
    """Stored error text as the end of a sentence: escaped once, ending in a full stop."""
    text = fit_user_text(text.strip(), 1800)
    return text if text.endswith((".", "!", "?", "…")) else f"{text}."


def failure_text(status: str, error: str | None) -> str:
    """What a job that ended without images says, in words a member understands.

    ``error`` is the stored text the scheduler chose for the requester: for a failure whose detail is for
    operators it is already the fixed "This image could not be made (reference `…`)…", shown as it is."""
    if status == "cancelled":
        return "✖ Cancelled."  # who cancelled knows; the stored "The request was cancelled." adds nothing
    if status == "failed" and error and error.startswith(_NOT_MADE):
        return f"❌ {error}"[:MESSAGE_LIMIT]
    if status == "expired":  # the stored text says how long it waited and that it was dropped, once
        return f"⌛ {_sentence(error)}" if error else \
            "⌛ This request waited too long in the queue and was dropped; please run it again."
    heading = {
        "failed": f"❌ {_NOT_MADE}",
        "dropped": "❌ This request was dropped when the bot restarted",
        "refused": "⛔ This request was not accepted",
    }.get(status)
    if heading is None:
        return f"This request ended ({status})."
    return (f"{heading}: {_sentence(error)}" if error else f"{heading}.")[:MESSAGE_LIMIT]


IMAGES_GONE_TEXT = "❌ The images of this request are no longer stored; please run /imagine again."
POSTING_RETRY_TEXT = "✅ The images are ready, but posting them failed; the bot tries again shortly."


def about_request(user_id: int, prompt: str) -> str:
    """The start of a new channel message about one request (its user may have several)."""
    return f"<@{user_id}> **{fit_user_text(prompt, 300)}**: "


def undeliverable_text(prompt: str, reference: str) -> str:
    """Told to the owner directly when their result or its explanation could not be posted at all."""
    return (f"Your /imagine request **{fit_user_text(prompt, 300)}** finished, but the bot could not post it in "
            f"its channel after several tries (reference `{reference}`); please run it again.")


def safety_note(mode: str, flagged: Sequence[int], count: int) -> str:
    """The line under a result whose images ``flagged`` (0-based) the safety checker flagged, for the server's
    ``mode`` (spoiler, blur or refuse): what was done to them, and that the server's setting did it."""
    several = len(flagged) > 1
    if count == 1:
        which = "The image"
    else:
        numbers = [str(index + 1) for index in flagged]
        listed = numbers[0] if not several else f"{', '.join(numbers[:-1])} and {numbers[-1]}"
        which = f"Image{'s' if several else ''} {listed}"
    if mode == "refuse":
        return f"🚫 {which} {'were' if several else 'was'} withheld by this server's safety setting."
    if count == 1:
        done = "blurred and hidden" if mode == "blur" else "hidden"
        return f"⚠ The image is {done} behind a spoiler by this server's safety setting."
    may = f"{which} may be sensitive, so this server's safety setting"
    if mode == "blur":
        return f"⚠ {may} blurs {'them' if several else 'it'} and hides the images behind a spoiler."
    return f"⚠ {may} hides the images behind a spoiler."


def full_size_text(index: int, owner_id: int, seed: int, reason: str) -> str:
    """A U click answered with the stored image because a 2× upscale cannot run (``reason``: why, raw)."""
    return (f"Image {index + 1} of <@{owner_id}>'s request at full size (seed {seed}). A 2× upscale isn't "
            f"available here: {_sentence(reason)}")[:MESSAGE_LIMIT]
