"""/imagine end to end: the real bot and discord.py client against the fake Discord, tiny model, SQLite."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from PIL import Image

from bot.core.config import BotConfig, Bucket
from bot.core.config_store import ConfigStore
from bot.discord_ui.images import read_parameters
from bot.storage import JobRecord, Storage
from generation.request import GenerationRequest, ProgressEvent
from tests.bot_harness import (
    UNLIMITED,
    WAIT_S,
    GateExecutor,
    ShownFirstStorage,
    WatchedStorage,
    clock_of,
    decode,
    is_result,
    make_bot,
    public,
    run_client,
    running_bot,
    tiny_app_config,
    tiny_executor,
)
from tests.fake_discord import FakeDiscord
from tests.frozen_clock import FrozenClock


async def test_imagine_posts_a_grid_with_buttons_and_parameters(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, tmp_path):
        handle = await fake.slash("imagine", {"prompt": "a red fox in snow @everyone --seed 5 --count 2"},
                                          user="alice")
        result = await handle.wait_original(is_result)
        grid = decode(result)
        assert grid.size == (128, 64)  # two 64x64 images side by side
        assert "Seeds 5, 6" in result.content
        assert "--seed" not in result.content
        assert "@\u200beveryone" in result.content  # echoed, but it can never ping
        parameters = read_parameters(result.attachments[0].data)
        assert parameters is not None and "Seed: 5" in parameters
        assert {"U1", "U2", "V1", "V2"} <= {c.get("label") for row in result.components for c in row["components"]}
        # Every message the bot sent or edited had mentions switched off.
        assert fake.allowed_mentions
        assert all(entry.sent and entry.value == {"parse": []} for entry in fake.allowed_mentions)


async def test_flags_options_aspect_style_and_seed(fake: FakeDiscord, tmp_path: Path) -> None:
    styles = {"neon": "neon sign of {prompt}, glowing"}
    config = tiny_app_config(fake, bot=BotConfig(progress_interval_s=0.0, styles=styles))
    async with running_bot(fake, tmp_path, config):
        # Explicit options beat the flags typed in the prompt; the flags leave the prompt.
        explicit = await fake.slash("imagine", {"prompt": "a fox --ar 16:9 --steps 3 --seed 7", "aspect": "1:1",
                                                "steps": 2, "seed": 9}, user="alice")
        result = await explicit.wait_original(is_result)
        assert decode(result).size == (64, 64)
        assert result.content.startswith("**a fox**") and "Seed 9 ·" in result.content and "2 steps" in result.content

        # A configured aspect (16:9 = 912x512) is rescaled to the model's 64x64 budget, but no side below 64.
        wide = await fake.slash("imagine", {"prompt": "a fox --ar 16:9"}, user="alice")
        result = await wide.wait_original(is_result)
        assert decode(result).size == (112, 64) and "112×64" in result.content

        styled = await fake.slash("imagine", {"prompt": "a fox", "style": "neon", "seed": 3}, user="alice")
        result = await styled.wait_original(is_result)
        assert result.content.startswith("**neon sign of a fox, glowing**")
        parameters = read_parameters(result.attachments[0].data)
        assert parameters is not None and parameters.startswith("neon sign of a fox, glowing\n")

        # Same seed, same image; another seed, another image. One at a time: a batch of several
        # requests takes other numeric paths, so batch-mates match only to rounding, not bit for bit.
        images = []
        for seed in (42, 42, 43):
            handle = await fake.slash("imagine", {"prompt": "a lighthouse", "seed": seed}, user="carol")
            images.append((await handle.wait_original(is_result)).attachments[0].data)
        assert images[0] == images[1]
        assert decode_bytes(images[0]) != decode_bytes(images[2])


def decode_bytes(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").tobytes()


async def test_invalid_input_is_answered_privately(fake: FakeDiscord, tmp_path: Path) -> None:
    cases = [
        ({"prompt": "a cat --stylize 100"}, ["--stylize is not a known flag", "known flags: --ar"]),
        ({"prompt": "a cat", "steps": 80}, ["steps 80 is out of range", "allowed: 1 to 50"]),
        ({"prompt": "a cat", "model": "sdxl"}, ["model 'sdxl' is not available", "allowed: tiny"]),
        ({"prompt": "a cat", "style": "vaporwave"}, ["style 'vaporwave' is unknown", "allowed: photo"]),
        ({"prompt": "a cat --ar 9:1"}, ["aspect 9:1 is not allowed", "1:4 to 4:1"]),
    ]
    async with running_bot(fake, tmp_path):
        for options, expected in cases:
            handle = await fake.slash("imagine", options, user="alice")
            reply = await handle.wait_original()
            assert reply.ephemeral, options
            assert all(text in reply.content for text in expected), reply.content
    assert public(fake) == []


async def test_autocomplete_offers_configured_names(fake: FakeDiscord, tmp_path: Path) -> None:
    from tests.bot_harness import tiny_model

    config = tiny_app_config(fake, models={"tiny": tiny_model(), "tiny-xl": tiny_model()},
                             bot=BotConfig(progress_interval_s=0.0, styles={"photo": "{prompt}, photo",
                                                                            "ink": "ink drawing of {prompt}"}))
    async with running_bot(fake, tmp_path, config):
        models = await fake.autocomplete("imagine", "model", {"prompt": "x", "model": ""})
        assert [choice["value"] for choice in models] == ["tiny", "tiny-xl"]
        assert [c["value"] for c in await fake.autocomplete("imagine", "model", {"model": "XL"})] == ["tiny-xl"]
        styles = await fake.autocomplete("imagine", "style", {"style": ""})
        assert [choice["value"] for choice in styles] == ["ink", "photo"]
        aspects = await fake.autocomplete("imagine", "aspect", {"aspect": "16"})
        assert [choice["value"] for choice in aspects] == ["16:9", "9:16"]


class FlakyStorage(Storage):
    """Real storage whose next ``create_job`` fails like a database that briefly lost its disk."""

    fail_next = True

    async def create_job(self, request: GenerationRequest, **kwargs: Any) -> JobRecord:
        if self.fail_next:
            self.fail_next = False
            raise sqlalchemy.exc.OperationalError("INSERT INTO jobs", {}, Exception("disk I/O error"))
        return await super().create_job(request, **kwargs)


async def test_unexpected_error_gives_a_reference_and_the_bot_keeps_serving(fake: FakeDiscord,
                                                                          tmp_path: Path) -> None:
    store = ConfigStore(initial=tiny_app_config(fake))
    bot = make_bot(store, FlakyStorage(tmp_path), tiny_executor(store.current), clock=clock_of(fake))
    async with run_client(fake, bot):
        failed = await fake.slash("imagine", {"prompt": "a cat"}, user="alice")
        reply = await failed.wait_original()
        assert reply.ephemeral and "Something went wrong on our side (reference `" in reply.content
        assert "disk I/O" not in reply.content  # internals stay in the log
        again = await fake.slash("imagine", {"prompt": "a cat"}, user="alice")
        result = await again.wait_original(is_result)
        assert "**a cat**" in result.content and decode(result).size == (64, 64)  # the bot kept serving


async def test_queue_and_help_reply_privately(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, tmp_path):
        queue = await fake.slash("queue", user="alice")
        reply = await queue.wait_original()
        assert reply.ephemeral
        assert reply.content == ("You have nothing waiting or running.\n"
                                 "This server: 0 waiting, 0 running · all servers: 0 waiting")
        help_ = await fake.slash("help", user="alice")
        reply = await help_.wait_original()
        assert reply.ephemeral
        assert "--ar W:H" in reply.content and "Models: tiny" in reply.content and "1:1" in reply.content
        assert ("**Your limits here:** no rate limit · no cap on waiting requests · no daily image limit."
                in reply.content)
        assert reply.content.endswith("More in the member guide: README → Using it")
    assert public(fake) == []


async def test_help_shows_your_own_limits_and_daily_images_left(fake: FakeDiscord, clock: FrozenClock,
                                                                tmp_path: Path) -> None:
    """README: "`/help` shows the flags and your limits here: your rate, how many requests may wait, and how many
    of your daily images are left"; in plain words, never config keys."""
    await clock.advance((19 * 3600 - clock.time()) % 86400)  # 19:00 UTC: the daily images reset in 5 h
    limits = UNLIMITED.model_copy(update={"user_rate": Bucket(amount=6, window_s=60, burst=3),
                                          "max_queued_per_user": 2, "daily_images_per_user": 5})
    async with running_bot(fake, tmp_path, tiny_app_config(fake, limits=limits)):
        await (await fake.slash("imagine", {"prompt": "two foxes --count 2"}, user="alice")).wait_original(is_result)
        alice = await (await fake.slash("help", user="alice")).wait_original()
        carol = await (await fake.slash("help", user="carol")).wait_original()
    assert alice.ephemeral and ("**Your limits here:** you can make 6 requests a minute (3 at once) · up to 2 "
                                "requests waiting at a time · 3 of your 5 daily images left (they reset at 00:00 UTC, "
                                "in 5 h).") in alice.content
    assert "· 5 of your 5 daily images left" in carol.content  # each member's own count
    assert "limits." not in alice.content and "burst" not in alice.content


