"""Throughput of the cluster: the same work on two GPU workers against one (goal: ≥ 1.7×), and the bot's own
dispatch limit with instant fake workers.

    python -m bench.cluster                      # tiny model on the CPU, one torch thread per worker
    python -m bench.cluster --jobs 32 --steps 20 --size 128
    python -m bench.cluster --dispatch-only      # jobs/s the bot can hand out (fake workers, no torch)

Workers are real ``python -m generation.worker`` processes (``--threads 1``) on the Redis at
``IMAGINE_TEST_REDIS_URL`` (default redis://127.0.0.1:6379/0), each run in a namespace of its own. The bot's
side is the real ``RemoteExecutor``: every job is one batch (``max_batch_images`` 1), all are handed in at
once, and each waits for a free worker, as the scheduler's pull-based dispatch does. The worker count is
alternated over rounds (1, 2, 2, 1, ...) so that drift hits both equally; the ratio is of median throughputs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from generation.config import ExecutorConfig, GenerationConfig, ModelConfig
from generation.remote.executor import RemoteExecutor
from generation.request import GenerationRequest, GenerationResult, validate
from tests.redis_backend import delete_namespace

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("IMAGINE_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"


def config_text(redis_url: str, namespace: str, size: int) -> str:
    return f"""\
models:
  default: tiny
  tiny: {{source: "builtin:tiny", default_steps: 4, max_steps: 200, default_width: {size}, default_height: {size}}}
executor: {{device: cpu, preview_every_steps: 0, max_batch_images: 1, mode: redis, redis_url: "{redis_url}",
            redis_namespace: {namespace}, heartbeat_s: 0.25}}
"""


def generation_config(redis_url: str, namespace: str, size: int) -> GenerationConfig:
    tiny = ModelConfig(source="builtin:tiny", default_steps=4, max_steps=200, default_width=size, default_height=size)
    return GenerationConfig(default_model="tiny", models={"tiny": tiny},
                            executor=ExecutorConfig(device="cpu", preview_every_steps=0, max_batch_images=1,
                                                    mode="redis", redis_url=redis_url, redis_namespace=namespace,
                                                    heartbeat_s=0.25))


def work(config: GenerationConfig, jobs: int, steps: int) -> list[GenerationRequest]:
    name, model = config.model(None)
    return [validate(GenerationRequest(f"bench {number}", steps=steps, seed=number), name, model)
            for number in range(jobs)]


async def start_workers(count: int, config_path: Path, folder: Path) -> list[asyncio.subprocess.Process]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "IMAGINE_LOG_LEVEL": "WARNING"}
    env.pop("IMAGINE_MODEL", None)
    processes = []
    for number in range(count):
        with (folder / f"worker-{number}.log").open("w") as log:
            processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "generation.worker", "--config", str(config_path), "--threads", "1", cwd=ROOT,
                env=env, stdout=log, stderr=log))
    return processes


async def forget_namespace(namespace: str) -> None:
    """Delete a round's keys, as the Redis tests delete theirs."""
    await delete_namespace(REDIS_URL, namespace)


