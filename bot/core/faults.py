"""A fault-injection seam for the delivery tests: kill the process right after a named step.

``IMAGINE_FAULT_KILL_AFTER=<step>`` is read once at start-up by ``python -m bot``; without it every
checkpoint is a no-op. The steps, in a job's order, are ``STEPS``. The kill is SIGKILL: no cleanup,
no flush, exactly what a power cut or an OOM kill does.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping

_log = logging.getLogger(__name__)
ENV = "IMAGINE_FAULT_KILL_AFTER"
STEPS = (
    "stored", "admitted", "status posted", "status recorded", "running", "done committed",
    "posted", "delivery recorded", "cancel requested",
)


class Checkpoints:
    """``reached(step)`` kills the process when ``step`` is the one named at start-up."""

    def __init__(self, kill_after: str | None = None) -> None:
        if kill_after is not None and kill_after not in STEPS:
            raise ValueError(f"{ENV}={kill_after!r} is not a step; allowed: {', '.join(STEPS)}")
        self._kill_after = kill_after

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Checkpoints:
        return cls(environ.get(ENV) or None)

    def reached(self, step: str) -> None:
        if step == self._kill_after:
            _log.critical("fault injection: killing the process after step %r", step)
            os.kill(os.getpid(), signal.SIGKILL)
