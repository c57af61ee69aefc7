"""README: "Every text a member can read is kept, rendered, in `tests/snapshots/member_texts.txt`."

Every message template a member can read, rendered with representative values and compared with the reviewed
snapshot ``tests/snapshots/member_texts.txt``, so that a wording change is a deliberate, reviewed change.

Refusals come from the real admission code (a scheduler on simulated time) and reach the text through the same
``error_text`` that answers on Discord; job texts come from ``bot.discord_ui.texts``; /help and /queue from the
info feature's texts. When the rendering differs from the file, the failure shows the diff; after reviewing it,
accept it with ``UPDATE_SNAPSHOTS=1`` (see ``SNAPSHOT_HINT``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.core.config import AppConfig, Bucket, GuildConfig, Limits
from bot.core.errors import (
    ContentBlocked,
    DirectMessagesOff,
    ImageWithheld,
    InternalFailure,
    JobNotFound,
    NotPermitted,
    PromptTooLong,
)
from bot.core.identity import Requester
from bot.discord_ui import texts
from bot.discord_ui.replies import error_text
from bot.features.imagine.compose import Attachment, attachment_problems, draft
from bot.features.imagine.flags import Options
from bot.features.imagine.service import DROPPED_INPUT_GONE, DROPPED_NEVER_SHOWN, dropped_no_longer_fits
from bot.features.info.texts import help_text, queue_text
from bot.features.moderation.service import NOT_A_MODERATOR
from bot.scheduler import DailyImages, QueueEntry, Scheduler, SimulatedClock
from bot.scheduler.core import expired_text
from bot.scheduler.warmup import progress_line
from generation.errors import FixableFailure, InvalidRequest, WorkerLost
from generation.remote.dispatch import LOST_TEXT, NO_WORKER_TEXT
from generation.warmup import DownloadProgress
from tests.scheduler_helpers import OPEN_LIMITS, FakePool, make_config, make_job
from tests.test_scheduler_limits import build

SNAPSHOT = Path(__file__).parent / "snapshots" / "member_texts.txt"
SNAPSHOT_HINT = ("Member-visible texts changed (diff above). If the new wording is intended, review the diff and "
                 "accept it with:\n    UPDATE_SNAPSHOTS=1 python -m pytest tests/test_member_texts.py\n"
                 "then commit tests/snapshots/member_texts.txt with the change.")
HEADER = ("# Every text a member can read, rendered by tests/test_member_texts.py with representative values.\n"
          "# Review a change here as you would review the wording itself; accept it with UPDATE_SNAPSHOTS=1.\n")
# What members must never read: config keys, internal ids, jargon that the texts translate.
LEAKS = re.compile(r"limits\.|scheduler\.|guilds\.|bot\.allow_dms|max_wait_s|HF_HUB|\bjob [0-9a-f]{8,}|\bCFG\b"
                   r"|cost units?|burst|per 60 s|about 0\.0 s|\\\\")
REFERENCE = re.compile(r"`[0-9a-f]{8}`")


def refusal(raise_it: Callable[[], object]) -> str:
    """The reply a member gets for what ``raise_it`` raises, through the reply mapping Discord uses."""
    try:
        raise_it()
    except Exception as exc:  # every refusal, permission and problem the bot answers with
        return error_text(exc)
    raise AssertionError("expected a refusal")


def raising(exc: BaseException) -> Callable[[], object]:
    def raise_it() -> object:
        raise exc

    return raise_it


def refusals() -> dict[str, str]:
    found: dict[str, str] = {}
    limits = OPEN_LIMITS.model_copy(update={"user_rate": Bucket(amount=6, burst=3)})
    scheduler, _, _ = build(limits)
    for _ in range(3):
        scheduler.submit(make_job())
    found["rate, a member's own"] = refusal(lambda: scheduler.submit(make_job()))

    server = Bucket(unit="cost", amount=240, window_s=600, burst=60)
    scheduler, _, _ = build(OPEN_LIMITS.model_copy(update={"guild_rate": server}))
    for user in range(15):
        scheduler.submit(make_job(user=user, count=4))  # 60 cost units: the burst
    found["rate, the server's GPU share"] = refusal(lambda: scheduler.submit(make_job(user=99)))

    scheduler, _, _ = build(OPEN_LIMITS.model_copy(update={"guild_rate": Bucket(amount=1, window_s=3600)}))
    scheduler.submit(make_job(guild=0, user=5))
    found["rate, in direct messages"] = refusal(lambda: scheduler.submit(make_job(guild=0, user=5)))

    scheduler, _, _ = build(OPEN_LIMITS.model_copy(update={"daily_images_per_user": 3}))
    scheduler.submit(make_job(count=2))
    found["daily images, some left"] = refusal(lambda: scheduler.submit(make_job(count=2)))
    scheduler.submit(make_job(count=1))
    found["daily images, none left"] = refusal(lambda: scheduler.submit(make_job(count=1)))

    caps = OPEN_LIMITS.model_copy(update={"max_queued_per_user": 3, "max_queued_per_guild": 4})
    scheduler, _, _ = build(caps, max_queued=6)
    for _ in range(3):
        scheduler.submit(make_job(user=1))
    found["queue full, a member's own"] = refusal(lambda: scheduler.submit(make_job(user=1)))
    scheduler.submit(make_job(user=2))
    found["queue full, the server's"] = refusal(lambda: scheduler.submit(make_job(user=3)))
    scheduler.submit(make_job(guild=2, user=1))
    scheduler.submit(make_job(guild=2, user=2))
    found["queue full, the bot's"] = refusal(lambda: scheduler.submit(make_job(guild=3, user=1)))

    scheduler, _, _ = build(OPEN_LIMITS.model_copy(update={"max_queued_per_guild": 1}))
    scheduler.submit(make_job(guild=0, user=7))
    found["queue full, direct messages"] = refusal(lambda: scheduler.submit(make_job(guild=0, user=7)))

    scheduler, _, _ = build()
    scheduler.pause_guild(1)
    found["paused by a moderator"] = refusal(lambda: scheduler.submit(make_job()))

    scheduler, _, _ = build(guilds={1: GuildConfig(banned_users=[10])})
    found["banned by a moderator"] = refusal(lambda: scheduler.submit(make_job(user=10)))
    found["/mod, not a moderator"] = refusal(raising(NotPermitted(NOT_A_MODERATOR)))

    scheduler, _, _ = build(guilds={1: GuildConfig(channels=[100, 101, 102])})
    found["channel not allowed"] = refusal(lambda: scheduler.submit(make_job(channel=999)))

    scheduler, clock, _ = build()
    scheduler.model_unavailable("tiny", "cannot reach the model hub (HF_HUB_OFFLINE is set)", clock.monotonic() + 60)
    found["model unavailable"] = refusal(lambda: scheduler.submit(make_job()))
    scheduler.model_unavailable("tiny", "a path /srv/models/x", None)
    found["model unavailable, no retry planned"] = refusal(lambda: scheduler.submit(make_job()))

    clock = SimulatedClock()
    pool = FakePool(clock, why_unavailable="Redis cannot be reached (Connection refused)")
    scheduler = Scheduler(pool, make_config(), clock=clock)
    found["GPUs out of reach"] = refusal(lambda: scheduler.submit(make_job()))

    found["direct messages off"] = refusal(raising(DirectMessagesOff()))
    not_owner = Requester(user_id=2, guild_id=1)
    found["not yours to cancel"] = refusal(lambda: not_owner.check_may_manage(1, 1, AppConfig(), "cancel"))
    found["cancel, already finished"] = refusal(lambda: scheduler.cancel("0123456789abcdef"))
    found["button on a deleted image"] = refusal(raising(JobNotFound.not_stored("0123456789abcdef")))
    found["something went wrong"] = refusal(raising(RuntimeError("boom at /srv/bot")))
    found["content rule, the prompt"] = refusal(raising(ContentBlocked("gore")))
    found["content rule, the negative prompt"] = refusal(raising(ContentBlocked("gore", negative=True)))
    found["content rule, in direct messages"] = refusal(raising(ContentBlocked("gore", in_dm=True)))
    found["prompt longer than the server allows"] = refusal(raising(PromptTooLong(312, 200)))
    found["U or V on a withheld image"] = refusal(raising(ImageWithheld(1)))
    return found


async def shutting_down() -> str:
    scheduler: Scheduler = build()[0]
    await scheduler.drain()
    return refusal(lambda: scheduler.submit(make_job()))


def parse_errors() -> dict[str, str]:
    config = AppConfig()
    cases = {
        "unknown flag": "a cat --bogus 3",
        "Midjourney's --s": "a cat --s 750",
        "--sameseed": "a cat --sameseed 7",
        "bad values": "a cat --seed abc --count 9 --ar wide --size 10by10",
        "a flag without its value": "a cat --steps",
        "aspect and size both": "a cat --ar 16:9 --size 768x512",
        "an unknown style with underscores": "a cat --style my_cool_style",
        "an unknown model": "a cat --model sdxl",
        "steps out of range, strength without an image": "a cat --steps 80 --strength 0.5",
        "a LoRA tag": "a cat <lora:ink:heavy> <lora:fur",
        "a given-twice flag": "a cat --seed 1 --seed 2",
    }
    found = {}
    for name, prompt in cases.items():
        found[name] = refusal(lambda prompt=prompt: draft(config, prompt, Options()))
    found["too little strength for the steps"] = refusal(lambda: draft(
        config, "a cat --steps 4 --strength 0.1", Options(), attachment=Attachment("cat.png", "image/png", 1000)))
    found["an attachment that is no image"] = refusal(raising(
        InvalidRequest(attachment_problems(Attachment("notes.pdf", "application/pdf", 1000)))))
    found["an attachment too large"] = refusal(raising(
        InvalidRequest(attachment_problems(Attachment("huge.png", "image/png", 20_000_000)))))
    return found


def job_texts() -> dict[str, str]:
    fox = "a red fox in snow, my_cool_style **bold** @everyone"
    loading = progress_line("sd15", DownloadProgress(int(1.935e9), int(4.3e9), "unet"))
    out = {
        "queued, starting now": texts.queued_text(1, 0.004),
        "queued, 3rd in line": texts.queued_text(3, 150.0),
        "queued, no estimate yet": texts.queued_text(2, None),
        "queued while the model loads": texts.queued_text(1, 12.0, loading=loading),
        "queued, paused": texts.PAUSED_TEXT,
        "starting": texts.STARTING_TEXT,
        "progress, first step": texts.progress_text(1, 4),
        "progress, with time left": texts.progress_text(15, 25, eta_s=12.3),
        "progress, moved to another GPU": texts.progress_text(0, 25, moved=True),
        "progress, after the move": texts.progress_text(3, 25, moved=True),
        "result, one image": texts.result_message_text("a red fox in snow", 42, [7], "tiny", (512, 512), 25, 4.23,
                                                       guidance=7.0),
        "result, a variation of four, every detail": texts.result_message_text(
            fox, 42, [7, 8, 9, 10], "sd15", (768, 512), 30, 75.0, negative="text, watermark", guidance=6.5,
            strength=0.6, loras=[("ink_wash", 0.8)],
            note="\n".join([texts.kind_note("variation"), texts.SCALED_NOTE,
                            "⚠ " + texts.sanitize_user_text("The prompt is too long for the model (90 tokens; it "
                                                            "reads only 77), so it ignored \"in the rain\"")])),
        "result, an upscale": texts.result_message_text("a red fox in snow", 42, [7], "tiny", (1024, 1024), 25, 9.96,
                                                        guidance=7.0, strength=0.3, note=texts.kind_note("upscale")),
        "result, rerolled": texts.kind_note("reroll"),
        "cancel, the private reply": texts.CANCELLED_REPLY,
        "cancelled": texts.failure_text("cancelled", "The request was cancelled."),
        "expired": texts.failure_text("expired", expired_text(600.0)),
        "failed, a reference": texts.failure_text("failed", str(InternalFailure("abcd1234"))),
        "failed, something to change": texts.failure_text("failed", str(FixableFailure(
            "the GPU ran out of memory at 1024x1024, even one image at a time; try a smaller size"))),
        "failed, both GPUs stopped": texts.failure_text("failed", str(WorkerLost(LOST_TEXT))),
        "failed, no GPU serves the model": texts.failure_text("failed", NO_WORKER_TEXT.format(model="sdxl")),
        "dropped, never shown": texts.failure_text("dropped", DROPPED_NEVER_SHOWN),
        "dropped, input deleted": texts.failure_text("dropped", DROPPED_INPUT_GONE),
        "dropped, settings changed": texts.failure_text("dropped", dropped_no_longer_fits(
            InvalidRequest(["model 'retired' is not available; allowed: tiny"]))),
        "interrupted by a restart": texts.INTERRUPTED_TEXT,
        "a new channel message about a request": texts.about_request(42, fox) + texts.failure_text(
            "dropped", DROPPED_INPUT_GONE),
        "images gone": texts.IMAGES_GONE_TEXT,
        "posting failed, retrying": texts.POSTING_RETRY_TEXT,
        "result posted below": texts.DONE_BELOW_TEXT,
        "undeliverable": texts.undeliverable_text(fox, "abcd1234"),
        "full size instead of an upscale": texts.full_size_text(
            1, 42, 8, "width 1536 is out of range; allowed: 64 to 1024 for model sd15"),
        "safety, blurred": texts.safety_note("blur", [0], 1),
        "safety, blurred in a grid": texts.safety_note("blur", [1], 4),
        "safety, two blurred in a grid": texts.safety_note("blur", [0, 2], 4),
        "safety, behind a spoiler": texts.safety_note("spoiler", [0], 1),
        "safety, behind a spoiler in a grid": texts.safety_note("spoiler", [1, 2, 3], 4),
        "safety, withheld": texts.safety_note("refuse", [0], 1),
        "safety, withheld in a grid": texts.safety_note("refuse", [1], 2),
        "safety, all withheld": texts.safety_note("refuse", [0, 1], 2),
    }
    return out


def info_texts() -> dict[str, str]:
    config = AppConfig()
    daily = DailyImages(left=97, limit=100, resets_in_s=5 * 3600 + 120)
    unlimited = Limits(user_rate=None, guild_rate=None, max_queued_per_user=None, daily_images_per_user=None)
    by_cost = config.limits.model_copy(update={"user_rate": Bucket(unit="cost", amount=8, window_s=60, burst=2)})
    mine, other, queued = make_job(user=1, prompt="a castle"), make_job(user=2, prompt="theirs"), [
        QueueEntry(make_job(user=2, prompt="theirs too"), 1, 0.0),
        QueueEntry(make_job(user=1, prompt="a tower"), 2, 0.004),
        QueueEntry(make_job(user=1, prompt="a bridge_over_water"), 3, 95.0)]
    return {
        "/help": help_text(config, config.limits, daily),
        "/help, limits in GPU time": help_text(config, by_cost, daily).splitlines()[-2],
        "/help, unlimited": help_text(config, unlimited, None).splitlines()[-2],
        "/queue": queue_text(1, True, [mine, other], queued, here_waiting=3, total_waiting=5, paused=False),
        "/queue, paused": queue_text(1, True, [], [QueueEntry(make_job(user=1, prompt="a dune"), None, None)],
                                     here_waiting=1, total_waiting=1, paused=True),
        "/queue, nothing": queue_text(1, True, [], [], here_waiting=0, total_waiting=2, paused=False),
        "/queue, direct messages": queue_text(1, False, [], [], here_waiting=0, total_waiting=0, paused=False),
    }


async def rendered() -> dict[str, str]:
    found = {f"refusal: {name}": text for name, text in refusals().items()}
    found["refusal: shutting down"] = await shutting_down()
    found.update({f"flags: {name}": text for name, text in parse_errors().items()})
    found.update({f"job: {name}": text for name, text in job_texts().items()})
    found.update({f"info: {name}": text for name, text in info_texts().items()})
    return {name: REFERENCE.sub("`abcd1234`", text) for name, text in found.items()}  # references are random


def as_file(texts_by_name: dict[str, str]) -> str:
    return HEADER + "".join(f"\n== {name} ==\n{text}\n" for name, text in texts_by_name.items())


async def test_member_texts_match_the_reviewed_snapshot() -> None:
    current = as_file(await rendered())
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(current, encoding="utf-8")
        return
    reviewed = SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else ""
    if current != reviewed:
        diff = "".join(difflib.unified_diff(reviewed.splitlines(keepends=True), current.splitlines(keepends=True),
                                            str(SNAPSHOT.name) + " (reviewed)", "rendered now"))
        pytest.fail(f"{diff}\n{SNAPSHOT_HINT}", pytrace=False)


async def test_no_member_text_leaks_config_keys_ids_or_unexplained_jargon() -> None:
    found = await rendered()
    leaks = {name: LEAKS.findall(text) for name, text in found.items() if LEAKS.search(text)}
    assert leaks == {}
    assert all(len(text) <= texts.MESSAGE_LIMIT for text in found.values())
    def opening(text: str) -> str:
        return re.sub(r"^[^\w/<*]+", "", text)  # past a leading emoji and its space

    lower = {name: text for name, text in found.items()
             if not (opening(text)[:1].isupper() or opening(text).startswith(("/", "<@", "**")))}
    assert lower == {}, "every message starts with a capital, after its emoji"


async def test_a_changed_text_fails_with_the_diff_and_how_to_accept_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    reviewed = tmp_path / "member_texts.txt"
    reviewed.write_text(SNAPSHOT.read_text(encoding="utf-8").replace("✖ Cancelled.", "✖ Cancelled. Cancelled."))
    monkeypatch.setitem(globals(), "SNAPSHOT", reviewed)
    monkeypatch.delenv("UPDATE_SNAPSHOTS", raising=False)
    with pytest.raises(pytest.fail.Exception) as failed:
        await test_member_texts_match_the_reviewed_snapshot()
    message = str(failed.value)
    assert "-✖ Cancelled. Cancelled.\n+✖ Cancelled.\n" in message
    assert "UPDATE_SNAPSHOTS=1 python -m pytest tests/test_member_texts.py" in message
