"""Retention by age and count as a floor per partition, never above a group's committed offset.

Kafka's own ``retention.ms`` deletes old segments whether or not a group has settled them, and
Tansu has no DeleteRecords, so retention is applied logically: each partition of a topic with
a recorded `Retention` (`tidings.adapters.kafka.catalog`) has a *floor*, kept as the committed
offsets of ``__tidings_retention``, a consumer group that never has members. Events below the
floor are gone for tidings: a new group starts at it, a replay does not go below it, and
`read_partition` starts there. The storage itself is not reclaimed.

`RetentionJob.enforce` raises each floor to the newest offset the rules allow (the end minus
``max_count``; the first event at or after ``now - max_age``), but never above any group's
committed offset, which is that group's lowest unsettled event; a floor never goes down.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Final

from tidings.adapters.kafka.admin import Admin
from tidings.adapters.kafka.catalog import RetentionCatalog
from tidings.adapters.kafka.reading import PartitionReader
from tidings.adapters.kafka.transfer import group_positions
from tidings.messaging.ports import Retention

__all__ = ["FLOOR_GROUP", "RetentionJob"]

FLOOR_GROUP: Final = "__tidings_retention"


class RetentionJob:
    """Reads and raises the retention floors of topics (see the module docstring)."""

    def __init__(self, admin: Admin, reader: PartitionReader, catalog: RetentionCatalog) -> None:
        self._admin = admin
        self._reader = reader
        self._catalog = catalog

    async def floors(self, topic: str, partitions: int) -> dict[int, int]:
        """Return the floor per partition of a topic with retention (none: empty)."""
        if await self._catalog.retention(topic) == Retention():
            return {}
        return await self._admin.group_offsets(FLOOR_GROUP, topic, partitions)

    async def enforce(self) -> int:
        """Raise the floors of every topic with retention; return how many events fell below."""
        removed = 0
        for topic, retention in (await self._catalog.all()).items():
            removed += await self._enforce(topic, retention)
        return removed

    async def _enforce(self, topic: str, retention: Retention) -> int:
        partitions = await self._admin.describe(topic)
        if partitions is None:
            return 0
        floors = await self._admin.group_offsets(FLOOR_GROUP, topic, partitions)
        cuts = await self._cuts(topic, partitions, retention)
        groups = await group_positions(self._admin, topic, partitions)
        raised = {}
        for partition, cut in cuts.items():
            cut = _below_every_group(partition, cut, groups.values())
            if cut > floors.get(partition, 0):
                raised[partition] = cut
        if not raised:
            return 0
        await self._admin.alter_group_offsets(FLOOR_GROUP, topic, raised)
        return sum(cut - floors.get(partition, 0) for partition, cut in raised.items())

    async def _cuts(self, topic: str, partitions: int, retention: Retention) -> dict[int, int]:
        numbers = range(partitions)
        cuts = dict.fromkeys(numbers, 0)
        if retention.max_count is not None:
            ends = await self._reader.ends(topic, numbers)
            for partition, end in ends.items():
                cuts[partition] = max(cuts[partition], end - retention.max_count)
        if retention.max_age is not None:
            since = int((time.time() - retention.max_age.total_seconds()) * 1000)
            for partition, offset in (await self._reader.at_time(topic, numbers, since)).items():
                cuts[partition] = max(cuts[partition], offset)
        return cuts


def _below_every_group(partition: int, cut: int, groups: Iterable[Mapping[int, int]]) -> int:
    for offsets in groups:
        if partition in offsets:
            cut = min(cut, offsets[partition])
    return cut
