"""The root of the project's exception tree and its generation branch.

Every error a user or an operator can cause is an ``ImagineError``; its ``str()`` is a message meant
for people: it says what was wrong and what is allowed. The whole tree, with the bot's branches
(refusals, permissions, storage), is drawn once in ``bot/core/errors.py``; ``generation`` itself
never imports ``bot``.
"""

from __future__ import annotations

from collections.abc import Sequence


class ImagineError(Exception):
    """Base of every error the project raises on purpose; the message is user-facing."""


class ConfigError(ImagineError):
    """The configuration is invalid; the running configuration (if any) stays in force."""


class InvalidRequest(ImagineError):
    """One or more request fields are out of range; ``problems`` has one sentence per field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class ModelLoadError(ImagineError):
    """A configured model could not be loaded from its source (the message names the source: for operators)."""


class GenerationFailed(ImagineError):
    """The pipeline could not produce this request's images.

    Its text may carry exception text and local paths: right for the CLI's operator, not for a
    requester in a chat. The bot shows a fixed text with a reference instead (``FixableFailure`` aside)."""


class FixableFailure(GenerationFailed):
    """Failed for a reason the requester can act on (the input image, a size beyond the GPU's memory, a
    seed that overflows): the message says what to change and carries nothing of the machine."""


class OutOfMemory(FixableFailure):
    """The GPU ran out of memory even for one image at a time: a smaller size would fit, or a GPU with more
    memory (a cluster moves such a request to another worker when one has more free)."""


class WorkerLost(GenerationFailed):
    """The GPU worker running the request stopped (a crash, a lost heartbeat) and no other could take it over."""


class GenerationCancelled(ImagineError):
    """The request was cancelled (by its owner, a moderator or shutdown) before it finished."""


class ExecutorClosed(ImagineError):
    """The executor is shut down or shutting down and refuses new work."""
