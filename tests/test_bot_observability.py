"""The operations endpoint end to end: the real bot against the fake Discord, scraped over real HTTP on
loopback. /metrics after jobs of the tiny model, /healthz, /readyz through a model load and a lost gateway,
and JSON log lines about a job."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.core.config import ObservabilityConfig
from bot.observability import json_handler
from generation.interface import CancelToken, Outcome, ProgressCallback
from generation.request import GenerationRequest
from tests.bot_harness import UNLIMITED, WAIT_S, GateExecutor, WatchedStorage, is_result, running_bot, tiny_app_config
from tests.fake_discord import FakeDiscord
from tests.test_bot_process import SMALL_CONFIG, bot_env, bot_process, stop, until_synced
from tests.test_metrics import samples, value
from tests.test_model_warmup import LoadingExecutor


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_port()


async def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET ``path`` on the bot's endpoint."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def readiness(port: int) -> tuple[int, dict[str, Any]]:
    status, _, body = await get(port, "/readyz")
    return status, json.loads(body)


def observed(fake: FakeDiscord, port: int, **limits: Any) -> Any:
    return tiny_app_config(fake, limits=UNLIMITED.model_copy(update=limits),
                           observability=ObservabilityConfig(http_port=port, metrics_top_guilds=5))


async def all_delivered(storage: WatchedStorage, done: int) -> bool:
    ended = await storage.jobs_in_states(["done"])
    return len(ended) == done and all(job.delivery == "delivered" for job in ended)


async def test_metrics_scraped_over_http_match_the_jobs_that_ran(fake: FakeDiscord, tmp_path: Path,
                                                                  port: int) -> None:
    """Issue 12: "`/metrics` scraped over real HTTP in a test after a few jobs, with values that match what ran"."""
    async with running_bot(fake, tmp_path, observed(fake, port, daily_images_per_user=3)) as bot:
        storage = bot.services.storage
        assert isinstance(storage, WatchedStorage)
        for user, count in (("alice", 2), ("bob", 1), ("carol", 1)):
            handle = await fake.slash("imagine", {"prompt": f"a lantern for {user}", "count": count}, user=user)
            await handle.wait_original(is_result)
        refused = await fake.slash("imagine", {"prompt": "two more", "count": 2}, user="alice")  # over the quota
        assert (await refused.wait_original()).ephemeral
        await storage.wait_until(lambda: all_delivered(storage, 3), what="3 results delivered")

        status, content_type, body = await get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    found = samples(body)
    guild = str(fake.guild().id)
    assert value(found, "imagine_images_total", guild=guild) == 4  # the images that were made
    for histogram in ("imagine_wait_seconds", "imagine_run_seconds", "imagine_end_to_end_seconds"):
        assert value(found, f"{histogram}_count") == 3  # one per job
    assert value(found, "imagine_batch_jobs_count") == 3 and value(found, "imagine_batch_jobs_sum") == 3
    assert value(found, "imagine_batch_images_sum") == 4
    assert value(found, "imagine_jobs_total", outcome="done") == 3
    assert value(found, "imagine_refusals_total", reason="limits.daily_images_per_user") == 1
    assert value(found, "imagine_queue_depth") == 0 and value(found, "imagine_jobs_running") == 0
    assert value(found, "imagine_outbox_owed") == 0
    assert value(found, "imagine_event_loop_lag_seconds_count") >= 1
    # The tiny model runs on the CPU: torch is loaded, CUDA never started, so there are no GPU figures.
    assert not [name for name, _ in found if name.startswith("imagine_gpu_memory")]


async def test_healthz_and_readyz_follow_the_model_load_and_the_gateway(fake: FakeDiscord, tmp_path: Path,
                                                                         port: int) -> None:
    """README: "`GET /readyz`: `200` when the gateway is connected ..., the default model is loaded ... and the
    database answers ...; otherwise `503`. The body names each part" """
    gpu = LoadingExecutor()
    async with running_bot(fake, tmp_path, observed(fake, port), executor=gpu) as bot:
        assert await get(port, "/healthz") == (200, "application/json; charset=utf-8", '{"alive": true}')
        await gpu.wait_attempts(1)
        status, body = await readiness(port)
        assert (status, body["ready"], body["failed"]) == (503, False, ["model"])
        assert body["checks"]["model"] == {"ok": False, "detail": "Loading model tiny"}
        assert body["checks"]["gateway"]["ok"] and body["checks"]["database"] == {"ok": True, "detail": "answers"}

        gpu.loaded.set()
        warmup = bot.services.warmup
        assert warmup is not None and (await warmup.wait_settled()).phase == "ready"
        status, body = await readiness(port)
        assert (status, body["failed"], body["checks"]["model"]["detail"]) == (200, [], "model tiny loaded")

        # Discord drops the gateway and refuses reconnects for a while: not ready, and it says why.
        disconnected = bot.wait_for("disconnect", timeout=WAIT_S)
        await fake.drop_gateway()
        await disconnected
        status, body = await readiness(port)
        assert (status, body["failed"]) == (503, ["gateway"])
        assert body["checks"]["gateway"] == {"ok": False, "detail": "disconnected; reconnecting"}
        assert (await get(port, "/healthz"))[0] == 200  # alive all the same

        resumed = bot.wait_for("resumed", timeout=WAIT_S)
        fake.restore_gateway()
        await resumed  # discord.py's next retry RESUMEs the session
        status, body = await readiness(port)
        assert (status, body["failed"]) == (200, [])
    with pytest.raises(aiohttp.ClientConnectionError):  # closed with the bot
        await get(port, "/healthz")


