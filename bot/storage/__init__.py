"""Persistence: jobs, result images and guild settings (SQLite by default, any SQLAlchemy async URL).

Design (see each module):
- ``models``: ORM tables (latest schema); ``migrations``: versioned steps + ``schema_version`` table.
- ``repository.Storage``: the async API the bot uses; returns frozen ``records`` (``Job``, ``ResultImage``).
- Input images are a ``jobs.init_image`` blob (kept with the row, deleted with it); result images are PNG
  files under ``<data_dir>/images/`` whose relative path is stored in ``results.path``.
"""

from bot.storage.errors import IllegalTransition, JobNotFound, StorageError
from bot.storage.migrations import LATEST_VERSION, MIGRATIONS, Migration, migrate
from bot.storage.records import (
    ACTIVE_STATUSES,
    JOB_KINDS,
    JOB_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    InteractionRef,
    Job,
    JobKind,
    JobStatus,
    ResultImage,
)
from bot.storage.repository import Storage
from bot.storage.serialization import request_from_dict, request_to_dict

__all__ = [
    "ACTIVE_STATUSES", "JOB_KINDS", "JOB_STATUSES", "LATEST_VERSION", "MIGRATIONS", "TERMINAL_STATUSES", "TRANSITIONS",
    "IllegalTransition", "InteractionRef", "Job", "JobKind", "JobNotFound", "JobStatus", "Migration", "ResultImage",
    "Storage", "StorageError", "migrate", "request_from_dict", "request_to_dict",
]
