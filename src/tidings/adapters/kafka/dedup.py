"""The ids a broker published, per topic, to drop an event published again.

Kafka's idempotent producer only drops the producer's own retries. Publishing an event id the
topic already holds is caught here, against the ids this broker object stored (the last
``window`` per topic, oldest forgotten first). It does not see what other processes published.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["PublishedIds"]


class PublishedIds:
    """Event id -> (partition, offset) of the last ``window`` events published, per topic."""

    def __init__(self, window: int) -> None:
        self._window = window
        self._topics: dict[str, OrderedDict[str, tuple[int, int]]] = {}

    def find(self, topic: str, event_id: str) -> tuple[int, int] | None:
        """Return where an event id was stored, if remembered."""
        ids = self._topics.get(topic)
        return None if ids is None else ids.get(event_id)

    def remember(self, topic: str, event_id: str, place: tuple[int, int]) -> None:
        """Remember where an event id was stored."""
        ids = self._topics.setdefault(topic, OrderedDict())
        ids[event_id] = place
        if len(ids) > self._window:
            ids.popitem(last=False)
