"""Jobs, their states, and the listener through which the bot hears about every transition."""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from generation.errors import ImagineError
from generation.interface import CancelToken
from generation.request import GenerationRequest, GenerationResult, ProgressEvent, estimate_cost

_log = logging.getLogger(__name__)


class JobState(enum.Enum):
    NEW = "new"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUSED = "refused"
    EXPIRED = "expired"
    HANDED_BACK = "handed_back"  # drained at shutdown; the bot persists it and readmits it later

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.REFUSED, JobState.EXPIRED})


@dataclass(frozen=True)
class Actor:
    """Who asks for a control action; ``is_admin`` is the bot's own check (e.g. Manage Server)."""

    user_id: int
    role_ids: frozenset[int] = frozenset()
    is_admin: bool = False


@dataclass(eq=False)
class Job:
    """One /imagine request on its way through the scheduler. The caller picks ``id``.

    ``request`` must already be validated (``generation.request.validate``); ``cost`` is in work
    units (see ``Job.create``). Use guild id 0 for direct messages.
    """

    id: str
    request: GenerationRequest
    user_id: int
    guild_id: int
    channel_id: int
    cost: float
    role_ids: frozenset[int] = frozenset()
    state: JobState = JobState.NEW
    cancel_token: CancelToken = field(default_factory=CancelToken, repr=False)
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: GenerationResult | None = field(default=None, repr=False)
    error: ImagineError | None = None
    cancelled_by: int | None = None

    @classmethod
    def create(cls, id: str, request: GenerationRequest, *, user_id: int, guild_id: int, channel_id: int,
               role_ids: frozenset[int] | set[int] = frozenset(), cost_weight: float = 1.0) -> Job:
        """A job whose cost is images x pixels/512² x steps/25 x the model's ``cost_weight``."""
        return cls(id=id, request=request, user_id=user_id, guild_id=guild_id, channel_id=channel_id,
                   cost=estimate_cost(request, cost_weight), role_ids=frozenset(role_ids))

    @property
    def images(self) -> int:
        return self.request.count

    @property
    def user_key(self) -> tuple[int, int]:
        return (self.guild_id, self.user_id)


class JobListener(Protocol):
    """What the bot implements to hear about its jobs. Methods may be plain or ``async``.

    Calls for one job arrive in order. A listener that raises is logged and ignored: it can never
    stall the dispatcher. Async methods run as tasks, so keep sync ones quick.
    """

    def queued(self, job: Job, position: int | None, eta_s: float | None) -> Awaitable[None] | None:
        """Admitted (or readmitted). ``position`` 1 runs next; None while the guild is paused."""

    def position_changed(self, job: Job, position: int | None, eta_s: float | None) -> Awaitable[None] | None:
        """The job moved in the queue, or its ETA shifted noticeably."""

    def started(self, job: Job) -> Awaitable[None] | None:
        """The job's batch went to the executor."""

    def progress(self, job: Job, event: ProgressEvent) -> Awaitable[None] | None:
        """A denoising step of the job's batch finished."""

    def finished(self, job: Job) -> Awaitable[None] | None:
        """Exactly once per job: ``job.state`` is terminal; ``job.result`` or ``job.error`` says why."""


class NullListener:
    """A JobListener that ignores everything; subclass it and override what you need."""

    def queued(self, job: Job, position: int | None, eta_s: float | None) -> Awaitable[None] | None:
        return None

    def position_changed(self, job: Job, position: int | None, eta_s: float | None) -> Awaitable[None] | None:
        return None

    def started(self, job: Job) -> Awaitable[None] | None:
        return None

    def progress(self, job: Job, event: ProgressEvent) -> Awaitable[None] | None:
        return None

    def finished(self, job: Job) -> Awaitable[None] | None:
        return None


class Notifier:
    """Calls the listener safely: errors are logged, async calls are chained per job to keep order."""

    def __init__(self, listener: JobListener) -> None:
        self._listener = listener
        self._tails: dict[str, asyncio.Task[None]] = {}

    def send(self, job: Job, method: str, *args: Any) -> None:
        try:
            outcome = getattr(self._listener, method)(job, *args)
        except Exception:
            _log.exception("listener.%s failed for job %s", method, job.id)
            return
        if not inspect.isawaitable(outcome):
            return
        previous = self._tails.get(job.id)
        task = asyncio.ensure_future(self._run(previous, outcome, method, job.id))
        self._tails[job.id] = task
        task.add_done_callback(functools.partial(self._forget, job.id))

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    @staticmethod
    async def _run(previous: asyncio.Task[None] | None, outcome: Awaitable[Any], method: str, job_id: str) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            await outcome
        except Exception:
            _log.exception("listener.%s failed for job %s", method, job_id)

    async def flush(self) -> None:
        """Wait until every async listener call made so far has finished."""
        while self._tails:
            await asyncio.wait(list(self._tails.values()))
