"""The scale-out path as an operator runs it: ``python -m bot`` with ``executor.mode: redis`` and GPU workers
(``python -m generation.worker``), each a separate process, against the fake Discord and a real Redis.

Every acknowledged request must end exactly once, whatever happens to a worker or to Redis: a worker killed
with SIGKILL mid-batch (its batch moves to the other worker, and the member is told), Redis restarted with
everything in it lost (the bot sends what it still runs again), Redis out of reach (new requests are refused
in plain words, queued ones wait, and it recovers by itself). And the fair queue holds across the cluster: a
light server's request starts after at most one more batch of a server that floods the queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import pytest
import pytest_asyncio

from bot.discord_ui.texts import MOVED_TEXT
from bot.scheduler.scheduler import WORKERS_UNREACHABLE_TEXT
from tests.bot_harness import WAIT_S, is_result, world
from tests.fake_discord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, FakeUser, InteractionHandle
from tests.frozen_clock import FrozenClock
from tests.redis_backend import OwnRedis
from tests.storage_backends import Databases, _server_engine
from tests.test_bot_process import ROOT, bot_env
from tests.test_delivery_kills import BotProcess, endings_of

pytestmark = pytest.mark.slow

HEARTBEAT_S = 0.5


def cluster_yaml(redis_url: str, namespace: str, bot: str = "") -> str:
    """``bot``: more settings of the ``bot`` section (every step is shown, so a test can see a job running)."""
    return f"""\
bot: {{progress_interval_s: 0{", " + bot if bot else ""}}}
models:
  default: tiny
  tiny: {{source: "builtin:tiny", default_steps: 2, max_steps: 200, default_width: 64, default_height: 64}}
executor:
  device: cpu
  preview_every_steps: 0
  max_batch_images: 1
  mode: redis
  redis_url: "{redis_url}"
  redis_namespace: {namespace}
  heartbeat_s: {HEARTBEAT_S}
scheduler: {{batch_window_ms: 0}}
limits: {{user_rate: null, guild_rate: null, max_queued_per_user: null, max_queued_per_guild: null,
          daily_images_per_user: null}}
"""


class WorkerProcess:
    """``python -m generation.worker --redis URL --config PATH --threads 1`` (README "Scaling out", on the CPU),
    its output in a file."""

    def __init__(self, tmp_path: Path, name: str, **env: str) -> None:
        self.log_path = tmp_path / f"worker-{name}.log"
        self.config = tmp_path / "config.yaml"
        self.env = bot_env(tmp_path, IMAGINE_LOG_LEVEL="INFO", OMP_NUM_THREADS="1", **env)
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        redis_url = re.search(r'redis_url: "([^"]+)"', self.config.read_text())
        assert redis_url is not None
        with self.log_path.open("w") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "generation.worker", "--redis", redis_url.group(1), "--config", str(self.config),
                "--threads", "1", cwd=ROOT, env=self.env, stdout=log, stderr=log)

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    async def ready(self) -> None:
        """Wait until it serves (it announced itself after loading its model)."""
        async with asyncio.timeout(WAIT_S):
            while " serving " not in self.log:
                assert self.process is not None and self.process.returncode is None, self.log
                await asyncio.sleep(0.1)

    def done(self, prompt: str) -> int:
        """How many times this worker ran ``prompt`` to completion."""
        return sum(line.endswith(f": done {prompt!r} (seed 5)") for line in self.log.splitlines())

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), WAIT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_all(*processes: BotProcess | WorkerProcess) -> None:
    for process in processes:
        await process.start()
    for process in processes:
        if isinstance(process, WorkerProcess):
            await process.ready()


async def stop_all(*processes: BotProcess | WorkerProcess) -> None:
    for process in processes:  # the bot first: it drains while its workers still serve
        await process.stop()


def ended(fake: FakeDiscord, requests: list[tuple[str, InteractionHandle]]) -> bool:
    return all(endings_of(fake, prompt, handle) for prompt, handle in requests)


def logs(*processes: BotProcess | WorkerProcess) -> str:
    return "\n".join(f"--- {p.log_path.name}\n{p.log_path.read_text()}" for p in processes if p.log_path.exists())


@pytest.mark.timeout(300)
async def test_a_worker_killed_mid_batch_loses_nothing_and_its_batch_moves(fake: FakeDiscord, tmp_path: Path,
                                                                           redis_url: str,
                                                                           redis_namespace: str) -> None:
    (tmp_path / "config.yaml").write_text(cluster_yaml(redis_url, redis_namespace))
    bot = BotProcess(fake, tmp_path, "bot", IMAGINE_LOG_LEVEL="INFO")
    doomed = WorkerProcess(tmp_path, "doomed", IMAGINE_WORKER_KILL_AT_STEP="2")  # dies in its first batch
    steady = WorkerProcess(tmp_path, "steady")
    prompts = [f"cluster request {number}" for number in range(4)]
    requests: list[tuple[str, InteractionHandle]] = []
    try:
        await start_all(doomed, steady, bot)
        await fake.wait_commands("imagine")
        for number, prompt in enumerate(prompts):  # one batch each (max_batch_images 1): both workers get one
            handle = await fake.slash("imagine", {"prompt": f"{prompt} --steps 8 --seed 5"},
                                      user=("alice", "bob", "carol")[number % 3])
            requests.append((prompt, handle))
        await fake.wait_until(partial(ended, fake, requests), what="every request to end", timeout=4 * WAIT_S)
        assert doomed.process is not None
        assert await asyncio.wait_for(doomed.process.wait(), WAIT_S) == -9, logs(doomed)
    finally:
        await stop_all(bot, doomed, steady)
    for prompt, handle in requests:
        endings = endings_of(fake, prompt, handle)
        assert len(endings) == 1 and is_result(endings[0]), (prompt, [m.content for m in endings], logs(bot))
        assert doomed.done(prompt) + steady.done(prompt) == 1, prompt  # never run twice to completion
    told = [handle for _, handle in requests
            if any(MOVED_TEXT in version.content for message in handle.messages for version in message.versions)]
    assert len(told) == 1, logs(bot, doomed)  # the one whose GPU died was told, once its new one took over


@pytest_asyncio.fixture
async def postgres_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh PostgreSQL database (README's scale-out set-up); skips, or fails under CI, without a server."""
    server = await _server_engine(request.config)
    databases = Databases("postgresql", tmp_path, server)
    try:
        yield await databases.new()
    finally:
        await databases.drop_all()
        await server.dispose()


