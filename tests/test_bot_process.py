"""``python -m bot`` as a user runs it: against the fake Discord, with the tiny model, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.bot_harness import WAIT_S, decode, is_result
from tests.fake_discord import FakeDiscord

ROOT = Path(__file__).resolve().parents[1]
SMALL_CONFIG = """\
models:
  default: tiny
  tiny: {source: "builtin:tiny", default_steps: 2, default_width: 64, default_height: 64}
executor: {device: cpu, preview_every_steps: 0}
scheduler: {batch_window_ms: 0}
"""


def bot_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DISCORD_", "IMAGINE_"))}
    config = tmp_path / "config.yaml"
    if not config.exists():
        config.write_text(SMALL_CONFIG)
    env.update(IMAGINE_MODEL="builtin:tiny", IMAGINE_DATA_DIR=str(tmp_path / "data"), IMAGINE_CONFIG=str(config),
               IMAGINE_LOG_LEVEL="ERROR")
    env.update(extra)
    return env


@asynccontextmanager
async def bot_process(env: dict[str, str], log_path: Path, *args: str,
                      cwd: Path = ROOT) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m bot`` as an admin runs it, its output in ``log_path`` (a file, not a pipe: a full pipe would
    stall the bot). A block that leaves it running (a failed assertion) has it killed."""
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", *args, cwd=cwd, env=env,
                                                       stdout=log, stderr=log)
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def until_synced(fake: FakeDiscord, process: asyncio.subprocess.Process, log_path: Path,
                       *commands: str) -> None:
    """Wait until the bot process has synced ``commands``; fail with its log if it exits first."""
    synced = asyncio.ensure_future(fake.wait_commands(*commands))
    exited = asyncio.ensure_future(process.wait())
    await asyncio.wait({synced, exited}, return_when=asyncio.FIRST_COMPLETED)
    exited.cancel()
    if not synced.done():
        synced.cancel()
        raise AssertionError(f"the bot exited early: {await asyncio.to_thread(log_path.read_text)}")
    synced.result()


