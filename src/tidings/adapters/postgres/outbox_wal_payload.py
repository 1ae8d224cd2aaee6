"""What one tableless-outbox message carries: a small versioned msgpack record.

The content of each ``pg_logical_emit_message`` call is an array: the format version, the
topic, the partition key, the aggregate type and id, when the event happened (microseconds
since the Unix epoch), the envelope flags and the CloudEvents envelope as an outbox row holds
it (`tidings.outbox.rows`), so the event id is the one the broker deduplicates on. Pure: no
I/O, no driver.
"""

from __future__ import annotations

from typing import Final

import msgspec

from tidings.cdc.pgoutput import PgOutputError, format_lsn
from tidings.events import Event
from tidings.eventstore.base import DEFAULT_MAX_EVENT_BYTES
from tidings.eventstore.records import from_micros, to_micros
from tidings.outbox.ports import OutboxMessage
from tidings.outbox.rows import decode_payload, outbox_row

__all__ = ["PAYLOAD_VERSION", "decode_payload_message", "encode_payload"]

PAYLOAD_VERSION: Final = 1
"""The format version `encode_payload` writes and `decode_payload_message` accepts."""


class _Payload(msgspec.Struct, array_like=True, frozen=True):
    """What one outbox message carries (msgpack, versioned by its first field)."""

    version: int
    topic: str
    key: str
    aggregate_type: str
    aggregate_id: str
    occurred_at_us: int
    flags: int
    envelope: str


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(_Payload)


def encode_payload(
    event: Event,
    *,
    topic: str,
    key: str | None = None,
    aggregate_type: str | None = None,
    aggregate_id: str | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> bytes:
    """Return the message content that carries ``event`` (defaults as for outbox rows).

    Raises:
        ValueError: no aggregate id can be found, or the topic name is not valid.
        EventTooLargeError: the encoded event is over ``max_event_bytes``.
    """
    row = outbox_row(
        event,
        topic=topic,
        key=key,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        max_event_bytes=max_event_bytes,
    )
    payload = _Payload(
        PAYLOAD_VERSION,
        row.topic,
        row.partition_key,
        row.aggregate_type,
        row.aggregate_id,
        to_micros(row.occurred_at),
        row.flags,
        row.payload,
    )
    return _encoder.encode(payload)


def decode_payload_message(content: bytes, position: int) -> OutboxMessage:
    """Return the outbox message a payload carries, at ``position`` (its LSN).

    Raises:
        PgOutputError: the content is not a payload of `PAYLOAD_VERSION` (the error names
            the message's LSN).
    """
    try:
        payload = _decoder.decode(content)
    except msgspec.DecodeError as exc:
        raise PgOutputError(f"outbox message at {format_lsn(position)}: {exc}") from exc
    if payload.version != PAYLOAD_VERSION:
        raise PgOutputError(
            f"outbox message at {format_lsn(position)} has version {payload.version}"
        )
    return OutboxMessage(
        event=decode_payload(
            payload.envelope, payload.flags, where=f"outbox message at {format_lsn(position)}"
        ),
        topic=payload.topic,
        key=payload.key,
        aggregate_type=payload.aggregate_type,
        aggregate_id=payload.aggregate_id,
        occurred_at=from_micros(payload.occurred_at_us),
        position=position,
    )
