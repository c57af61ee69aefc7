"""Shared test set-up. Generation fixtures import torch lazily so tests that never use them stay light."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import settings

# The fake Discord's fixtures, the bot harness's, the storage backends (SQLite and PostgreSQL), and Redis.
pytest_plugins = ["tests.fake_discord.fixtures", "tests.bot_harness", "tests.storage_backends", "tests.redis_backend"]

# Tests never touch the network: any hub access must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# One torch thread: the tiny model gains nothing from two, and OpenMP's spinning threads slow down
# ten-fold when another process shares this machine's cores. Must be set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")


# No per-example deadline anywhere: a loaded 2-core CI machine must not turn a slow example into a
# failure. Every property test runs under this profile (HYPOTHESIS_PROFILE can pick another).
settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_sessionstart(session: pytest.Session) -> None:
    """One line at the start (also under -q) when the fake Discord cannot check requests against the spec."""
    from tests.fake_discord.validation import spec_status_line

    line = spec_status_line()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if line is not None and reporter is not None:
        reporter.write_line(line)


@pytest.fixture
def tiny_config() -> Any:
    """Only builtin:tiny, small batches, a preview every 2 steps."""
    from generation.config import ExecutorConfig, GenerationConfig

    return GenerationConfig(executor=ExecutorConfig(device="cpu", max_batch_images=4, preview_every_steps=2))


@pytest.fixture
def make_request(tiny_config: Any) -> Callable[..., Any]:
    """A validated request for the tiny model: ``make_request("a fox", seed=3, count=2)``."""
    from generation.request import GenerationRequest, validate

    def make(prompt: str = "a red fox in snow", **fields: Any) -> Any:
        fields.setdefault("seed", 1)
        name, model = tiny_config.model(fields.pop("model", None))
        return validate(GenerationRequest(prompt=prompt, **fields), name, model)

    return make


@pytest.fixture
def runner(tiny_config: Any) -> Any:
    from generation.runner import Runner

    return Runner(tiny_config)


@pytest.fixture
async def executor(tiny_config: Any) -> AsyncIterator[Any]:
    from generation.executor import GpuExecutor

    gpu = GpuExecutor.from_config(tiny_config)
    yield gpu
    await gpu.close(cancel_running=True)
