"""The project's exception tree, drawn once here.

Every error a user or an operator can cause is an ``ImagineError``; its ``str()`` is meant for
people: it says what was wrong and what is allowed. The root and the generation branch live in
``generation.errors`` (``generation`` never imports ``bot``); everything the bot adds lives here.

    ImagineError                       (generation.errors) root; the message is user-facing
    ├── ConfigError                    (generation.errors) config.yaml is invalid; names key, line, allowed values
    ├── InvalidRequest                 (generation.errors) bad request fields; ``problems`` lists each one
    ├── ModelLoadError                 (generation.errors) a model source could not be loaded
    ├── GenerationFailed               (generation.errors) the pipeline failed for this request (a crash: text for
    │   │                              operators, with exception text and paths)
    │   ├── FixableFailure             (generation.errors) ...for a reason the requester can act on (input image,
    │   │   │                          out of memory, NaNs); the message says what to change
    │   │   └── OutOfMemory            (generation.errors) ...the GPU's memory, even one image at a time
    │   ├── WorkerLost                 (generation.errors) the remote GPU worker stopped, and the one it moved
    │   │                              to as well (its text is for the requester)
    │   └── InternalFailure            what a requester sees instead of any other failure: a fixed text and the
    │                                  ``reference`` under which the detail was logged
    ├── GenerationCancelled            (generation.errors) cancelled before it finished
    ├── ExecutorClosed                 (generation.errors) the executor is shutting down and takes no new work
    ├── Refused                        a request was not admitted; nothing (tokens, quota) was consumed
    │   ├── RateLimited                a token bucket (per user or per server) is empty; ``retry_after`` seconds
    │   ├── QueueFull                  a cap on queued jobs (user, server or global) is reached; ``queue_length``
    │   ├── QuotaExceeded              the user's daily image quota is used up; ``resets_at`` (epoch seconds)
    │   ├── ChannelNotAllowed          the server allows /imagine only in some channels; ``allowed``
    │   ├── GuildPaused                a moderator paused this server's queue
    │   ├── Banned                     a moderator banned this member from the bot in this server
    │   ├── ModelUnavailable           the model failed to load at start-up; the bot retries (``retry_after``)
    │   ├── ShuttingDown               the bot is draining its queue before a restart
    │   ├── ContentBlocked             the prompt or negative prompt breaks a content rule; ``rule_id`` (never the term)
    │   ├── PromptTooLong              the prompt is longer than the server's ``content.max_prompt_chars``
    │   └── WorkersUnreachable         the GPU workers' queue (Redis) cannot be reached; queued jobs wait
    ├── NotPermitted                   the caller may not do this (e.g. cancel someone else's job, use /mod)
    │   ├── DirectMessagesOff          /imagine in a direct message while ``bot.allow_dms`` is false
    │   ├── BotLacksPermissions        the bot itself lacks a permission it needs in this channel; ``missing``
    │   └── ImageWithheld              U/V on an image the server's safety setting withholds
    ├── InvalidSetting                 a moderator's /mod change was refused; the text is config.yaml's for that key
    ├── ContestProblem                 a prompt contest does not allow this now (closed, capped, an own entry); the
    │                                  message says why and what is allowed
    ├── JobNotFound                    no job with this id is where it was looked for (queue or storage)
    ├── JobExpired                     a queued job waited past ``scheduler.max_wait_s`` (the job's error)
    └── StorageError                   the database or the stored images could not do what was asked (for operators)
        └── IllegalTransition          the job's status cannot change that way (e.g. cancel a finished job)

Refusals are raised at once by ``Scheduler.submit``: the message says in members' words what the limit
allows and when to retry; the config key and its setting stay on the exception (``limit``, ``value``) for
logs and moderators, never in the text. ``bot.discord_ui.replies`` maps the whole tree to ephemeral replies.
Texts for operators (``shown_to_requester`` is False: a crash's exception text, a model's path in
``ModelLoadError``, a config file's path) never reach a chat: the requester gets ``InternalFailure``'s
fixed text with a reference, and the log has the detail under the same reference.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from generation.errors import ConfigError, FixableFailure, GenerationFailed, ImagineError, ModelLoadError, WorkerLost


class Refused(ImagineError):
    """The request was not admitted. ``limit`` is the config key that refused it, ``value`` its setting."""

    def __init__(self, message: str, *, limit: str, value: object = None, retry_after: float | None = None,
                 queue_length: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.retry_after = retry_after
        self.queue_length = queue_length


class RateLimited(Refused):
    """A token bucket is empty; ``retry_after`` says when enough tokens are back."""


class QueueFull(Refused):
    """A queued-jobs cap is reached; ``queue_length`` is the count that hit the cap."""


class QuotaExceeded(Refused):
    """The daily image quota is used up until ``resets_at`` (epoch seconds)."""

    def __init__(self, message: str, *, limit: str, value: object, retry_after: float, resets_at: float) -> None:
        super().__init__(message, limit=limit, value=value, retry_after=retry_after)
        self.resets_at = resets_at


class ChannelNotAllowed(Refused):
    """This server runs /imagine only in the channels listed in ``allowed``."""

    def __init__(self, message: str, *, allowed: Sequence[int]) -> None:
        super().__init__(message, limit="guilds.channels", value=list(allowed))
        self.allowed = list(allowed)


class GuildPaused(Refused):
    """A moderator paused this server's queue; queued jobs wait, new ones are refused."""


