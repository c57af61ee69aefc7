"""Plain records that storage returns (detached from the database session), and the job lifecycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from generation.request import GenerationRequest

JobKind = Literal["imagine", "upscale", "variation", "reroll", "contest"]
# The outbox: a job's end (its result, or why it has none) is owed to the user until Discord accepted it.
Delivery = Literal["owed", "delivered", "undeliverable"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled", "refused", "expired", "dropped"]
JOB_KINDS: tuple[JobKind, ...] = ("imagine", "upscale", "variation", "reroll", "contest")
ACTIVE_STATUSES: tuple[JobStatus, ...] = ("queued", "running")  # what a restart resumes or drops
TERMINAL_STATUSES: tuple[JobStatus, ...] = ("done", "failed", "cancelled", "refused", "expired", "dropped")
JOB_STATUSES: tuple[JobStatus, ...] = ACTIVE_STATUSES + TERMINAL_STATUSES

# The lifecycle. running -> queued is how a restart re-queues a job that was cut off mid-run.
TRANSITIONS: dict[JobStatus, tuple[JobStatus, ...]] = {
    "queued": ("running", "cancelled", "refused", "expired", "dropped", "failed"),
    "running": ("done", "failed", "cancelled", "dropped", "queued"),
    **{status: () for status in TERMINAL_STATUSES},
}
# Discord interaction tokens last 15 minutes; keep a minute in hand for the request itself.
INTERACTION_TOKEN_LIFETIME = timedelta(minutes=14)


@dataclass(frozen=True)
class InteractionRef:
    """What is needed to edit an interaction's original response later (without the live object)."""

    application_id: int
    token: str
    created_at: datetime

    def usable(self, now: datetime) -> bool:
        return now - self.created_at < INTERACTION_TOKEN_LIFETIME


@dataclass(frozen=True)
class JobRecord:
    """One stored job. ``request`` includes the init image (loaded from its blob column)."""

    id: str
    kind: JobKind
    status: JobStatus
    request: GenerationRequest
    user_id: int
    guild_id: int | None
    channel_id: int | None
    role_ids: tuple[int, ...]
    parent_job_id: str | None
    seeds: tuple[int, ...]
    error: str | None
    interaction: InteractionRef | None
    status_message_id: int | None
    result_message_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deleted_at: datetime | None
    timings: dict[str, float] = field(default_factory=dict)
    delivery: Delivery | None = None  # None while the job is active
    delivery_attempts: int = 0
    next_delivery_at: datetime | None = None
    refusal: str | None = None  # refused jobs: the key of the limit that refused it (None before schema v5)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES


@dataclass(frozen=True)
class ResultImage:
    """One stored image of a finished job; ``path`` is absolute (stored relative to the data dir)."""

    job_id: str
    index: int
    seed: int
    path: Path
    width: int
    height: int
    size_bytes: int
    nsfw: bool | None = None  # the safety checker's flag; None: the image was not checked


@dataclass(frozen=True)
class ImagesMade:
    """Images one user made in one guild (``None``: DMs) over a period, summed by the database."""

    guild_id: int | None
    user_id: int
    images: int