@pytest.mark.timeout(300)
async def test_a_bot_killed_mid_batch_runs_it_again_from_its_database_and_it_ends_once(
        fake: FakeDiscord, tmp_path: Path, redis_url: str, redis_namespace: str, postgres_url: str) -> None:
    """The worker may still be running the dead bot's attempt when the next bot starts: that one is aborted
    (nobody waits for it), and the batch runs again for the job the database (PostgreSQL) says is running."""
    (tmp_path / "config.yaml").write_text(cluster_yaml(redis_url, redis_namespace, f'database_url: "{postgres_url}"'))
    first = BotProcess(fake, tmp_path, "first", IMAGINE_FAULT_KILL_AFTER="running", IMAGINE_LOG_LEVEL="INFO")
    second = BotProcess(fake, tmp_path, "second", IMAGINE_LOG_LEVEL="INFO")
    worker = WorkerProcess(tmp_path, "only")
    try:
        await start_all(worker, first)
        await fake.wait_commands("imagine")
        handle = await fake.slash("imagine", {"prompt": "outlives its bot --steps 120 --size 128x128 --seed 5"},
                                  user="alice")
        await first.wait_killed()
        await second.start()
        await fake.wait_until(lambda: endings_of(fake, "outlives its bot", handle), what="its ending",
                              timeout=4 * WAIT_S)
    finally:
        await stop_all(second, first, worker)
    endings = endings_of(fake, "outlives its bot", handle)
    assert len(endings) == 1 and is_result(endings[0]), logs(first, second, worker)
    assert worker.done("outlives its bot") == 1, logs(worker)
    fake.pop_failures()  # the killed bot missed Discord's answer window: that is the point