async def test_progress_shows_queue_place_then_steps_with_a_preview(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "steps count from 1 to the steps you asked for ..., with a preview (256 px on its long side)"."""
    async with running_bot(fake, tmp_path, storage_class=ShownFirstStorage):  # every step after the message
        handle = await fake.slash("imagine", {"prompt": "a comet --steps 4"}, user="alice")
        result = await handle.wait_original(is_result)
        contents = result.contents
        # Queued while the model warms up at start-up, else started at once (an idle GPU waits for nobody).
        assert contents[0].startswith(("Queued — next in line", "Starting…"))
        steps = [text.split("(step ")[1].rstrip(")") for text in contents if text.startswith("Generating")]
        # Counted as asked, though the tiny model's PNDM runs a warm-up step more; the last step is the result.
        assert steps == ["1/4", "2/4", "3/4"]
        assert not contents[-2].startswith("**")  # the result came last, once
        with_preview = [v for v in result.versions if v.content.startswith("Generating")]
        assert all(version.attachment_names == ["preview.png"] for version in with_preview)
        assert result.versions[-1].attachment_names[0].startswith("imagine_")
    # The 64×64 request's linear preview is the latent's 8×8: sent scaled up to be seen.
    previews = [file.data for request in fake.requests for file in request.files if file.filename == "preview.png"]
    assert previews
    for data in previews:
        with Image.open(io.BytesIO(data)) as preview:
            assert preview.size == (256, 256)


class SteppingExecutor(GateExecutor):
    """A GateExecutor whose batch reports the denoising steps the test sends, before the gate opens."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: asyncio.Queue[int] = asyncio.Queue()
        self.reported: asyncio.Queue[int] = asyncio.Queue()
        self.running = asyncio.Event()

    async def run(self, batch: Any, on_progress: Any = None, *, cancel_tokens: Any = None) -> Any:
        self.running.set()
        while not self.gate.is_set():
            step = await self.steps.get()
            if step == 0:
                break
            if on_progress is not None:
                on_progress(ProgressEvent(step, 10))
            self.reported.put_nowait(step)
        self.gate.set()
        return await super().run(batch, on_progress, cancel_tokens=cancel_tokens)


class SlowToRecordStorage(WatchedStorage):
    """Real storage whose record of the status message waits until the test lets it through."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recording = asyncio.Event()
        self.let_through = asyncio.Event()

    async def set_messages(self, *args: Any, **kwargs: Any) -> Any:
        if "status_message_id" in kwargs:
            self.recording.set()
            await self.let_through.wait()
        return await super().set_messages(*args, **kwargs)


async def test_progress_before_the_status_is_recorded_is_held_and_the_latest_shown(fake: FakeDiscord,
                                                                                  tmp_path: Path) -> None:
    """README: "One status message shows the queue position and when the request starts, then progress". Steps
    made while the status message is still being recorded are not lost: the latest is shown once it is."""
    store = ConfigStore(initial=tiny_app_config(fake))
    storage = SlowToRecordStorage(tmp_path)
    gpu = SteppingExecutor()
    bot = make_bot(store, storage, gpu, clock=clock_of(fake))
    async with run_client(fake, bot):
        handle = await fake.slash("imagine", {"prompt": "a slow dawn"}, user="alice")
        await asyncio.wait_for(asyncio.gather(storage.recording.wait(), gpu.running.wait()), WAIT_S)
        for step in (1, 2, 3):
            await gpu.steps.put(step)
        await handle.wait_original(lambda m: m.content.startswith(("Queued", "Starting")))
        assert [await asyncio.wait_for(gpu.reported.get(), WAIT_S) for _ in range(3)] == [1, 2, 3]
        await bot.services.scheduler.flush_notifications()  # the presenter has heard all three
        storage.let_through.set()  # the status message is recorded now
        held = await handle.wait_original(lambda m: m.content.startswith("Generating"))
        assert "(step 3/10)" in held.content  # the latest step, shown as soon as the message is known
        await gpu.steps.put(4)
        await handle.wait_original(lambda m: "(step 4/10)" in m.content)
        await gpu.steps.put(0)
        result = await handle.wait_original(is_result)
        shown = [text.split("(step ")[1].rstrip(")") for text in result.contents if text.startswith("Generating")]
        assert shown == ["3/10", "4/10"]  # steps 1 and 2 were superseded before anyone could see them


async def test_the_first_step_waits_its_turn_after_starting(fake: FakeDiscord, tmp_path: Path) -> None:
    """Progress edits come at most every ``progress_interval_s``, counted from the "Starting…" edit too: a step
    right after it is not shown (two edits in a moment tell the member nothing), the next one after the interval
    is."""
    config = tiny_app_config(fake, bot=BotConfig(progress_interval_s=2.0))
    storage = Storage(tmp_path)
    gpu = SteppingExecutor()
    clock = clock_of(fake)
    bot = make_bot(ConfigStore(initial=config), storage, gpu, clock=clock)
    async with run_client(fake, bot):
        handle = await fake.slash("imagine", {"prompt": "a patient owl"}, user="alice")
        await asyncio.wait_for(gpu.running.wait(), WAIT_S)
        # "Starting…" as an edit of the posted status message (the first post may say it already): shown now
        await handle.wait_original(lambda m: len(m.contents) >= 2 and m.content.startswith("Starting"))
        await gpu.steps.put(1)
        await asyncio.wait_for(gpu.reported.get(), WAIT_S)
        await bot.services.scheduler.flush_notifications()  # the presenter has heard of step 1...
        await clock.advance(2.0)
        await gpu.steps.put(2)  # ...and step 2 comes a whole interval after "Starting…"
        await handle.wait_original(lambda m: "(step 2/10)" in m.content)
        await gpu.steps.put(0)
        result = await handle.wait_original(is_result)
    shown = [text.split("(step ")[1].rstrip(")") for text in result.contents if text.startswith("Generating")]
    assert shown == ["2/10"]


async def test_the_status_message_is_never_edited_to_what_it_already_says(fake: FakeDiscord, tmp_path: Path) -> None:
    """The queue place the cog's answer shows is not sent again when the queue's own news of it comes after the
    answer: every edit changes what the member sees (and Discord allows only a few edits per token at a time)."""
    gpu = GateExecutor()
    gpu.gate.set()
    async with running_bot(fake, tmp_path, executor=gpu):
        handle = await fake.slash("imagine", {"prompt": "a quiet harbour"}, user="alice")
        result = await handle.wait_original(is_result)
    assert result.contents[0].startswith("Queued")  # the answer: next in line, starting now
    assert result.contents[1:-1] == ["Starting…"]  # then one edit as it starts, then the result
    assert all(shown != after for shown, after in zip(result.contents, result.contents[1:], strict=False))


class UnsavableStorage(Storage):
    """Real storage whose disk refuses result images."""

    async def save_result_images(self, job_id: str, pngs: Any, seeds: Any) -> Any:
        raise OSError(28, "No space left on device")

    async def store_result(self, job_id: str, pngs: Any, seeds: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")


async def test_a_result_that_cannot_be_saved_ends_as_failed_not_stuck(fake: FakeDiscord, tmp_path: Path) -> None:
    store = ConfigStore(initial=tiny_app_config(fake))
    storage = UnsavableStorage(tmp_path)
    bot = make_bot(store, storage, tiny_executor(store.current), clock=clock_of(fake))
    async with run_client(fake, bot):
        handle = await fake.slash("imagine", {"prompt": "a cat"}, user="alice")
        final = await handle.wait_original(lambda m: "could not be saved" in m.content)
        assert final.components == []  # no cancel button left on a job that has ended
        assert len(await storage.jobs_in_states(["failed"])) == 1  # and so it is not run again after a restart
        assert await storage.jobs_in_states(["queued", "running"]) == []


class UnlinkableStorage(WatchedStorage):
    """Real storage that cannot record which message shows a job."""

    async def set_messages(self, job_id: str, **kwargs: Any) -> Any:
        raise OSError(5, "Input/output error")


async def test_a_job_whose_status_cannot_be_recorded_is_taken_back(fake: FakeDiscord, tmp_path: Path) -> None:
    store = ConfigStore(initial=tiny_app_config(fake))
    storage = UnlinkableStorage(tmp_path)
    gpu = GateExecutor()
    bot = make_bot(store, storage, gpu, clock=clock_of(fake))
    async with run_client(fake, bot):
        unseen = await fake.slash("imagine", {"prompt": "a long job"}, user="alice")
        await unseen.wait_followup(lambda m: "reference" in m.content and m.ephemeral)
        gpu.gate.set()  # the executor drops the cancelled member
        # Nobody could see it, so it ends cancelled: it is not resumed after a restart and shows no result.
        cancelled = await storage.wait_until(lambda: storage.jobs_in_states(["cancelled"]), what="the job cancelled")
        assert len(cancelled) == 1
        assert public(fake) == []  # no status message left behind with a dead cancel button
