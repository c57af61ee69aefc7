"""Persistence: jobs, result images and guild settings (SQLite by default, any SQLAlchemy async URL).

Design (see each module):
- ``models``: ORM tables (latest schema); ``migrations``: versioned steps + ``schema_version`` table.
- ``repository.Storage``: the async API the bot uses; returns frozen ``records`` (``JobRecord``, ``ResultImage``).
- Errors (``StorageError``, ``IllegalTransition``, ``JobNotFound``) are in ``bot.core.errors``, the one tree.
- Tables: the shared job store lives here (``jobs``, ``results``, ``guild_settings``); a feature that
  needs its own table defines it in its package and adds a step to the one migration chain here.
- Input images are a ``jobs.init_image`` blob (kept with the row, deleted with it); result images are PNG
  files under ``<data_dir>/images/`` whose relative path is stored in ``results.path``.
- ``retention``: the purge of old images, rows and interaction tokens (``Storage.purge``).
"""

from bot.storage.migrations import LATEST_VERSION, MIGRATIONS, Migration, migrate
from bot.storage.records import (
    ACTIVE_STATUSES,
    JOB_KINDS,
    JOB_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    ImagesMade,
    InteractionRef,
    JobKind,
    JobRecord,
    JobStatus,
    ResultImage,
)
from bot.storage.repository import Storage, images_of_job
from bot.storage.retention import PurgeReport, RetentionPolicy
from bot.storage.serialization import request_from_dict, request_to_dict

__all__ = [
    "ACTIVE_STATUSES", "JOB_KINDS", "JOB_STATUSES", "LATEST_VERSION", "MIGRATIONS", "TERMINAL_STATUSES", "TRANSITIONS",
    "ImagesMade", "InteractionRef", "JobKind", "JobRecord", "JobStatus", "Migration", "PurgeReport", "ResultImage",
    "RetentionPolicy", "Storage", "images_of_job", "migrate", "request_from_dict", "request_to_dict",
]
