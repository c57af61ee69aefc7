"""The handle a test holds after sending an interaction: await its response and messages."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .models import JSON
from .records import InteractionRecord, StoredMessage

if TYPE_CHECKING:
    from .server import FakeDiscord


class InteractionHandle:
    """What a test holds after sending an interaction: await its response and messages."""

    def __init__(self, fake: FakeDiscord, record: InteractionRecord) -> None:
        self.fake, self.record = fake, record

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def token(self) -> str:
        return self.record.token

    @property
    def payload(self) -> JSON:
        """The INTERACTION_CREATE data that was dispatched."""
        return self.record.payload

    @property
    def response_type(self) -> int | None:
        return self.record.response_type

    @property
    def original(self) -> StoredMessage | None:
        """Current state of the @original message (None before a message response)."""
        mid = self.record.original_message_id
        return self.fake.state.messages.get(mid) if mid is not None else None

    @property
    def followups(self) -> list[StoredMessage]:
        return [self.fake.state.messages[m] for m in self.record.followup_ids]

    @property
    def messages(self) -> list[StoredMessage]:
        return ([self.original] if self.original is not None else []) + self.followups

    def expire(self) -> None:
        """From now on callbacks and webhook calls with this token get 401 / 50027.

        Tokens also expire by age: 15 minutes after dispatch on the fake's clock.
        """
        self.record.expired = True

    async def wait_response(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> InteractionRecord:
        """Wait for the first callback; returns the record (response_type, response_data...)."""
        return await self.fake.state.wait_until(
            lambda: self.record if self.record.responded else None,
            timeout=timeout,
            what=f"a callback to interaction {self.id}",
        )

    async def wait_for(
        self,
        predicate: Callable[[StoredMessage], object],
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> StoredMessage:
        """Wait until one of this interaction's messages (original or followups) satisfies predicate."""

        def check() -> StoredMessage | None:
            return next((m for m in self.messages if not m.deleted and predicate(m)), None)

        return await self.fake.state.wait_until(
            check, timeout=timeout, what=f"a message of interaction {self.id} matching {predicate}"
        )

    async def wait_original(
        self,
        predicate: Callable[[StoredMessage], object] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> StoredMessage:
        def check() -> StoredMessage | None:
            msg = self.original
            return msg if msg is not None and (predicate is None or predicate(msg)) else None

        return await self.fake.state.wait_until(check, timeout=timeout, what=f"@original of interaction {self.id}")

    async def wait_followup(
        self,
        predicate: Callable[[StoredMessage], object] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> StoredMessage:
        def check() -> StoredMessage | None:
            return next((m for m in self.followups if predicate is None or predicate(m)), None)

        return await self.fake.state.wait_until(check, timeout=timeout, what=f"a followup of interaction {self.id}")

    async def click(self, custom_id: str, **kwargs: Any) -> InteractionHandle:
        """Click a component on the newest of this interaction's messages that has it.

        Raises ``FakeRejected`` if that message was deleted (Discord never delivers such a click).
        """
        for message in reversed(self.messages):
            if message.find_component(custom_id) is not None:
                return await self.fake.click(message, custom_id, **kwargs)
        raise LookupError(f"no component {custom_id!r} on messages of interaction {self.id}: {self.messages}")

    async def submit_modal(self, values: Mapping[str, Any], *, user: Any = None) -> InteractionHandle:
        return await self.fake.submit_modal(self, values, user=user)

    def __repr__(self) -> str:
        return f"<InteractionHandle id={self.id} type={self.record.type} response={self.response_type}>"
