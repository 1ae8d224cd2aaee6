"""The messaging port: topics, consumer groups, and deliveries that are settled explicitly.

Words (docs/concepts.md): a *topic* is a destination that producers publish events to; it is
split into *partitions*, and an event's partition is chosen by hashing its key, so events with
one key stay in order. A consumer *group* receives every event of the topic (fan-out across
groups); the members of one group share the partitions (work sharing). Each event reaches a
member as a *delivery*, which the member settles: `ack` (done), `nack` (try again, maybe after a
delay), `reject` (give up: move it to the dead-letter topic).

Contract, the same on every backend (the conformance suite in
``tidings.testing.conformance.broker`` checks each operation a backend claims):

- At-least-once: an event is delivered to each group until it is acked or rejected. A delivery
  neither acked nor extended within its ack deadline comes back (to any member of the group).
- ``Delivery.attempt`` counts deliveries of that event to that group exactly, from 1.
- Order per key: events with one key go to one partition, and a group is handed a partition's
  events in offset order. A redelivery (after a nack or an expired deadline) comes back later,
  out of that order; `tidings.App` keeps per-key order end to end by handling one event per key
  at a time and retrying in process before it settles.
- Durable: a published event and a group's progress survive a restart of the backend's
  service (per the backend's storage settings) and of the consumer.
- Idempotent publish: publishing an event whose id the topic already holds stores nothing new.
- Settling a delivery twice is harmless; settling after the consumer closed raises
  `ClosedError`.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol, runtime_checkable

from tidings.events import Event

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "HEADER_ATTEMPTS",
    "HEADER_ORIGIN",
    "HEADER_REASON",
    "Broker",
    "Capabilities",
    "Delivery",
    "Operation",
    "PublishResult",
    "Retention",
    "StartFrom",
    "Support",
    "TopicInfo",
    "dead_letter_topic",
    "partition_for",
]

DEAD_LETTER_SUFFIX: Final = ".dlq"
HEADER_REASON: Final = "tidings-dlq-reason"
HEADER_ATTEMPTS: Final = "tidings-dlq-attempts"
HEADER_ORIGIN: Final = "tidings-dlq-topic"


def dead_letter_topic(topic: str) -> str:
    """Return the name of a topic's dead-letter topic."""
    return topic + DEAD_LETTER_SUFFIX


def partition_for(key: str | None, partitions: int, *, fallback: int = 0) -> int:
    """Return the partition of a key: CRC-32 of its UTF-8 bytes modulo the partition count.

    Events without a key go to ``fallback`` (a backend spreads those as it likes).
    """
    if key is None:
        return fallback % partitions
    return zlib.crc32(key.encode()) % partitions


class Support(enum.Enum):
    """How a backend provides an operation."""

    NATIVE = "native"
    EMULATED = "emulated"
    UNSUPPORTED = "unsupported"


class Operation(enum.Enum):
    """The operations whose support a backend declares."""

    FAN_OUT = "fan-out to every group"
    WORK_SHARING = "work sharing within a group"
    ORDER_PER_KEY = "order per key"
    ACK_DEADLINE = "redelivery after the ack deadline"
    EXTEND = "extend the ack deadline"
    NACK_DELAY = "nack with delay"
    DEAD_LETTER = "reject to a dead-letter topic"
    DURABLE_OFFSETS = "durable group progress"
    REPLAY_OFFSET = "replay from an offset"
    REPLAY_TIME = "replay from a time"
    IDEMPOTENT_PUBLISH = "idempotent publish by event id"
    RETENTION_AGE = "retention by age"
    RETENTION_COUNT = "retention by count"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend supports, operation by operation (unlisted means unsupported)."""

    support: Mapping[Operation, Support]
    notes: Mapping[Operation, str] = field(default_factory=dict)

    def of(self, operation: Operation) -> Support:
        """Return how the backend supports an operation."""
        return self.support.get(operation, Support.UNSUPPORTED)

    def claims(self, operation: Operation) -> bool:
        """Return True when the operation is supported, natively or emulated."""
        return self.of(operation) is not Support.UNSUPPORTED


class StartFrom(enum.Enum):
    """Where a new group starts reading a topic."""

    EARLIEST = "earliest"
    LATEST = "latest"


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a topic keeps events (None: forever). Unsettled events are never dropped."""

    max_age: timedelta | None = None
    max_count: int | None = None


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic's shape."""

    name: str
    partitions: int
    retention: Retention = field(default_factory=Retention)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Where a published event was stored; ``duplicate`` when its id was already there."""

    event_id: str
    partition: int
    offset: int
    duplicate: bool = False


@runtime_checkable
class Delivery(Protocol):
    """One delivery of an event to one member of a group; settle it exactly once.

    Attributes:
        event: The event.
        topic: The topic it was published to.
        partition: Its partition.
        offset: Its offset within the partition (from 0, increasing).
        key: The key it was published with (None when it had none).
        attempt: Which delivery of this event to this group this is, from 1.
        headers: Backend-neutral headers (dead-letter reason and attempts, for example).
    """

    @property
    def event(self) -> Event: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> str | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...

    async def ack(self) -> None:
        """The event was handled: never deliver it to this group again."""
        ...

    async def nack(self, *, delay: float = 0.0) -> None:
        """The event was not handled: deliver it again after ``delay`` seconds."""
        ...

    async def reject(self, reason: str) -> None:
        """Give up: publish the event to the dead-letter topic with the reason, then ack it."""
        ...

    async def extend(self, seconds: float | None = None) -> None:
        """Ask for more time before the ack deadline redelivers it (default: one deadline)."""
        ...


@runtime_checkable
class Broker(Protocol):
    """Publishes events to topics and delivers them to consumer groups."""

    capabilities: Capabilities

    async def create_topic(
        self, topic: str, *, partitions: int = 4, retention: Retention | None = None
    ) -> TopicInfo:
        """Create a topic (idempotent: an existing topic keeps its partitions)."""
        ...

    async def publish(
        self, topic: str, events: Sequence[Event], *, key: str | None = None
    ) -> list[PublishResult]:
        """Store events on a topic, in order; the key defaults to each event's partitionkey.

        Returns only when the events are durable. Creates the topic when missing.
        """
        ...

    def subscribe(
        self,
        topic: str,
        *,
        group: str,
        ack_deadline: float = 30.0,
        start: StartFrom = StartFrom.EARLIEST,
        prefetch: int = 64,
    ) -> AsyncIterator[Delivery]:
        """Join a group and yield deliveries until the iterator is closed."""
        ...

    async def replay(
        self,
        topic: str,
        *,
        group: str,
        offsets: Mapping[int, int] | None = None,
        since: datetime | None = None,
    ) -> None:
        """Move a group back (or forward): to given offsets per partition, or to a time."""
        ...

    async def aclose(self) -> None:
        """Close connections; deliveries not settled come back to the group later."""
        ...
