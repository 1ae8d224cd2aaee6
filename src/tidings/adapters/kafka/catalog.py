"""The retention a topic was created with, kept in Kafka itself: the ``__tidings_topics`` topic.

Kafka has no place for "keep the last N events", and its ``retention.ms`` would delete events
that a group has not settled, so a topic's `Retention` is recorded as one message of the
one-partition topic ``__tidings_topics`` (key: the topic, value: JSON), written when the topic
is created with one. Reading it back replays that topic once per broker; the last message per
key wins. `tidings.adapters.kafka.retention` applies it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Final

from tidings.adapters.kafka.admin import Admin
from tidings.adapters.kafka.producing import Record, Sender
from tidings.adapters.kafka.reading import PartitionReader
from tidings.messaging.ports import Retention

__all__ = ["CATALOG_TOPIC", "RetentionCatalog"]

CATALOG_TOPIC: Final = "__tidings_topics"
_PAGE: Final = 10_000


class RetentionCatalog:
    """Records and reads topics' retention (see the module docstring)."""

    def __init__(self, admin: Admin, reader: PartitionReader) -> None:
        self._admin = admin
        self._reader = reader
        self._known: dict[str, Retention] | None = None

    async def record(self, sender: Sender, topic: str, retention: Retention) -> None:
        """Store a topic's retention (a no-op for no retention)."""
        if retention == Retention():
            return
        await self._admin.ensure(CATALOG_TOPIC, 1)
        age = None if retention.max_age is None else retention.max_age.total_seconds()
        value = json.dumps({"max_age": age, "max_count": retention.max_count}).encode()
        await sender.send([Record(CATALOG_TOPIC, 0, topic.encode(), value, {})])
        if self._known is not None:
            self._known[topic] = retention

    async def retention(self, topic: str) -> Retention:
        """Return a topic's recorded retention (none recorded: `Retention()`)."""
        if self._known is None:
            self._known = await self._load()
        return self._known.get(topic, Retention())

    async def all(self) -> dict[str, Retention]:
        """Return every topic's recorded retention (reloaded: other processes record too)."""
        self._known = await self._load()
        return dict(self._known)

    async def _load(self) -> dict[str, Retention]:
        known: dict[str, Retention] = {}
        if await self._admin.describe(CATALOG_TOPIC) is None:
            return known
        offset = 0
        while True:
            page = await self._reader.read(CATALOG_TOPIC, 0, offset, _PAGE)
            for message in page:
                key, value = message.key(), message.value()
                if key is not None and value is not None:
                    known[bytes(key).decode()] = _decode(bytes(value))
            if len(page) < _PAGE:
                return known
            offset = (page[-1].offset() or 0) + 1


def _decode(value: bytes) -> Retention:
    data = json.loads(value)
    age = data.get("max_age")
    return Retention(
        max_age=None if age is None else timedelta(seconds=age), max_count=data.get("max_count")
    )
