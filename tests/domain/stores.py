"""Event store wrappers that observe or slow down what a repository does."""

from __future__ import annotations

import asyncio
from typing import Any


class Wrapped:
    """Passes everything to the wrapped event store."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class SlowReads(Wrapped):
    """Stream reads pause after reading, so that concurrent commands interleave."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.reads = 0

    async def read_stream(self, stream_id: str, **options: Any) -> Any:
        records = await self._store.read_stream(stream_id, **options)
        self.reads += 1
        await asyncio.sleep(0.02)
        return records


class CountingReads(Wrapped):
    """Remembers the first version each stream read asked for (None: from the start)."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.starts: list[int | None] = []

    async def read_stream(self, stream_id: str, **options: Any) -> Any:
        self.starts.append(options.get("from_version"))
        return await self._store.read_stream(stream_id, **options)
