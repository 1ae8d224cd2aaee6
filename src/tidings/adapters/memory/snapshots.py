"""Snapshots in this process's memory: the same contract as the durable stores, kept in dicts."""

from __future__ import annotations

import bisect

from tidings.domain.snapshots import Snapshot, SnapshotStore
from tidings.lifecycle import Resource

__all__ = ["MemorySnapshotStore"]


class MemorySnapshotStore(Resource, SnapshotStore):
    """A snapshot store in memory (for tests and single-process tools)."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._versions: dict[str, list[int]] = {}
        self._snapshots: dict[tuple[str, int], Snapshot] = {}

    async def save(self, snapshot: Snapshot) -> None:
        """Store a snapshot, replacing one of the same stream and version."""
        await self._ensure_open()
        versions = self._versions.setdefault(snapshot.stream_id, [])
        if (snapshot.stream_id, snapshot.version) not in self._snapshots:
            bisect.insort(versions, snapshot.version)
        self._snapshots[(snapshot.stream_id, snapshot.version)] = snapshot

    async def latest(self, stream_id: str, *, max_version: int | None = None) -> Snapshot | None:
        """Return the stream's newest snapshot at or below ``max_version`` (None: any)."""
        await self._ensure_open()
        versions = self._versions.get(stream_id, [])
        index = len(versions) if max_version is None else bisect.bisect_right(versions, max_version)
        return self._snapshots[(stream_id, versions[index - 1])] if index else None

    async def delete(self, stream_id: str) -> None:
        """Remove every snapshot of a stream."""
        await self._ensure_open()
        for version in self._versions.pop(stream_id, []):
            del self._snapshots[(stream_id, version)]
