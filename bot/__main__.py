"""``python -m bot [--config PATH]``: the composition root. Config, storage, the executor and the
services are built here, in one place, and handed to ``ImagineBot`` (sharded when ``discord.shards`` says so:
``bot/sharding.py``); nothing else builds them.

Bad set-up (no token, a rejected token, an invalid config, too many servers for one unsharded connection)
prints one line saying what to do and exits with code 2; SIGINT/SIGTERM drain the queue and close cleanly.
When Discord cannot be reached (connection refused, a failed name lookup) it prints one line naming the host
and the error per try and tries again with exponential backoff (``discord.connect_retry_s`` doubling up to
``connect_retry_max_s``), or, with ``--exit-on-connect-failure`` (``discord.exit_on_connect_failure``), exits
with code 3 at once so that a supervisor decides when to restart it. With ``bot.standby`` it first waits to
hold the active process's lease in Redis (``bot/standby.py``), and exits with code 4 after stepping down when
it loses it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import aiohttp
import discord

from bot.app import ImagineBot
from bot.bucket_mirror import RedisBucketMirror
from bot.core.config_store import ConfigStore
from bot.core.faults import Checkpoints
from bot.discord_ui.endpoints import api_address, point_discord_at, wait_until_reachable
from bot.observability.logs import TEXT_FORMAT, use_format
from bot.services import build_services
from bot.sharding import build_bot
from bot.standby import EXIT_STEPPED_DOWN, Standby
from bot.storage import Storage
from generation.errors import ConfigError
from generation.interface import Executor
from generation.paths import folder_of

_log = logging.getLogger("bot")
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
SHARDING_REQUIRED = 4011  # the gateway's close code for a connection that would hold too many servers
TOKEN_HELP = (
    "DISCORD_TOKEN is not set. Create an application at https://discord.com/developers/applications, "
    "add a bot, copy its token, then run: DISCORD_TOKEN=<token> make run"
)


def _program() -> str:
    """The name the admin typed: ``imagine-bot`` (the console script) or ``python -m bot``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name and name != "__main__.py" else "python -m bot"


def _say(message: str) -> None:
    print(f"imagine: {message}", file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    _say(message)
    return EXIT_USAGE


def _config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    if os.environ.get("IMAGINE_CONFIG"):
        return Path(os.environ["IMAGINE_CONFIG"])
    default = Path("config.yaml")
    return default if default.exists() else None


def data_dir(config_path: Path | None) -> Path:
    """Where the database and images live: ``IMAGINE_DATA_DIR`` (relative to the current directory, like any
    path given on a command line), else ``data/`` beside the config file, so that a service started from ``/``
    and ``make run`` in the project folder use the same data; without a config file, ``./data``."""
    if os.environ.get("IMAGINE_DATA_DIR"):
        return Path(os.path.abspath(os.environ["IMAGINE_DATA_DIR"]))
    return (folder_of(config_path) if config_path is not None else Path.cwd()) / "data"


async def _serve(bot: ImagineBot, token: str, standby: Standby | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # a signal while waiting as a standby: exit without ever starting
    started = standby is None
    closing: list[asyncio.Future[None]] = []  # held: the loop keeps only weak references to tasks

    def on_signal() -> None:
        stop.set()
        if started:
            closing.append(asyncio.ensure_future(bot.close()))

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal)
    holding: asyncio.Task[None] | None = None
    if standby is not None:
        if not await standby.wait_until_active(stop):
            await standby.release()
            return 0
        holding = asyncio.create_task(standby.hold(bot.close), name="imagine-standby-lease")
        started = True
    try:
        async with bot:
            await bot.start(token)
        # discord.py's exit waits for its own close only; wait for ours too (storage closes last), or
        # asyncio.run cancels it half way and the log ends with a traceback from the database pool.
        await bot.close()
    finally:
        if holding is not None and standby is not None:
            holding.cancel()
            await asyncio.gather(holding, return_exceptions=True)
            await standby.release()  # after the drain: a standby takes over with everything stored
    return EXIT_STEPPED_DOWN if standby is not None and standby.stepped_down else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=_program(), description="Run the /imagine Discord bot.")
    parser.add_argument("--config", help="config file (default: $IMAGINE_CONFIG, else ./config.yaml)")
    parser.add_argument("--exit-on-connect-failure", action="store_true",
                        help="exit with code 3 when Discord cannot be reached at start-up, instead of retrying "
                             "(also discord.exit_on_connect_failure)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("IMAGINE_LOG_LEVEL", "INFO"), format=TEXT_FORMAT)
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        return _fail(TOKEN_HELP)
    try:
        checkpoints = Checkpoints.from_env()
    except ValueError as exc:
        return _fail(str(exc))
    path = _config_path(args.config)
    try:
        store = ConfigStore(path, model_override=os.environ.get("IMAGINE_MODEL") or None)
    except ConfigError as exc:
        return _fail(str(exc))
    config = store.current
    use_format(config.observability.log_format)  # json: one object per line from here on (read at start-up)
    api_base = os.environ.get("DISCORD_API_BASE") or config.discord.api_base
    point_discord_at(api_base, os.environ.get("DISCORD_GATEWAY_URL") or config.discord.gateway_url)
    give_up = args.exit_on_connect_failure or config.discord.exit_on_connect_failure
    host, port = api_address(api_base)
    try:  # before anything heavy is built: the model, the database
        reachable = asyncio.run(wait_until_reachable(
            host, port, say=_say, retry_s=config.discord.connect_retry_s,
            retry_max_s=config.discord.connect_retry_max_s, give_up=give_up))
    except KeyboardInterrupt:
        return 0
    if not reachable:
        return EXIT_UNREACHABLE
    executor: Executor
    if config.generation.executor.mode == "redis":
        # GPU workers (python -m generation.worker) over Redis: torch is never imported in this process.
        from generation.remote.executor import RemoteExecutor

        executor = RemoteExecutor.from_config(config.generation)
    else:
        # The local GPU executor: the one place in bot/ that reaches past generation's torch-free interface
        # (an import contract allows exactly this import).
        from generation.executor import GpuExecutor

        executor = GpuExecutor.from_config(config.generation)
    # With Redis configured (workers, a standby), token buckets are mirrored there and survive a restart.
    buckets = RedisBucketMirror.from_config(config.generation.executor)
    services = build_services(store, Storage(data_dir(path), config.bot.database_url), executor,
                              checkpoints=checkpoints, buckets=buckets)
    bot = build_bot(services)  # discord.shards: one connection, or discord.py's AutoShardedClient
    standby = None
    if config.bot.standby:
        if not config.generation.executor.redis_url:
            return _fail("bot.standby needs executor.redis_url: the active bot process is elected in Redis")
        standby = Standby.from_url(config.generation.executor.redis_url, config.generation.executor.redis_namespace,
                                   config.bot.standby_lease_s, say=_say)
    try:
        return asyncio.run(_serve(bot, token, standby))
    except discord.LoginFailure:
        return _fail("Discord rejected DISCORD_TOKEN; copy the bot token again from the developer portal")
    except discord.PrivilegedIntentsRequired:
        return _fail("Discord refused the requested intents; this bot needs no privileged intents")
    except discord.ConnectionClosed as exc:
        if exc.code != SHARDING_REQUIRED:
            raise
        return _fail("Discord requires sharding: a gateway connection may hold at most 2,500 servers; set "
                     "discord.shards: auto in the config (or a larger number of shards)")
    except (OSError, aiohttp.ClientError) as exc:  # reachable a moment ago, gone while logging in
        _say(f"lost the connection to Discord at {host}:{port} while logging in ({exc}); exiting")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