class Banned(Refused):
    """A moderator banned this member from the bot in this server (``guilds.<id>.banned_users``, set by
    ``/mod ban``): their requests and the buttons that make new images are refused, privately."""

    def __init__(self) -> None:
        super().__init__("You can't use /imagine in this server: a moderator has blocked you from it.",
                         limit="guilds.banned_users")


class ModelUnavailable(Refused):
    """The request's model could not be loaded (its message names the model and why); a retry is scheduled."""


class ShuttingDown(Refused):
    """The bot is draining before a restart and admits nothing new."""


class ContentBlocked(Refused):
    """The prompt (or negative prompt) breaks the content rule ``rule_id``. The text names the rule, never the term
    that matched: a member who typed it knows it, and nothing of it is repeated anywhere."""

    def __init__(self, rule_id: str, *, negative: bool = False, in_dm: bool = False) -> None:
        self.rule_id = rule_id
        what = "negative prompt" if negative else "prompt"
        whose = "this bot's" if in_dm else "this server's"
        super().__init__(f"This {what} matches {whose} content rule “{rule_id}”. Rephrase it and try again.",
                         limit="content.rules", value=rule_id)


class PromptTooLong(Refused):
    """The prompt is longer than the server allows (``content.max_prompt_chars``); the text says both lengths."""

    def __init__(self, length: int, allowed: int, *, in_dm: bool = False) -> None:
        self.length = length
        where = "this bot" if in_dm else "this server"
        super().__init__(f"This prompt is {length} characters long; {where} allows at most {allowed}. Shorten it and "
                         "try again.", limit="content.max_prompt_chars", value=allowed)


class WorkersUnreachable(Refused):
    """The bot cannot reach the queue its GPU workers take batches from (Redis, ``executor.mode: redis``): new
    requests are refused until it can again; queued ones keep their place and run once it can."""


class NotPermitted(ImagineError):
    """The caller lacks the permission for this action; the message says who may do it."""


class DirectMessagesOff(NotPermitted):
    """/imagine was used in a direct message, and this bot serves servers only (``bot.allow_dms: false``)."""

    def __init__(self) -> None:
        super().__init__("/imagine works only in servers on this bot; use it in a channel of a server the bot is in.")


class BotLacksPermissions(NotPermitted):
    """The bot cannot show results in this channel: the server withholds ``missing`` (Discord's names of the
    permissions) from it there. Raised before anything is stored, so the member is told at once instead of
    their job failing unseen when the bot later posts to the channel."""

    def __init__(self, missing: Sequence[str], needed: Sequence[str]) -> None:
        self.missing = list(missing)
        what = "permission" if len(self.missing) == 1 else "permissions"
        super().__init__(f"The bot can't post images in this channel: it lacks the {_listed(self.missing)} {what} "
                         f"here. A server admin can give the bot {_listed(needed)} in this channel; until then, "
                         "use /imagine in another channel.")


class InvalidSetting(ImagineError):
    """A change asked with ``/mod`` that was not made: the value does not fit (the message is the one config.yaml
    would get for it: the same key path and allowed values), or the change makes no sense as asked."""


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


class ImageWithheld(NotPermitted):
    """U or V on an image that this server's safety setting withholds: it is never shown, so nothing is made of it."""

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(f"Image {index + 1} was withheld by this server's safety setting, so it can't be upscaled "
                         "or varied.")


class ContestProblem(ImagineError):
    """A prompt contest does not allow what was asked at this point: its phase, its rules or its caps; the message
    says what is allowed (and when, where a deadline applies)."""


class JobNotFound(ImagineError):
    """No job with ``job_id`` is where it was looked for; the message says where, for the user."""

    def __init__(self, job_id: str, message: str | None = None) -> None:
        self.job_id = job_id
        # The id stays on the exception for the log; a member reads which request, not its id.
        super().__init__(message or "That request no longer exists; it may have been deleted.")

    @classmethod
    def not_in_queue(cls, job_id: str) -> JobNotFound:
        return cls(job_id, "That request is no longer waiting or running; it may have finished already.")

    @classmethod
    def not_stored(cls, job_id: str) -> JobNotFound:
        return cls(job_id, "That image is no longer stored (it may have been deleted).")


class JobExpired(ImagineError):
    """The job waited in the queue longer than ``scheduler.max_wait_s`` and was dropped (the text says how long,
    in members' words)."""


class StorageError(ImagineError):
    """The database or the stored images could not do what was asked."""


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


class InternalFailure(GenerationFailed):
    """The text a requester sees for a failure whose detail is for operators only; ``reference`` finds it in the log."""

    def __init__(self, reference: str | None = None) -> None:
        self.reference = reference or new_reference()
        super().__init__(f"This image could not be made (reference `{self.reference}`); please try again.")


def new_reference() -> str:
    """A short id that a user can quote and an operator can find in the log."""
    return secrets.token_hex(4)


def shown_to_requester(error: BaseException) -> bool:
    """Whether ``error``'s text is fit for the person who asked: it says what they did or can do, and
    carries nothing of the machine (no exception text, paths or config file names)."""
    if not isinstance(error, ImagineError) or isinstance(error, (ModelLoadError, ConfigError, StorageError)):
        return False  # a storage error names job ids and states: the requester gets a reference instead
    return not isinstance(error, GenerationFailed) or isinstance(error, (FixableFailure, InternalFailure, WorkerLost))
