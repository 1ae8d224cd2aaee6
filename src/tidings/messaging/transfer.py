"""Moving a topic between backends: what a broker offers so a topic can be copied out and in.

`tidings topics migrate SRC DST TOPIC` graduates a topic (from the embedded SQLite broker to
Kafka, say) by reading each source partition in offset order and appending the same events, with
the same keys, to the same partition of the destination, then moving each consumer group of the
destination to the copied position of its committed offset in the source. A broker that can be
a source or a destination implements `TopicTransfer` beside `tidings.messaging.Broker`.

Rules every implementation keeps:

- `read_partition` returns retained messages at offsets >= ``from_offset`` in offset order;
  a stored payload that does not decode as an event comes back with ``event=None`` and its raw
  bytes, so the copier can report it instead of silently dropping an offset.
- `append_to_partition` stores events at the end of the named partition, in order, regardless
  of their keys (the copier keeps the source's placement), with the same idempotence by event id
  as `Broker.publish`: copying again after a crash stores nothing twice.
- `group_positions` gives each group's *committed* offset per partition: its lowest unsettled
  offset, else the next offset it was never handed. Events below it are done for that group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tidings.events import Event
from tidings.messaging.ports import PublishResult, TopicInfo

__all__ = ["StoredMessage", "TopicTransfer"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as a partition holds it.

    Attributes:
        partition: Its partition.
        offset: Its offset in that partition.
        key: The key it was published with (None when it had none).
        event: The event, or None when the payload does not decode as one.
        payload: The raw payload when ``event`` is None (else empty).
    """

    partition: int
    offset: int
    key: str | None
    event: Event | None
    payload: bytes = b""


@runtime_checkable
class TopicTransfer(Protocol):
    """Reading a topic's partitions and groups out, and writing partitions in."""

    async def describe_topic(self, topic: str) -> TopicInfo | None:
        """Return the topic's partitions and retention, or None when it does not exist."""
        ...

    async def read_partition(
        self, topic: str, partition: int, *, from_offset: int = 0, limit: int = 1000
    ) -> list[StoredMessage]:
        """Return up to ``limit`` retained messages of a partition from an offset, in order."""
        ...

    async def group_positions(self, topic: str) -> Mapping[str, Mapping[int, int]]:
        """Return each group's committed offset per partition (groups that never joined: none)."""
        ...

    async def append_to_partition(
        self, topic: str, partition: int, messages: Sequence[tuple[Event, str | None]]
    ) -> list[PublishResult]:
        """Store (event, key) pairs at the end of one partition, in order; durable on return."""
        ...
