"""Which jobs the code running now is about, for log lines (``observability.log_format: json`` writes them as
``job_id``, or ``job_ids`` for a batch). The event fan-out (``bot.core.events``) sets it around each
subscriber's handling of a job's event, and the dispatcher around each batch it runs, so every line logged
there, and in the tasks started there, names its jobs without each log call having to pass them along.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# A context variable, not a global: each asyncio task carries its own copy from where it was created.
_current_jobs: ContextVar[tuple[str, ...]] = ContextVar("imagine_current_jobs", default=())


def current_jobs() -> tuple[str, ...]:
    """The ids of the jobs the running code handles (empty outside any job's handling)."""
    return _current_jobs.get()


@contextmanager
def about_jobs(*job_ids: str) -> Iterator[None]:
    """Code in this block (and tasks created in it) is about ``job_ids``."""
    token = _current_jobs.set(job_ids)
    try:
        yield
    finally:
        _current_jobs.reset(token)
