"""The metrics on the real scheduler with a fake executor on simulated time (so every duration is exact),
the per-server label cap, and the JSON log lines. Scraping over HTTP from the running bot is in
``test_bot_observability.py``."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.core.errors import QuotaExceeded
from bot.core.jobcontext import about_jobs
from bot.observability import (
    BotMetrics,
    GuildLabels,
    Health,
    ReadinessCheck,
    check_all,
    json_handler,
    model_check,
    use_format,
)
from bot.observability.runtime import gpu_memory
from bot.scheduler import Scheduler, SimulatedClock
from bot.scheduler.warmup import ModelState
from bot.storage import Storage
from tests.scheduler_helpers import OPEN_LIMITS, FakeExecutor, make_config, make_job

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: bytes | str) -> Samples:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    found: Samples = {}
    for family in text_string_to_metric_families(text.decode() if isinstance(text, bytes) else text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def test_job_events_fill_the_histograms_with_what_ran(tmp_path: Path) -> None:
    clock = SimulatedClock()
    executor = FakeExecutor(clock, max_batch_images=4, duration=lambda batch: 2.0 * len(batch))
    limits = OPEN_LIMITS.model_copy(update={"daily_images_per_user": 3})
    scheduler = Scheduler(executor, make_config(limits=limits), clock=clock)
    async with Storage(tmp_path) as storage:
        metrics = BotMetrics(scheduler, storage, top_guilds=1)
        scheduler.events.subscribe(metrics.listener)
        await scheduler.start()
        # Guild 1 is the busiest (3 jobs): it is named; guild 2 is "other"; guild 0 is a direct message.
        first = [scheduler.submit(make_job(1, user, count=count)) for user, count in ((10, 2), (11, 1), (12, 1))]
        await clock.advance(10)  # one batch of three jobs (4 images) runs 6 s
        scheduler.submit(make_job(2, 20, count=1))
        scheduler.submit(make_job(0, 30, count=1))
        await clock.advance(10)  # one batch of two jobs runs 4 s
        with pytest.raises(QuotaExceeded):
            scheduler.submit(make_job(1, 10, count=2))
        await scheduler.stop()
        metrics_text = metrics.render()
    assert all(job.batch_size == 3 for job in first)
    found = samples(metrics_text)
    assert value(found, "imagine_wait_seconds_count") == 5
    assert value(found, "imagine_wait_seconds_sum") == 0.0  # the executor was idle: every job started at once
    assert value(found, "imagine_run_seconds_count") == 5 and value(found, "imagine_run_seconds_sum") == 3 * 6 + 2 * 4
    assert value(found, "imagine_end_to_end_seconds_count") == 5
    assert value(found, "imagine_batch_jobs_count") == 2 and value(found, "imagine_batch_jobs_sum") == 5
    assert value(found, "imagine_batch_images_sum") == 6
    assert value(found, "imagine_batch_images_bucket", le="4.0") == 2
    assert value(found, "imagine_jobs_total", outcome="done") == 5
    assert value(found, "imagine_jobs_total", outcome="failed") == 0
    assert value(found, "imagine_images_total", guild="1") == 4
    assert value(found, "imagine_images_total", guild="other") == 1
    assert value(found, "imagine_images_total", guild="dm") == 1
    assert value(found, "imagine_refusals_total", reason="limits.daily_images_per_user") == 1
    assert value(found, "imagine_queue_depth") == 0 and value(found, "imagine_jobs_running") == 0
    assert value(found, "imagine_outbox_owed") == 0  # never refreshed: nothing stored


async def test_the_queue_is_read_at_scrape_time_and_the_outbox_from_storage(tmp_path: Path) -> None:
    clock = SimulatedClock()
    scheduler = Scheduler(FakeExecutor(clock), make_config(), clock=clock)
    async with Storage(tmp_path) as storage:
        metrics = BotMetrics(scheduler, storage, top_guilds=5)
        scheduler.events.subscribe(metrics.listener)
        for guild in (1, 1, 2, 0):
            scheduler.submit(make_job(guild, 10 + guild))
        ended = await storage.create_job(make_job().request, user_id=1)
        await storage.update_status(ended.id, "failed", error="no")  # its end is owed to Discord
        await metrics.refresh()
        found = samples(metrics.render())
        await storage.close()
        await metrics.refresh()  # a database that is gone leaves the last count: the scrape still answers
        assert value(samples(metrics.render()), "imagine_outbox_owed") == 1
    assert value(found, "imagine_queue_depth") == 4
    assert {key[1]: count for key, count in found.items() if key[0] == "imagine_guild_queue_depth"} == {
        (("guild", "1"),): 2, (("guild", "2"),): 1, (("guild", "dm"),): 1}
    assert value(found, "imagine_outbox_owed") == 1


def test_server_labels_are_capped_to_the_busiest_plus_other() -> None:
    labels = GuildLabels(top=2)
    for guild, jobs in ((101, 5), (102, 9), (103, 1), (104, 5)):
        for _ in range(jobs):
            labels.count(guild)
    labels.count(0)  # direct messages are never a server
    assert labels.named() == {101, 102}  # 101 and 104 tie: the lower id, so the set does not flap
    assert labels.fold([(101, 1), (102, 2), (103, 3), (104, 4), (0, 5), (-7, 6)]) == {
        "101": 1, "102": 2, "other": 7, "dm": 11}


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """A stand-in for torch in ``sys.modules``: the bot never imports torch itself, it reads the one loaded."""
    cuda = types.SimpleNamespace(
        initialized=False, is_initialized=lambda: cuda.initialized, device_count=lambda: 2,
        memory_allocated=lambda index: 1000 * (index + 1), memory_reserved=lambda index: 4000 * (index + 1),
        get_device_properties=lambda index: types.SimpleNamespace(total_memory=80_000))
    torch = types.SimpleNamespace(cuda=cuda)
    monkeypatch.setitem(sys.modules, "torch", torch)
    yield cuda


def test_gpu_memory_only_where_this_process_already_runs_cuda(fake_torch: Any) -> None:
    assert list(gpu_memory()) == []  # torch loaded, CUDA not initialised: no GPU figures, no CUDA start-up
    fake_torch.initialized = True
    found = {(family.name.removeprefix("imagine_gpu_memory_"), sample.labels["device"]): sample.value
             for family in gpu_memory() for sample in family.samples}
    assert found == {("allocated_bytes", "0"): 1000, ("allocated_bytes", "1"): 2000, ("reserved_bytes", "0"): 4000,
                     ("reserved_bytes", "1"): 8000, ("total_bytes", "0"): 80_000, ("total_bytes", "1"): 80_000}
    fake_torch.device_count = lambda: 1 / 0  # a driver error never fails a scrape
    assert list(gpu_memory()) == []


def test_gpu_memory_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert list(gpu_memory()) == []


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_name_the_job_from_the_context_the_message_or_extra() -> None:
    stream = io.StringIO()
    handler = json_handler(logging.StreamHandler(stream))
    log = logging.getLogger("bot.test_json")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    job, other = "a" * 32, "b" * 32
    try:
        log.info("nothing about a job")
        with about_jobs(job):
            log.warning("about the job: %s", "but not naming it")
        with about_jobs(job, other):
            log.error("a batch of %d failed", 2)
        log.info("could not show the end of job %s", other)
        log.info("said outright", extra={"job_id": job})
        try:
            raise ValueError("multi\nline")
        except ValueError:
            log.exception("job %s broke", job)
    finally:
        log.removeHandler(handler)
    lines = json_lines(stream)
    assert [line.get("job_id") for line in lines] == [None, job, None, other, job, job]
    assert lines[2]["job_ids"] == [job, other]
    assert lines[0] == {"time": lines[0]["time"], "level": "INFO", "logger": "bot.test_json",
                        "message": "nothing about a job"}
    assert lines[0]["time"].endswith("+00:00")
    assert "ValueError: multi\nline" in lines[5]["exception"]
    assert len(stream.getvalue().splitlines()) == 6  # one line per record, newlines escaped


def test_use_format_switches_the_handlers_between_json_and_text() -> None:
    stream = io.StringIO()
    root = logging.Logger("test-root")
    root.addHandler(logging.StreamHandler(stream))
    use_format("json", root)
    root.warning("job %s is late", "c" * 32)
    use_format("text", root)
    root.warning("plain again")
    first, second = stream.getvalue().splitlines()
    assert json.loads(first)["job_id"] == "c" * 32
    assert second.endswith("WARNING test-root: plain again")


async def test_readiness_probes_say_which_part_fails_and_why() -> None:
    class Warmup:
        def __init__(self, state: ModelState | None) -> None:
            self.state = state

    async def slow() -> Health:
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    async def broken() -> Health:
        raise ConnectionResetError("reset by peer")

    failed = ModelState("sd15", "failed", error="cannot reach the model hub")
    answers = await check_all([
        ReadinessCheck("never", model_check(cast(Any, Warmup(None))).probe),
        ReadinessCheck("failed", model_check(cast(Any, Warmup(failed))).probe),
        ReadinessCheck("slow", slow), ReadinessCheck("broken", broken),
    ], timeout_s=0.01)
    assert answers == {
        "never": Health(False, "the model load has not started"),
        "failed": Health(False, "model sd15 could not be loaded: cannot reach the model hub"),
        "slow": Health(False, "no answer within 0.01 s"),
        "broken": Health(False, "ConnectionResetError: reset by peer"),
    }
