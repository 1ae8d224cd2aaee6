"""The outbox port: events written in the business transaction, handed to a relay afterwards.

Writing to the database and publishing to a broker are two writes; a process that dies between
them leaves data and events disagreeing. An outbox writer stores the event in the same database
transaction as the business change (a table row, or a transactional WAL message on PostgreSQL);
a relay reads what committed and publishes it to a broker, at least once.

Contract of an `OutboxSource` (what a relay reads), the same for every writer:

- `fetch` returns committed, not yet relayed messages, oldest first, and never skips one whose
  transaction committed late: a message is returned by some later `fetch` until it is marked.
- Messages of one aggregate come back in their commit order, and while a batch holding one of
  an aggregate's messages is out (fetched, not marked or released), no other relay fetches a
  later message of that aggregate.
- `mark_relayed` records that a batch was published (durably: a crash after it returns never
  publishes the batch again); a crash before it means the batch is published again, which the
  broker's idempotent publish (the event id is the outbox message id) turns into nothing.
- `wait` returns when new messages may have committed, or after ``timeout`` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from tidings.events import Event

__all__ = ["OutboxMessage", "OutboxSource", "OutboxStatus"]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One event waiting in an outbox.

    Attributes:
        event: The event; its id is the outbox message's id.
        topic: The topic to publish it to.
        key: Its partition key (the aggregate id by default).
        aggregate_type: The kind of aggregate that changed (``"order"``), or None.
        aggregate_id: Which aggregate changed, or None.
        occurred_at: When the business transaction wrote it.
        position: Where the source keeps it (a sequence number or a WAL position), for marking.
    """

    event: Event
    topic: str
    key: str | None
    aggregate_type: str | None
    aggregate_id: str | None
    occurred_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """How far behind the relays are.

    Attributes:
        backlog: Messages committed and not yet relayed.
        oldest: When the oldest of them was written (None when there are none).
        relayed: Messages relayed and still kept (until retention removes them).
    """

    backlog: int
    oldest: datetime | None
    relayed: int


@runtime_checkable
class OutboxSource(Protocol):
    """Where a relay reads committed outbox messages from."""

    async def fetch(self, limit: int) -> Sequence[OutboxMessage]:
        """Return up to ``limit`` committed, unrelayed messages, held for this relay."""
        ...

    async def mark_relayed(self, messages: Sequence[OutboxMessage]) -> None:
        """Record that these (fetched) messages were published; durable on return."""
        ...

    async def release(self, messages: Sequence[OutboxMessage]) -> None:
        """Give fetched messages back unpublished (publishing failed); they are fetched again."""
        ...

    async def wait(self, timeout: float) -> None:
        """Return when new messages may have committed, or after ``timeout`` seconds."""
        ...

    async def status(self) -> OutboxStatus:
        """Return the backlog and its age."""
        ...
