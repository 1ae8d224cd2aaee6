"""How a tidings message sits in a Kafka record.

The value is the tidings envelope (the msgspec encoding the event store keeps; raw bytes for
`publish_raw`), the key the partition key as UTF-8. Headers carry the event id
(``tidings-id``, for deduplication), the envelope flags when not zero (``tidings-flags``) and
the message's own headers (dead-letter facts) as UTF-8; `Delivery.headers` shows only the
latter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from tidings.messaging.subscription import Outgoing

__all__ = ["HEADER_FLAGS", "HEADER_ID", "headers_of", "read_headers"]

HEADER_ID: Final = "tidings-id"
HEADER_FLAGS: Final = "tidings-flags"
_INTERNAL: Final = frozenset({HEADER_ID, HEADER_FLAGS})


def headers_of(message: Outgoing) -> dict[str, bytes]:
    """Return the Kafka headers of an outgoing message."""
    headers = {name: value.encode() for name, value in (message.headers or {}).items()}
    if message.event_id is not None:
        headers[HEADER_ID] = message.event_id.encode()
    if message.flags:
        headers[HEADER_FLAGS] = str(message.flags).encode()
    return headers


def read_headers(
    raw: list[tuple[str, bytes]] | None,
) -> tuple[int, Mapping[str, str] | None]:
    """Return the envelope flags and the message's own headers (None when it has none)."""
    if not raw or (len(raw) == 1 and raw[0][0] == HEADER_ID):
        return 0, None  # the common case: an event with its id and no flags
    flags, own = 0, {}
    for name, value in raw:
        if name == HEADER_FLAGS:
            flags = int(value)
        elif name not in _INTERNAL:
            own[name] = (value or b"").decode(errors="replace")
    return flags, own or None