async def stop(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, as a service manager stops the bot; its exit code."""
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), WAIT_S)


def run_bot_briefly(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """For start-up failures that need no Discord: they exit on their own, at once."""
    return subprocess.run([sys.executable, "-m", "bot"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=WAIT_S, check=False)


async def test_python_m_bot_serves_imagine_and_exits_cleanly_on_sigterm(fake: FakeDiscord, tmp_path: Path) -> None:
    log_path = tmp_path / "bot.log"
    async with bot_process(bot_env(tmp_path, **fake.env), log_path) as process:
        await until_synced(fake, process, log_path, "imagine", "queue", "help")
        handle = await fake.slash("imagine", {"prompt": "a fox from a subprocess --seed 11"}, user="alice")
        result = await handle.wait_original(is_result)
        assert "Seed 11 ·" in result.content and decode(result).size == (64, 64)
        code = await stop(process)
    assert code == 0, (tmp_path / "bot.log").read_text()
    assert (tmp_path / "data" / "imagine.db").exists()


def test_without_a_token_it_says_what_to_do_and_exits_2(tmp_path: Path) -> None:
    done = run_bot_briefly(bot_env(tmp_path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISCORD_TOKEN is not set" in lines[0]


def test_an_invalid_config_names_the_key_and_line_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(SMALL_CONFIG + "limits:\n  max_queued_per_user: -3\n")
    done = run_bot_briefly(bot_env(tmp_path, DISCORD_TOKEN="anything"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "limits.max_queued_per_user" in lines[0] and "line 7" in lines[0]


@pytest.mark.parametrize("token", ["not-the-bot-token"])
async def test_a_rejected_token_exits_2_with_one_clear_line(fake: FakeDiscord, tmp_path: Path, token: str) -> None:
    env = bot_env(tmp_path, **{**fake.env, "DISCORD_TOKEN": token})
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", cwd=ROOT, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), WAIT_S)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "Discord rejected DISCORD_TOKEN" in lines[0], lines
    assert [failure for failure in fake.pop_failures() if "wrong bot token" not in failure] == []


def closed_port() -> int:
    """A local port nobody listens on (bound and released: connecting to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unreachable_env(tmp_path: Path, config: str = "") -> dict[str, str]:
    (tmp_path / "config.yaml").write_text(SMALL_CONFIG + config)
    port = closed_port()
    return bot_env(tmp_path, DISCORD_TOKEN="anything", DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10",
                   DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{port}/gateway")


def test_unreachable_discord_with_the_exit_flag_exits_3_with_one_line(tmp_path: Path) -> None:
    """README: "with `--exit-on-connect-failure` ... it exits with code 3 after that line instead"."""
    env = unreachable_env(tmp_path)
    host = env["DISCORD_API_BASE"].split("/")[2]
    done = subprocess.run([sys.executable, "-m", "bot", "--exit-on-connect-failure"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"imagine: cannot reach Discord at {host} (Connection refused); exiting "
                     "(exit_on_connect_failure)"]
    assert not (tmp_path / "data").exists()  # it stopped before opening the database


def test_the_exit_can_be_chosen_in_the_config_file_too(tmp_path: Path) -> None:
    done = run_bot_briefly(unreachable_env(tmp_path, "discord: {exit_on_connect_failure: true}\n"))
    assert done.returncode == 3 and len(done.stderr.strip().splitlines()) == 1, done.stderr


async def test_unreachable_discord_is_tried_again_with_a_line_per_try(tmp_path: Path) -> None:
    """README: "the bot prints one line naming the host and the error and tries again" (waiting 0.1 s, then
    0.2 s here; 5 s doubling up to 5 min by default)."""
    env = unreachable_env(tmp_path, "discord: {connect_retry_s: 0.1}\n")
    host = env["DISCORD_API_BASE"].split("/")[2]
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", cwd=ROOT, env=env,
                                                   stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    try:
        first = (await asyncio.wait_for(process.stderr.readline(), WAIT_S)).decode()
        second = (await asyncio.wait_for(process.stderr.readline(), WAIT_S)).decode()
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), WAIT_S)
    assert first == f"imagine: cannot reach Discord at {host} (Connection refused); retrying in 0.1 s\n"
    assert second == f"imagine: cannot reach Discord at {host} (Connection refused); retrying in 0.2 s\n"


async def test_the_wait_between_tries_doubles_up_to_its_cap() -> None:
    """The backoff: 5 s doubling to at most 5 min, as config.yaml's defaults say (no real waiting here)."""
    from bot.core.config import DiscordConfig
    from bot.discord_ui.endpoints import wait_until_reachable

    class Enough(Exception):
        pass

    waits: list[float] = []
    said: list[str] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 9:
            raise Enough

    defaults = DiscordConfig()
    port = closed_port()
    with pytest.raises(Enough):
        await wait_until_reachable("127.0.0.1", port, say=said.append, retry_s=defaults.connect_retry_s,
                                   retry_max_s=defaults.connect_retry_max_s, sleep=sleep)
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert said[-1] == f"cannot reach Discord at 127.0.0.1:{port} (Connection refused); retrying in 5 min"


@pytest.mark.parametrize(("error", "said"), [
    (socket.gaierror(-2, "Name or service not known"), "name lookup failed: Name or service not known"),
    (TimeoutError(), "no answer within 10 s"),
    (OSError(101, "Network is unreachable"), "Network is unreachable"),
])
async def test_the_line_names_why_discord_cannot_be_reached(monkeypatch: pytest.MonkeyPatch, error: OSError,
                                                            said: str) -> None:
    """A failed name lookup (no DNS), a silent firewall and no route each read as what they are."""
    from bot.discord_ui import endpoints

    async def fail(host: str, port: int) -> None:
        raise error

    monkeypatch.setattr(endpoints.asyncio, "open_connection", fail)
    lines: list[str] = []
    assert not await endpoints.wait_until_reachable("discord.com", 443, say=lines.append, retry_s=5,
                                                    retry_max_s=300, give_up=True)
    assert lines == [f"cannot reach Discord at discord.com:443 ({said}); exiting (exit_on_connect_failure)"]
