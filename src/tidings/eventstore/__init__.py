"""Event sourcing's foundation: append-only streams and one global, ordered log.

`open_event_store(url)` returns the store for a URL: ``sqlite:///path`` (the default),
``memory://`` or ``postgresql://...``.
"""

from __future__ import annotations

from typing import cast

from tidings.eventstore.base import StoreBase
from tidings.eventstore.ports import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Checkpoint,
    EventStore,
    Expect,
    ExpectedVersion,
    RecordedEvent,
    StreamAppend,
    StreamInfo,
    StreamMetadata,
    VerifyReport,
)
from tidings.urls import configured_url, resolve

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "Checkpoint",
    "EventStore",
    "Expect",
    "ExpectedVersion",
    "RecordedEvent",
    "StreamAppend",
    "StreamInfo",
    "StreamMetadata",
    "VerifyReport",
    "open_event_store",
]


def open_event_store(url: str | None = None) -> StoreBase:
    """Return an (unopened) event store for a URL; ``TIDINGS_EVENTSTORE_URL`` when None.

    Use it as ``async with open_event_store(url) as store:``.
    """
    url = url or configured_url("eventstore")
    cls = resolve("eventstore", url)
    return cast(StoreBase, cls(url))  # type: ignore[call-arg]