async def test_readyz_names_a_database_that_does_not_answer(fake: FakeDiscord, tmp_path: Path, port: int) -> None:
    async with running_bot(fake, tmp_path, observed(fake, port), executor=GateExecutor()) as bot:
        status, body = await readiness(port)
        assert status == 200 and body["checks"]["model"]["detail"] == "the executor loads models on demand"
        await bot.services.storage.close()  # as if the database went away
        status, body = await readiness(port)
        assert (status, body["failed"]) == (503, ["database"])
        assert "storage is not open" in body["checks"]["database"]["detail"]
        await bot.services.storage.open()


async def test_a_busy_port_leaves_the_bot_running_without_the_endpoint(fake: FakeDiscord, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        with caplog.at_level(logging.ERROR, logger="bot.observability.server"):
            async with running_bot(fake, tmp_path, observed(fake, busy)):
                handle = await fake.slash("imagine", {"prompt": "still here"}, user="alice")
                await handle.wait_original(is_result)
    assert any(f"127.0.0.1:{busy}" in record.getMessage() and "runs without them" in record.getMessage()
               for record in caplog.records)


class CrashingExecutor(GateExecutor):
    """Every batch fails with an unexpected error (a driver crash, say): the bot logs it for the operator."""

    async def run(self, batch: Sequence[GenerationRequest], on_progress: ProgressCallback | None = None, *,
                  cancel_tokens: Sequence[CancelToken] | None = None) -> list[Outcome]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The bot's log lines, as ``log_format: json`` writes them, in a buffer."""
    stream = io.StringIO()
    handler = json_handler(logging.StreamHandler(stream))
    logger = logging.getLogger("bot")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_json_log_lines_about_a_job_carry_its_id(fake: FakeDiscord, tmp_path: Path, port: int,
                                                       json_log: io.StringIO) -> None:
    async with running_bot(fake, tmp_path, observed(fake, port), executor=CrashingExecutor()) as bot:
        handle = await fake.slash("imagine", {"prompt": "a fragile vase"}, user="alice")
        failed = await handle.wait_original(lambda message: "could not be made" in message.content)
        await bot.services.scheduler.flush_notifications()
    assert failed.content
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert all(set(line) >= {"time", "level", "logger", "message"} for line in lines)
    jobs = await _stored_job_ids(tmp_path)
    assert len(jobs) == 1
    job_id = jobs[0]
    about = [line for line in lines if line.get("job_id") == job_id]
    messages = [line["message"] for line in about]
    # The dispatcher's line names no job: the batch's context gives its id; the scheduler's names it.
    assert "executor failed on a batch of 1" in messages
    assert any(message.startswith(f"job {job_id} failed (reference ") for message in messages)
    assert "ended: failed" in messages  # logged by the metrics' job-event subscriber
    crash = next(line for line in about if line["message"] == "executor failed on a batch of 1")
    assert crash["level"] == "ERROR" and "RuntimeError: CUDA error" in crash["exception"]
    # Every line that mentions the job carries its id.
    assert all(line.get("job_id") == job_id for line in lines if job_id in line["message"])


async def _stored_job_ids(data_dir: Path) -> list[str]:
    storage = WatchedStorage(data_dir)
    async with storage:
        return [job.id for job in await storage.jobs_in_states(["failed"])]



async def test_python_m_bot_serves_the_endpoint_and_logs_json_lines(fake: FakeDiscord, tmp_path: Path,
                                                                    port: int) -> None:
    """The composition root as an operator runs it: ``observability`` in config.yaml, ``python -m bot``."""
    (tmp_path / "config.yaml").write_text(
        SMALL_CONFIG + f"observability: {{http_port: {port}, log_format: json}}\n")
    log_path = tmp_path / "bot.log"
    async with bot_process(bot_env(tmp_path, IMAGINE_LOG_LEVEL="INFO", **fake.env), log_path) as process:
        await until_synced(fake, process, log_path, "imagine", "stats", "me")
        assert (await get(port, "/healthz"))[0] == 200  # served from before the commands were synced
        handle = await fake.slash("imagine", {"prompt": "a fox in a log line"}, user="alice")
        await handle.wait_original(is_result)
        status, _, body = await get(port, "/metrics")
        assert status == 200 and value(samples(body), "imagine_images_total", guild=str(fake.guild().id)) == 1
        # Ready or not yet (discord.py turns ready a moment after connecting, once the guilds are in), /readyz
        # answers for each part; the in-process tests above follow its transitions.
        status, body_json = await readiness(port)
        assert status in (200, 503) and set(body_json["checks"]) == {"gateway", "model", "database"}
        assert body_json["checks"]["database"]["ok"]
        code = await stop(process)
    text = log_path.read_text()
    assert code == 0, text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert any(line["logger"] == "bot.observability.server" and f":{port}/metrics" in line["message"]
               for line in lines)
    assert all(line["level"] in ("INFO", "WARNING") for line in lines), text
