"""Readiness: the parts that must work for the bot to serve requests, each checked by a probe.

A probe answers ``Health``: whether its part works, and one line saying how it stands (shown in ``/readyz``'s
JSON body, so whoever watches it sees which part failed and why). ``/healthz`` checks nothing: it answers as
long as the process (its event loop) does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot.scheduler.warmup import ModelWarmup, progress_line
from bot.storage import Storage

PROBE_TIMEOUT_S = 5.0  # a part that does not answer within this is not ready (a database stuck on a lock)


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


@dataclass(frozen=True)
class ReadinessCheck:
    name: str
    probe: Callable[[], Awaitable[Health]]


async def check_all(checks: Sequence[ReadinessCheck], timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Health]:
    """Every check's answer, run side by side; a probe that raises or outlasts ``timeout_s`` fails its part."""
    async def one(check: ReadinessCheck) -> Health:
        try:
            return await asyncio.wait_for(check.probe(), timeout_s)
        except TimeoutError:
            return Health(False, f"no answer within {timeout_s:g} s")
        except Exception as exc:
            return Health(False, f"{type(exc).__name__}: {exc}")

    answers = await asyncio.gather(*(one(check) for check in checks))
    return {check.name: answer for check, answer in zip(checks, answers, strict=True)}


def model_check(warmup: ModelWarmup | None) -> ReadinessCheck:
    """The executor has the default model loaded. Executors that load on demand (no warm-up) always pass."""
    async def probe() -> Health:
        if warmup is None:
            return Health(True, "the executor loads models on demand")
        state = warmup.state
        if state is None:
            return Health(False, "the model load has not started")
        if state.phase == "ready":
            return Health(True, f"model {state.model} loaded")
        if state.phase == "loading":
            return Health(False, progress_line(state.model, state.progress))
        return Health(False, f"model {state.model} could not be loaded: {state.error}")

    return ReadinessCheck("model", probe)


def database_check(storage: Storage) -> ReadinessCheck:
    """The database answers a trivial query."""
    async def probe() -> Health:
        await storage.ping()
        return Health(True, "answers")

    return ReadinessCheck("database", probe)
