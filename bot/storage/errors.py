"""Storage errors, part of the project's ``ImagineError`` tree.

    ImagineError
    └── StorageError          the database or image files could not do what was asked
        ├── JobNotFound       no stored job has this id (a button on a purged job, a typo)
        └── IllegalTransition the job's status cannot change that way (e.g. cancel a finished job)
"""

from __future__ import annotations

from generation.errors import ImagineError


class StorageError(ImagineError):
    """The database or the stored images could not do what was asked."""


class JobNotFound(StorageError):
    """No stored job has this id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} was not found; it may have been deleted")


class IllegalTransition(StorageError):
    """A status change that the job lifecycle does not allow; the message says the current status."""

    def __init__(
        self, job_id: str, current: str, wanted: str, allowed: tuple[str, ...], *, raced: bool = False
    ) -> None:
        self.job_id, self.current, self.wanted = job_id, current, wanted
        if raced:
            super().__init__(f"job {job_id} stopped being {current} before it could become {wanted}")
            return
        allowed_text = ", ".join(allowed) if allowed else "none (it is finished)"
        super().__init__(f"job {job_id} is {current}; it cannot become {wanted}; allowed next: {allowed_text}")
