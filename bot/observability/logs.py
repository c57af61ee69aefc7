"""Log formats: ``text`` (a line for people, as before) or ``json`` (``observability.log_format``): one JSON
object per line, for log collectors, with ``time``, ``level``, ``logger``, ``message``, ``exception`` when there
is one, and ``job_id`` on every line about a job (``job_ids`` on a line about a batch of several).

A line is about a job when the call passes ``extra={"job_id": ...}``, when its message names the job the way
this code base writes it, ``job <id>`` (the presenter's and the outbox's lines outside event handling), or when
it is logged while a job's event is handled or its batch runs (``bot.core.jobcontext``: the event fan-out and
the dispatcher set it).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Literal

from bot.core.jobcontext import current_jobs

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Job ids are uuid4().hex (bot.storage); a message that names one says "job <id>".
_NAMED_JOB = re.compile(r"\bjob ([0-9a-f]{32})\b")


class JobIdFilter(logging.Filter):
    """Sets ``record.job_ids``: the jobs the line is about (empty for none); it lets every record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        given = getattr(record, "job_id", None)  # extra={"job_id": ...} wins
        if given is not None:
            record.job_ids = (str(given),)
        else:
            named = _NAMED_JOB.search(record.getMessage())
            record.job_ids = (named.group(1),) if named else current_jobs()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages and tracebacks are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_ids = tuple(getattr(record, "job_ids", ()))
        if len(job_ids) == 1:
            entry["job_id"] = job_ids[0]
        elif job_ids:
            entry["job_ids"] = list(job_ids)  # a batch's line: every job in it
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def json_handler(handler: logging.Handler) -> logging.Handler:
    """``handler`` writing JSON lines with job ids."""
    handler.setFormatter(JsonFormatter())
    handler.addFilter(JobIdFilter())
    return handler


def use_format(log_format: Literal["text", "json"], root: logging.Logger | None = None) -> None:
    """Switch the root logger's handlers (``logging.basicConfig``'s) to ``log_format``."""
    root = root or logging.getLogger()
    for handler in root.handlers:
        if log_format == "json":
            json_handler(handler)
        else:
            handler.setFormatter(logging.Formatter(TEXT_FORMAT))