async def log_says(process: BotProcess, text: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while text not in (process.log_path.read_text() if process.log_path.exists() else ""):
            assert process.process is not None and process.process.returncode is None, process.log_path.read_text()
            await asyncio.sleep(0.1)


@pytest.mark.timeout(300)
async def test_a_standby_bot_takes_over_when_the_active_one_is_killed(
        fake: FakeDiscord, tmp_path: Path, redis_url: str, redis_namespace: str, postgres_url: str) -> None:
    """Two bot processes on one database (and data folder): the standby waits without connecting to Discord,
    and once the active one is SIGKILLed it takes over, resuming what was queued and running: every request
    ends once."""
    (tmp_path / "config.yaml").write_text(
        cluster_yaml(redis_url, redis_namespace, f'database_url: "{postgres_url}", standby: true, standby_lease_s: 2'))
    active = BotProcess(fake, tmp_path, "active", IMAGINE_LOG_LEVEL="INFO")
    standby = BotProcess(fake, tmp_path, "standby", IMAGINE_LOG_LEVEL="INFO")
    worker = WorkerProcess(tmp_path, "only")
    requests: list[tuple[str, InteractionHandle]] = []
    try:
        await start_all(worker, active)
        await fake.wait_commands("imagine")
        await standby.start()
        await log_says(standby, "standby: another bot process is active")
        for prompt in ("running at the failover", "queued at the failover"):
            handle = await fake.slash("imagine", {"prompt": f"{prompt} --steps 120 --size 128x128 --seed 5"},
                                      user="alice")
            requests.append((prompt, handle))
        await requests[0][1].wait_original(lambda m: m.content.startswith("Generating"))
        assert fake.identify_count == 1  # the standby has not connected: Discord sees one bot
        assert active.process is not None
        active.process.kill()
        await active.process.wait()
        await fake.wait_until(partial(ended, fake, requests), what="every request to end", timeout=4 * WAIT_S)
        assert fake.identify_count == 2  # the standby connected once it held the lease
    finally:
        await stop_all(standby, active, worker)
    for prompt, handle in requests:
        endings = endings_of(fake, prompt, handle)
        assert len(endings) == 1 and is_result(endings[0]), (prompt, logs(active, standby, worker))
    fake.pop_failures()


def two_servers() -> list[FakeGuild]:
    quiet = FakeUser("dana")
    return [*world(), FakeGuild("Quiet Corner", channels=[FakeChannel("art", position=0)],
                                owner_id=FakeUser("oscar").id, members=[FakeMember(quiet)])]


@pytest_asyncio.fixture
async def fake_two(clock: FrozenClock) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(guilds=two_servers(), default_timeout=WAIT_S, clock=clock) as started:
        with started.patch_discord():
            yield started
    started.assert_no_failures()


def job_times(data_dir: Path) -> dict[str, tuple[str, str]]:
    """prompt -> (created_at, started_at) as the bot stored them."""
    with sqlite3.connect(data_dir / "imagine.db") as db:
        rows = db.execute("SELECT request, created_at, started_at FROM jobs").fetchall()
    return {json.loads(request)["prompt"]: (created, started) for request, created, started in rows}


@pytest.mark.timeout(300)
async def test_a_light_server_waits_at_most_one_batch_behind_a_flooding_one(fake_two: FakeDiscord, tmp_path: Path,
                                                                            redis_url: str,
                                                                            redis_namespace: str) -> None:
    fake = fake_two
    (tmp_path / "config.yaml").write_text(cluster_yaml(redis_url, redis_namespace))
    bot = BotProcess(fake, tmp_path, "bot")
    workers = [WorkerProcess(tmp_path, name) for name in ("one", "two")]
    requests: list[tuple[str, InteractionHandle]] = []
    try:
        await start_all(*workers, bot)
        await fake.wait_commands("imagine")
        for number in range(8):
            prompt = f"flood {number}"
            handle = await fake.slash("imagine", {"prompt": f"{prompt} --steps 40 --seed 5"},
                                      user=("alice", "bob", "carol")[number % 3], guild="Art Club")
            requests.append((prompt, handle))
        running: Callable[[], bool] = lambda: sum(  # noqa: E731
            any(m.content.startswith(("Starting", "Generating")) for m in h.messages) for _, h in requests) >= 2
        await fake.wait_until(running, what="both workers busy with the flood")
        light = await fake.slash("imagine", {"prompt": "light one --steps 10 --seed 5"}, user="dana",
                                 guild="Quiet Corner")
        requests.append(("light one", light))
        await fake.wait_until(partial(ended, fake, requests), what="every request to end", timeout=4 * WAIT_S)
    finally:
        await stop_all(bot, *workers)
    assert all(len(endings_of(fake, p, h)) == 1 and is_result(endings_of(fake, p, h)[0]) for p, h in requests)
    times = job_times(tmp_path / "data")
    created, started = times["light one"]
    overtaking = [prompt for prompt, (_, flood_started) in times.items()
                  if prompt.startswith("flood") and created < flood_started < started]
    waiting = [prompt for prompt, (_, flood_started) in times.items()
               if prompt.startswith("flood") and flood_started > created]
    assert len(waiting) >= 3, times  # the flood still queued when the light request came (else this proves nothing)
    assert len(overtaking) <= 1, (overtaking, times)  # in arrival order, all of those would have run first


@pytest.mark.timeout(300)
async def test_redis_lost_and_restarted_refuses_new_requests_then_recovers(fake: FakeDiscord, tmp_path: Path,
                                                                           own_redis: OwnRedis) -> None:
    await own_redis.start()
    (tmp_path / "config.yaml").write_text(cluster_yaml(own_redis.url, "restart"))
    bot = BotProcess(fake, tmp_path, "bot", IMAGINE_LOG_LEVEL="INFO")
    worker = WorkerProcess(tmp_path, "only")
    requests: list[tuple[str, InteractionHandle]] = []
    refusal = None
    try:
        await start_all(worker, bot)
        await fake.wait_commands("imagine")
        long = await fake.slash("imagine", {"prompt": "through the outage --steps 40 --seed 5"}, user="alice")
        requests.append(("through the outage", long))
        await long.wait_original(lambda m: m.content.startswith("Generating"))
        await own_redis.stop()  # an in-memory Redis: everything in it is lost
        for number in range(200):  # until the bot has noticed: earlier probes are queued and must end too
            probe = await fake.slash("imagine", {"prompt": f"probe {number} --seed 5"}, user="bob")
            reply = await probe.wait_original(lambda message: bool(message.content))
            if reply.ephemeral:
                refusal = reply
                break
            requests.append((f"probe {number}", probe))
            await asyncio.sleep(0.2)
        await own_redis.start()  # the same port, empty
        for number in range(200):  # until the bot has noticed it is back: a refusal until then is an ending too
            after = await fake.slash("imagine", {"prompt": f"after the restart {number} --seed 5"}, user="carol")
            if not (await after.wait_original(lambda message: bool(message.content))).ephemeral:
                requests.append((f"after the restart {number}", after))
                break
            await asyncio.sleep(0.2)
        await fake.wait_until(partial(ended, fake, requests), what="every request to end", timeout=4 * WAIT_S)
    finally:
        await stop_all(bot, worker)
    assert refusal is not None and WORKERS_UNREACHABLE_TEXT in refusal.content, logs(bot)
    assert requests[-1][0].startswith("after the restart"), logs(bot)  # it took new requests again by itself
    for prompt, handle in requests:
        endings = endings_of(fake, prompt, handle)
        assert len(endings) == 1 and is_result(endings[0]), (prompt, [m.content for m in endings], logs(bot, worker))
    assert worker.done("through the outage") >= 1
    fake.pop_failures()


def test_the_worker_says_what_is_wrong_with_its_arguments(tmp_path: Path) -> None:
    import subprocess

    env = {**os.environ, "IMAGINE_CONFIG": str(tmp_path / "none.yaml")}
    (tmp_path / "none.yaml").write_text("models: {default: tiny, tiny: {source: 'builtin:tiny'}}\n")
    run = partial(subprocess.run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=WAIT_S, check=False)
    no_redis = run([sys.executable, "-m", "generation.worker"])
    assert no_redis.returncode == 2 and "pass --redis redis://host:port/db" in no_redis.stderr
    unknown = run([sys.executable, "-m", "generation.worker", "--redis", "redis://127.0.0.1:1/0", "--models", "sdxl"])
    assert unknown.returncode == 2 and "unknown model 'sdxl'" in unknown.stderr
    device = run([sys.executable, "-m", "generation.worker", "--redis", "redis://127.0.0.1:1/0", "--device", "gpu0"])
    assert device.returncode == 2 and "--device 'gpu0' is unknown; allowed: auto, cpu, mps, cuda" in device.stderr
    threads = run([sys.executable, "-m", "generation.worker", "--redis", "redis://127.0.0.1:1/0", "--threads", "0"])
    assert threads.returncode == 2 and threads.stderr.startswith("imagine worker: --threads: ")
