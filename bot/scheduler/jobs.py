"""Jobs in the queue, their states, and the events through which the bot hears about every transition."""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bot.core.events import EventHub
from generation.errors import ImagineError
from generation.interface import CancelToken
from generation.request import GenerationRequest, GenerationResult, ProgressEvent, estimate_cost


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


@dataclass(eq=False)
class Job:
    """One /imagine request on its way through the scheduler. The caller picks ``id``.

    ``request`` must already be validated (``generation.request.validate``); ``cost`` is in work
    units (see ``Job.create``). Use guild id 0 for direct messages: each DM user is then a lane of
    their own (``lane``), with their own share of the queue, caps and server bucket.
    """

    id: str
    request: GenerationRequest
    user_id: int
    guild_id: int
    channel_id: int
    cost: float
    role_ids: frozenset[int] = frozenset()
    # The feature that submitted the job and shows it: every feature hears every job's events, and each
    # records and shows only its own (a contest entry's images are private until its round's results).
    feature: str = "imagine"
    state: JobState = JobState.NEW
    cancel_token: CancelToken = field(default_factory=CancelToken, repr=False)
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: GenerationResult | None = field(default=None, repr=False)
    error: ImagineError | None = None
    cancelled_by: int | None = None
    parent_channel_id: int | None = None  # for a job asked in a thread: the thread's channel
    batch_size: int | None = None  # jobs in the batch it runs in, set as it starts (its "started" events come in a row)

    @classmethod
    def create(cls, id: str, request: GenerationRequest, *, user_id: int, guild_id: int, channel_id: int,
               role_ids: frozenset[int] | set[int] = frozenset(), cost_weight: float = 1.0,
               parent_channel_id: int | None = None, feature: str = "imagine") -> Job:
        """A job whose cost is images x pixels/512² x steps/25 x the model's ``cost_weight``."""
        return cls(id=id, request=request, user_id=user_id, guild_id=guild_id, channel_id=channel_id,
                   cost=estimate_cost(request, cost_weight), role_ids=frozenset(role_ids),
                   parent_channel_id=parent_channel_id, feature=feature)

    @property
    def images(self) -> int:
        return self.request.count

    @property
    def lane(self) -> int:
        """Who shares a server's bucket, queue caps and fair share: the server, or in a direct message the
        user alone (a negative id, which no server has), so that DM users never share guild 0's."""
        return lane_of(self.guild_id, self.user_id)

    @property
    def user_key(self) -> tuple[int, int]:
        return (self.lane, self.user_id)


def lane_of(guild_id: int, user_id: int) -> int:
    """``Job.lane`` for a guild id (0 for a direct message) and a user."""
    return guild_id if guild_id else -user_id


class JobListener(Protocol):
    """What a subscriber of ``JobEvents`` implements to hear about jobs. Methods may be plain or ``async``.

    Calls for one job arrive in order. A listener that raises is logged and ignored: it can never
    stall the dispatcher or another subscriber. Async methods run as tasks, so keep sync ones quick.
    """

    def queued(self, job: Job, position: int | None, eta_s: float | None) -> Awaitable[None] | None:
        """Admitted (or readmitted). ``position`` 1 runs next; None while the guild is paused. ``eta_s``: seconds
        until it starts."""

    def position_changed(self, job: Job, position: int | None, eta_s: float | None) -> Awaitable[None] | None:
        """The job moved in the queue, or its start time shifted noticeably."""

    def started(self, job: Job) -> Awaitable[None] | None:
        """The job's batch went to the executor."""

    def progress(self, job: Job, event: ProgressEvent) -> Awaitable[None] | None:
        """A denoising step of the job's batch finished."""

    def finished(self, job: Job) -> Awaitable[None] | None:
        """Exactly once per job: ``job.state`` is terminal; ``job.result`` or ``job.error`` says why.

        ``job.result`` (the images) is there until every subscriber's ``finished`` has returned (or its
        coroutine ended); then the scheduler drops it so the images can be freed. Keep what you need."""

    def handed_back(self, job: Job) -> Awaitable[None] | None:
        """Drained at shutdown while queued: not ended, it resumes on the next start (``submit(readmit=True)``)."""


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

    def handed_back(self, job: Job) -> Awaitable[None] | None:
        return None


JobEventName = Literal["queued", "position_changed", "started", "progress", "finished", "handed_back"]


class JobEvents(EventHub[Job, JobListener]):
    """The scheduler's job events, fanned out to every subscribed ``JobListener``."""

    def send(self, subject: Job, method: JobEventName, *args: Any) -> None:  # type: ignore[override]
        # Narrower than EventHub.send: a misspelt event name is a type error, not a silent skip.
        super().send(subject, method, *args)
