"""Fan-out of job events: one publisher (the scheduler), many subscribers (the imagine recorder today;
stats and contests are next).

Each subscriber has its own ordered lane: calls about one job reach a subscriber in the order they
were sent, a subscriber that raises is logged and skipped, and a slow subscriber delays only its own
lane. So one failing or slow subscriber never stops another, and never stalls the publisher.

Subscribers are plain objects with a method per event name (see ``bot.scheduler.JobListener``);
methods may be plain or ``async``, and a subscriber without a method for an event is skipped.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from bot.core.jobcontext import about_jobs

_log = logging.getLogger(__name__)


class HasId(Protocol):
    @property
    def id(self) -> str: ...


S = TypeVar("S", bound=HasId)  # what events are about (the scheduler's Job)
L = TypeVar("L")  # the subscriber interface


class _Lane:
    """One subscriber's calls: errors logged, async calls chained per subject to keep their order."""

    def __init__(self, subscriber: object, name: str) -> None:
        self.subscriber = subscriber
        self.name = name
        self._tails: dict[str, asyncio.Task[None]] = {}

    def send(self, subject_id: str, subject: object, method: str, args: tuple[Any, ...]) -> None:
        handler = getattr(self.subscriber, method, None)
        if handler is None:
            return
        # Everything the handler logs, now or in the task below (which copies this context), names the job.
        with about_jobs(subject_id):
            try:
                outcome = handler(subject, *args)
            except Exception:
                _log.exception("%s.%s failed for job %s", self.name, method, subject_id)
                return
            if not inspect.isawaitable(outcome):
                return
            previous = self._tails.get(subject_id)
            task = asyncio.ensure_future(self._run(previous, outcome, method, subject_id))
        self._tails[subject_id] = task
        task.add_done_callback(functools.partial(self._forget, subject_id))

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _run(self, previous: asyncio.Task[None] | None, outcome: Awaitable[Any], method: str,
                   subject_id: str) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            await outcome
        except Exception:
            _log.exception("%s.%s failed for job %s", self.name, method, subject_id)

    def tail(self, subject_id: str) -> asyncio.Task[None] | None:
        """The last call about ``subject_id`` still running (it runs after every earlier one), or None."""
        return self._tails.get(subject_id)

    @property
    def busy(self) -> bool:
        return bool(self._tails)

    async def flush(self) -> None:
        while self._tails:
            await asyncio.wait(list(self._tails.values()))


class EventHub(Generic[S, L]):
    """Delivers each event to every subscriber, in subscription order, each in its own lane."""

    def __init__(self) -> None:
        self._lanes: list[_Lane] = []

    def subscribe(self, subscriber: L, *, name: str | None = None) -> Callable[[], None]:
        """Start delivering to ``subscriber``; returns the call that stops it (for ``cog_unload``)."""
        lane = _Lane(subscriber, name or type(subscriber).__name__)
        self._lanes.append(lane)

        def unsubscribe() -> None:
            if lane in self._lanes:
                self._lanes.remove(lane)

        return unsubscribe

    @property
    def subscriber_count(self) -> int:
        return len(self._lanes)

    def send(self, subject: S, method: str, *args: Any) -> None:
        for lane in list(self._lanes):
            lane.send(subject.id, subject, method, args)

    def after(self, subject_id: str, callback: Callable[[], None]) -> None:
        """``callback()`` once every subscriber has finished the calls about ``subject_id`` sent so far (at
        once if none is still running). The publisher uses it to let go of what those calls needed."""
        tails = [tail for lane in self._lanes if (tail := lane.tail(subject_id)) is not None]
        if not tails:
            callback()
            return
        waiting = len(tails)

        def one_done(_task: asyncio.Task[None]) -> None:
            nonlocal waiting
            waiting -= 1
            if waiting == 0:
                callback()

        for tail in tails:
            tail.add_done_callback(one_done)

    async def flush(self) -> None:
        """Wait until every async call sent so far, in every lane, has finished."""
        while any(lane.busy for lane in self._lanes):  # one lane's work may send events to another
            for lane in list(self._lanes):
                await lane.flush()
