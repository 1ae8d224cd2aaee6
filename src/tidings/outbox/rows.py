"""What an outbox row holds, built from an event, and the message a relay reads back from it.

Every writer (sqlite3, psycopg, SQLAlchemy) stores the same columns: the seed's minimal schema
(``id``, ``occurred_at``, ``aggregate_type``, ``aggregate_id``, ``event_type``, ``payload``,
``processed_at``) plus what ordering and the envelope need: ``seq`` (insertion order, the
order within an aggregate), ``shard`` (which relay lock covers the aggregate), ``flags``
(the payload's encoding), ``topic`` and ``partition_key``. ``payload`` is the whole event
envelope as JSON, so the relay publishes exactly the event that was written, id included.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import msgspec

from tidings.errors import ConfigurationError, MalformedEventError, TidingsError
from tidings.events import Event
from tidings.eventstore.base import DEFAULT_MAX_EVENT_BYTES
from tidings.eventstore.records import decode_event, encode_event
from tidings.messaging.base import check_name
from tidings.outbox.ports import OutboxMessage

__all__ = [
    "DEFAULT_TABLE",
    "SHARDS",
    "OutboxRow",
    "check_table",
    "decode_payload",
    "lock_key",
    "message",
    "outbox_row",
    "shard_of",
]

DEFAULT_TABLE: Final = "tidings_outbox"
SHARDS: Final = 16
"""Aggregates are spread over this many shards; one relay at a time holds a shard."""

_TABLE: Final = re.compile(r"[a-z_][a-z0-9_]{0,47}")


def check_table(table: str) -> str:
    """Return ``table`` if it is a lower-case identifier of at most 48 characters."""
    if not isinstance(table, str) or not _TABLE.fullmatch(table):
        raise ConfigurationError(f"outbox table {table!r} must match {_TABLE.pattern}")
    return table


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """The column values of one outbox row (``seq`` and ``processed_at`` are the database's)."""

    id: str
    occurred_at: datetime
    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: str
    flags: int
    topic: str
    partition_key: str
    shard: int

    def params(self) -> dict[str, object]:
        """Return the row as named statement parameters."""
        return {
            "id": self.id,
            "occurred_at": self.occurred_at,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "event_type": self.event_type,
            "payload": self.payload,
            "flags": self.flags,
            "topic": self.topic,
            "partition_key": self.partition_key,
            "shard": self.shard,
        }


def outbox_row(
    event: Event,
    *,
    topic: str,
    key: str | None = None,
    aggregate_type: str | None = None,
    aggregate_id: str | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> OutboxRow:
    """Return the row that stores ``event`` for ``topic``.

    The aggregate id defaults to ``key``, then the event's ``partitionkey``, then its
    ``subject``; the key defaults to the event's ``partitionkey``, then the aggregate id, and
    is written into the stored event's ``partitionkey`` so the broker keeps the aggregate's
    events in one partition. The aggregate type defaults to the topic.

    Raises:
        ValueError: no aggregate id can be found, or the topic name is not valid.
        EventTooLargeError: the encoded event is over ``max_event_bytes``.
    """
    if not isinstance(event, Event):
        raise TypeError(f"expected tidings.Event, got {type(event).__name__}")
    check_name("topic", topic)
    aggregate = aggregate_id or key or event.partitionkey or event.subject
    if not aggregate:
        raise ValueError(
            "an outbox event needs an aggregate id: pass aggregate_id= or key=, "
            "or give the event a partitionkey or subject"
        )
    partition_key = key or event.partitionkey or aggregate
    if event.partitionkey != partition_key:
        event = event.replace(partitionkey=partition_key)
    envelope, flags = encode_event(event, limit=max_event_bytes)
    return OutboxRow(
        id=event.id,
        occurred_at=(event.time or datetime.now(UTC)).astimezone(UTC),
        aggregate_type=aggregate_type or topic,
        aggregate_id=aggregate,
        event_type=event.type,
        payload=envelope.decode(),
        flags=flags,
        topic=topic,
        partition_key=partition_key,
        shard=shard_of(aggregate),
    )


def shard_of(aggregate_id: str) -> int:
    """Return the shard of an aggregate: CRC-32 of its id modulo `SHARDS`."""
    return zlib.crc32(aggregate_id.encode()) % SHARDS


def lock_key(table: str, aggregate_id: str) -> int:
    """Return the signed 64-bit advisory lock key that serialises one aggregate's writers."""
    digest = hashlib.blake2b(f"{table}\0{aggregate_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def decode_payload(payload: str | bytes, flags: int, *, where: str = "an outbox row") -> Event:
    """Return the event stored in a row's ``payload`` (`tidings.eventstore.records`' envelope).

    Raises:
        MalformedEventError: the payload is not an event, naming ``where`` it was read from, so
            a relay's warning says which row stops it.
    """
    envelope = payload.encode() if isinstance(payload, str) else payload
    try:
        return decode_event(envelope, flags)
    except (msgspec.DecodeError, TidingsError, ValueError, TypeError) as exc:
        raise MalformedEventError(f"{where} does not hold an event: {exc}") from exc


def message(
    position: int,
    payload: str | bytes,
    flags: int,
    topic: str,
    key: str | None,
    aggregate: tuple[str | None, str | None],
    occurred_at: datetime,
) -> OutboxMessage:
    """Return the `OutboxMessage` of a fetched row; ``aggregate`` is (type, id)."""
    return OutboxMessage(
        event=decode_payload(payload, flags, where=f"outbox row seq={position}"),
        topic=topic,
        key=key,
        aggregate_type=aggregate[0],
        aggregate_id=aggregate[1],
        occurred_at=occurred_at,
        position=position,
    )
