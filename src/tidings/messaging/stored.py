"""Turning a partition's stored bytes into `StoredMessage`s, for `TopicTransfer` implementations.

A broker that keeps the tidings envelope (`tidings.eventstore.records.encode_event`) reads a
message back with `from_envelope`; one that keeps CloudEvents JSON with `from_cloudevent_json`.
Both give bytes that are not an event back as they are (``event=None``), never raise on them:
a copier must be able to report such a message instead of losing its offset.
"""

from __future__ import annotations

import binascii
from typing import Final

import msgspec

from tidings.errors import TidingsError
from tidings.events import Event
from tidings.eventstore.records import decode_event
from tidings.messaging.transfer import StoredMessage

__all__ = ["from_cloudevent_json", "from_envelope"]

_NOT_AN_EVENT: Final = (msgspec.DecodeError, TidingsError, ValueError, TypeError, binascii.Error)


def from_envelope(
    partition: int, offset: int, key: str | None, envelope: bytes, flags: int
) -> StoredMessage:
    """Return a message stored as a tidings envelope (raw bytes when it does not decode)."""
    try:
        event = decode_event(envelope, flags)
    except _NOT_AN_EVENT:
        return StoredMessage(partition, offset, key, None, bytes(envelope))
    return StoredMessage(partition, offset, key, event)


def from_cloudevent_json(
    partition: int, offset: int, key: str | None, payload: bytes
) -> StoredMessage:
    """Return a message stored as CloudEvents JSON (raw bytes when it does not parse)."""
    try:
        event = Event.from_json(payload)
    except _NOT_AN_EVENT:
        return StoredMessage(partition, offset, key, None, bytes(payload))
    return StoredMessage(partition, offset, key, event)
