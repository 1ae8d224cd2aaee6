"""How every backend stores an event: one encoded envelope plus hash-chain fields.

The envelope is the `Event` encoded by msgspec as JSON (binary data as base64, flagged), so a
row decodes straight into an `Event` in C. A stored row is a `StoredRecord`; its content hash
covers everything that identifies the record except its position, and the two chains link the
content hashes: one per stream (by version) and one for the log (by position).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from tidings.errors import EventTooLargeError
from tidings.events import Event
from tidings.eventstore.ports import RecordedEvent

__all__ = [
    "BINARY_DATA",
    "GENESIS",
    "SCAVENGED",
    "ReadRow",
    "StoredRecord",
    "chain",
    "content_hash",
    "decode_event",
    "encode_event",
    "from_micros",
    "iter_recorded",
    "recorded_from_rows",
    "to_micros",
]

BINARY_DATA: Final = 1
"""Flag: the event's data is bytes (stored base64 in the envelope)."""
SCAVENGED: Final = 2
"""Flag: the envelope was removed by retention or deletion; the hashes remain."""

GENESIS: Final = bytes(32)
"""The hash before the first record of any chain."""

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Event)
_hash_encoder: Final = msgspec.msgpack.Encoder()
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def encode_event(event: Event, *, limit: int) -> tuple[bytes, int]:
    """Return an event's stored envelope and its flags; refuse envelopes over ``limit`` bytes."""
    envelope = _encoder.encode(event)
    if len(envelope) > limit:
        raise EventTooLargeError(event.id, len(envelope), limit)
    binary = isinstance(event.data, bytes | bytearray | memoryview)
    return envelope, BINARY_DATA if binary else 0


def decode_event(envelope: bytes, flags: int) -> Event:
    """Return the event stored in an envelope."""
    event = _decoder.decode(envelope)
    if flags & BINARY_DATA and isinstance(event.data, str):
        return event.replace(data=base64.b64decode(event.data))
    return event


def content_hash(
    stream_id: str, version: int, recorded_at_us: int, flags: int, envelope: bytes
) -> bytes:
    """Return the SHA-256 of what a record says (not where it sits in the log)."""
    material = _hash_encoder.encode(
        (stream_id, version, recorded_at_us, flags & BINARY_DATA, envelope)
    )
    return hashlib.sha256(material).digest()


def chain(previous: bytes, content: bytes) -> bytes:
    """Return the next link of a hash chain."""
    return hashlib.sha256(previous + content).digest()


def to_micros(moment: datetime) -> int:
    """Return microseconds since the Unix epoch for an aware datetime."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """Return the aware UTC datetime for microseconds since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


class StoredRecord(msgspec.Struct, gc=False):
    """One row of the log as a backend stores it."""

    position: int
    stream_id: str
    version: int
    recorded_at_us: int
    flags: int
    envelope: bytes | None
    content_hash: bytes
    stream_hash: bytes
    log_hash: bytes

    def to_recorded(self) -> RecordedEvent:
        """Return the public view of the row (it must not be scavenged)."""
        assert self.envelope is not None
        return RecordedEvent(
            decode_event(self.envelope, self.flags),
            self.stream_id,
            self.version,
            self.position,
            self.recorded_at_us,
        )


ReadRow = tuple[int, str, int, int, int, bytes]
"""What a read returns per event: position, stream id, version, recorded-at µs, flags, envelope."""


def recorded_from_rows(rows: Iterable[ReadRow]) -> list[RecordedEvent]:
    """Return the public view of rows read for events (the hot path of every read)."""
    decode = _decoder.decode
    out: list[RecordedEvent] = []
    append = out.append
    for position, stream_id, version, recorded_at_us, flags, envelope in rows:
        event = decode(envelope)
        if flags & BINARY_DATA and isinstance(event.data, str):
            event = event.replace(data=base64.b64decode(event.data))
        append(RecordedEvent(event, stream_id, version, position, recorded_at_us))
    return out


def iter_recorded(rows: Iterable[ReadRow]) -> Iterator[RecordedEvent]:
    """Yield the public view of rows one at a time, decoding each only when it is asked for.

    A subscriber that handles one event at a time then holds one decoded event, not a page
    of them: the events die young and the cyclic garbage collector has little to scan.
    """
    decode = _decoder.decode
    for position, stream_id, version, recorded_at_us, flags, envelope in rows:
        event = decode(envelope)
        if flags & BINARY_DATA and isinstance(event.data, str):
            event = event.replace(data=base64.b64decode(event.data))
        yield RecordedEvent(event, stream_id, version, position, recorded_at_us)
