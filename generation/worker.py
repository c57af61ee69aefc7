"""``python -m generation.worker --redis URL [--device cuda:0] [--models a,b] [--config PATH] [--threads N]``:
one GPU worker process for a bot with ``executor.mode: redis`` (see ``generation.remote.worker``).

The config is ``--config``, else ``IMAGINE_CONFIG``, else ``./config.yaml`` when present (as the bot reads it),
else the built-in defaults; ``IMAGINE_MODEL`` overrides its default model as it does the bot's. ``--redis`` is
needed unless the config has ``executor.redis_url``; the namespace must be the bot's (``executor.redis_namespace``).
While Redis cannot be reached at start-up it prints one line per try and tries again, waiting longer each time.

Exit codes: 0 drained after SIGTERM/SIGINT; 2 bad arguments or config, or no model it serves can be loaded.
``IMAGINE_WORKER_KILL_AT_STEP=N`` (tests only; inert without it) makes the worker SIGKILL itself at step N
of its first batch, as a crashed GPU host would vanish.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError
from redis.exceptions import RedisError

from generation.config import DEVICE_PATTERN, GenerationConfig, load_generation_config
from generation.errors import ConfigError, ModelLoadError
from generation.remote.keys import connect, where
from generation.remote.wire import names

EXIT_BAD_INPUT = 2
KILL_AT_STEP_ENV = "IMAGINE_WORKER_KILL_AT_STEP"
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see --help)\n")


_OPTIONS = {"--redis": "redis_url", "--device": "device", "--threads": "threads", "--namespace": "redis_namespace",
            "--heartbeat": "heartbeat_s", "--shared-dir": "shared_dir"}  # command line -> executor key


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m generation.worker",
                     description="Run one GPU worker for a bot whose executor.mode is redis.")
    parser.add_argument("--redis", help="redis://host:port/db (default: the config's executor.redis_url)")
    parser.add_argument("--device", help="auto, cpu, mps, cuda or cuda:N (default: the config's executor.device)")
    parser.add_argument("--models", help="comma-separated model names this worker serves and loads at start "
                        "(default: any model, loading the default one)")
    parser.add_argument("--config", type=Path,
                        help="config.yaml (default: env IMAGINE_CONFIG, else ./config.yaml, else built-in)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the config's executor.threads)")
    parser.add_argument("--namespace", help="Redis key namespace (default: the config's executor.redis_namespace)")
    parser.add_argument("--heartbeat", type=float, help="seconds between heartbeats (default: executor.heartbeat_s)")
    parser.add_argument("--shared-dir", type=Path, help="folder shared with the bot for large results "
                        "(default: executor.shared_dir)")
    return parser


def _say(message: str) -> None:
    print(f"imagine worker: {message}", file=sys.stderr, flush=True)


def load_config(args: argparse.Namespace) -> GenerationConfig:
    """The config file's generation sections with the command line's overrides (raises ConfigError)."""
    path = args.config or (Path(os.environ["IMAGINE_CONFIG"]) if os.environ.get("IMAGINE_CONFIG") else None)
    if path is None and Path("config.yaml").is_file():
        path = Path("config.yaml")
    config = load_generation_config(path)
    env_model = os.environ.get("IMAGINE_MODEL")
    if env_model:
        config = config.with_default_model(env_model)
    update: dict[str, object] = {}
    if args.device is not None:
        if not re.fullmatch(DEVICE_PATTERN, args.device):
            raise ConfigError(f"--device {args.device!r} is unknown; allowed: auto, cpu, mps, cuda or cuda:N "
                              "(N: the GPU's index)")
        update["device"] = args.device
    for option, key in (("threads", "threads"), ("namespace", "redis_namespace"), ("heartbeat", "heartbeat_s")):
        if getattr(args, option) is not None:
            update[key] = getattr(args, option)
    if args.shared_dir is not None:
        update["shared_dir"] = str(args.shared_dir.resolve())
    if args.redis is not None:
        update["redis_url"] = args.redis
    if update:  # validated like the file: a bad value is named with what is allowed
        try:
            executor = type(config.executor).model_validate({**config.executor.model_dump(), **update})
        except ValidationError as exc:
            problem = exc.errors()[0]
            key = str(problem["loc"][0]) if problem["loc"] else ""
            option = next((flag for flag, name in _OPTIONS.items() if name == key), f"executor.{key}")
            raise ConfigError(f"{option}: {problem['msg']}".replace("Value error, ", "")) from exc
        config = config.model_copy(update={"executor": executor})
    if not config.executor.redis_url:
        raise ConfigError("no Redis to take batches from: pass --redis redis://host:port/db "
                          "(or set executor.redis_url in the config)")
    return config


async def wait_for_redis(url: str) -> None:
    """Return once Redis answers PING, printing one line per failed try (backoff 1 s doubling to 30 s)."""
    wait = RETRY_FIRST_S
    while True:
        client = connect(url)
        try:
            await client.ping()
            return
        except (RedisError, OSError) as exc:
            _say(f"cannot reach Redis at {where(url)} ({exc}); retrying in {wait:g} s")
        finally:
            await client.aclose()
        await asyncio.sleep(wait)
        wait = min(RETRY_MAX_S, wait * 2)


async def _run(config: GenerationConfig, models: tuple[str, ...]) -> None:
    from generation.devices import choose_device
    from generation.executor import GpuExecutor
    from generation.remote.worker import GpuWorker, WorkerSettings, with_models
    from generation.runner import Runner

    executor = config.executor
    assert executor.redis_url is not None
    kill_at = os.environ.get(KILL_AT_STEP_ENV)
    settings = with_models(WorkerSettings.from_config(config, kill_at_step=int(kill_at) if kill_at else None),
                           config, models)
    device = choose_device(executor.device)
    await wait_for_redis(executor.redis_url)
    runner = Runner(config)
    gpu = GpuExecutor(runner, name=device)
    redis = connect(executor.redis_url)
    worker = GpuWorker(gpu, config, settings, device=device, loaded_models=runner.loaded_models,
                       free_vram=_free_vram(device))
    try:
        await worker.serve(redis)
    finally:
        await gpu.close()
        await redis.aclose()


def _free_vram(device: str) -> Callable[[], int | None]:
    """Bytes free on a CUDA device, for the heartbeat; None elsewhere."""
    import torch

    def free() -> int | None:
        if not device.startswith("cuda") or not torch.cuda.is_available():
            return None
        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        return int(torch.cuda.mem_get_info(index)[0])

    return free


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("IMAGINE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args)
        models = names(args.models)
        for model in models:
            config.model(model)  # an unknown or disabled name fails here, naming what is configured
        asyncio.run(_run(config, models))
    except (ConfigError, ModelLoadError) as exc:
        _say(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