async def stop_workers(processes: Sequence[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.terminate()
    for process in processes:
        await process.wait()


def cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used (Linux), to tell a slow cluster from a machine busy with other work."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_round(workers: int, jobs: int, steps: int, size: int, folder: Path) -> tuple[float, float | None]:
    """Jobs per second with ``workers`` workers (their start-up and warm-up not counted), and the cores the
    workers used on average meanwhile (None where /proc is missing)."""
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    config = generation_config(REDIS_URL, namespace, size)
    config_path = folder / f"{namespace}.yaml"
    config_path.write_text(config_text(REDIS_URL, namespace, size))
    processes = await start_workers(workers, config_path, folder)
    executor = RemoteExecutor.from_config(config)
    try:
        await executor.start()
        async with asyncio.timeout(300):
            while len(executor.pool.workers()) < workers:
                await executor.pool.changed()
        await asyncio.gather(*(executor.run([request]) for request in work(config, workers, steps)))  # warm
        batch = work(config, jobs, steps)
        before = [cpu_seconds(process.pid) for process in processes]
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(executor.run([request]) for request in batch))
        elapsed = time.perf_counter() - started
        after = [cpu_seconds(process.pid) for process in processes]
        assert all(isinstance(outcome[0], GenerationResult) for outcome in outcomes), outcomes
        used = [b - a for a, b in zip(before, after, strict=True) if a is not None and b is not None]
        return jobs / elapsed, sum(used) / elapsed if len(used) == workers else None
    finally:
        await executor.close()
        await stop_workers(processes)
        await forget_namespace(namespace)


async def cluster(rounds: int, jobs: int, steps: int, size: int) -> None:
    results: dict[int, list[float]] = {1: [], 2: []}
    cores: dict[int, list[float]] = {1: [], 2: []}
    print(f"load average before: {' '.join(f'{value:.2f}' for value in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as folder:
        for number in range(rounds):
            for workers in ((1, 2) if number % 2 == 0 else (2, 1)):
                rate, used = await one_round(workers, jobs, steps, size, Path(folder))
                results[workers].append(rate)
                if used is not None:
                    cores[workers].append(used)
                note = "" if used is None else f", workers used {used:.2f} cores"
                print(f"round {number + 1}: {workers} worker(s): {rate:.3f} jobs/s{note}", flush=True)
    one, two = statistics.median(results[1]), statistics.median(results[2])
    print(f"{jobs} jobs of {size}x{size}, {steps} steps, tiny model, one torch thread per worker, {rounds} rounds")
    print(f"one worker: median {one:.3f} jobs/s; two workers: median {two:.3f} jobs/s")
    print(f"ratio two/one: {two / one:.2f} (goal >= 1.7)")
    if cores[1] and cores[2]:
        # Each worker has one thread: it can use one core. Less means the machine gave it less (other work).
        one_used, two_used = statistics.median(cores[1]), statistics.median(cores[2])
        print(f"cores the workers got: {one_used:.2f} of 1 (one worker), {two_used:.2f} of 2 (two workers); "
              f"ratio of cores {two_used / one_used:.2f}, jobs per core-second {one / one_used:.3f} and "
              f"{two / two_used:.3f}")
    print(f"load average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")


async def dispatch_only(jobs: int, workers: int) -> None:
    """The bot's dispatch limit: in-process workers whose 'GPU' answers at once, so only the hand-over counts."""
    from bench.fake_workers import start_fake_workers

    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    config = generation_config(REDIS_URL, namespace, 64)
    executor = RemoteExecutor.from_config(config)
    fakes = await start_fake_workers(config, workers)
    try:
        await executor.start()
        async with asyncio.timeout(60):
            while len(executor.pool.workers()) < workers:
                await executor.pool.changed()
        batch = work(config, jobs, 2)
        started = time.perf_counter()
        await asyncio.gather(*(executor.run([request]) for request in batch))
        elapsed = time.perf_counter() - started
    finally:
        await executor.close()
        await fakes.stop()
        await forget_namespace(namespace)
    print(f"dispatch limit: {jobs} one-job batches over {workers} instant fake workers in {elapsed:.2f} s: "
          f"{jobs / elapsed:.1f} jobs/s ({elapsed / jobs * 1000:.1f} ms per job, bot and workers in one process)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dispatch-only", action="store_true", help="measure the bot's dispatch limit")
    parser.add_argument("--fake-workers", type=int, default=8)
    args = parser.parse_args()
    if args.dispatch_only:
        asyncio.run(dispatch_only(args.jobs * 10, args.fake_workers))
    else:
        asyncio.run(cluster(args.rounds, args.jobs, args.steps, args.size))


if __name__ == "__main__":
    main()
