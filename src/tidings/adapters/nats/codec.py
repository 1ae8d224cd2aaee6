"""How an event travels in a NATS message: CloudEvents structured mode, JSON in the payload.

The payload is ``Event.to_json()``, the CloudEvents JSON format, and the message says so with
``content-type: application/cloudevents+json``. Structured mode is the one content mode every
CloudEvents NATS binding (and SDK: Go, Rust, Java, .NET) reads, and it is faster here than
binary mode: the event decodes from one JSON document in C, while binary mode would need
nats-py to parse a header line per attribute in Python on every delivery.

Headers besides the content type:

- ``Nats-Msg-Id``: the event id (the dead-letter copy uses ``<group>/<event id>``), which
  JetStream uses to drop a duplicate publish within the stream's duplicate window;
- ``tidings-key``: the key the event was published with, only when it is not the event's own
  ``partitionkey``;
- ``tidings-*``: backend-neutral headers such as the dead-letter reason, given back as
  `Delivery.headers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from tidings.events import Event

__all__ = ["CONTENT_TYPE", "KEY_HEADER", "MSG_ID", "decode", "encode"]

MSG_ID: Final = "Nats-Msg-Id"
CONTENT_TYPE: Final = "application/cloudevents+json"
KEY_HEADER: Final = "tidings-key"
_OWN_PREFIX: Final = "tidings-"


def encode(
    event: Event,
    key: str | None,
    *,
    msg_id: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Return the payload and headers of the message that carries ``event``."""
    headers = {MSG_ID: msg_id or event.id, "content-type": CONTENT_TYPE}
    if key is not None and key != event.partitionkey:
        headers[KEY_HEADER] = key
    if extra:
        headers.update(extra)
    return event.to_json(), headers


def decode(
    payload: bytes, headers: Mapping[str, str] | None
) -> tuple[Event, str | None, dict[str, str]]:
    """Return the event, its key and its backend-neutral headers from a message."""
    event = Event.from_json(payload)
    if not headers:
        return event, event.partitionkey, {}
    own = {
        name: value
        for name, value in headers.items()
        if isinstance(name, str) and name.startswith(_OWN_PREFIX)
    }
    key = own.pop(KEY_HEADER, event.partitionkey)
    return event, key, own
