"""A read-ahead buffer between the log's subscription and a projection's batches.

The reader task follows ``subscribe`` into a bounded buffer while the runner commits the
previous batch, so reading and writing overlap. The runner takes whatever is buffered (up to a
batch's size) as one batch: many events per transaction while catching up, one event per
transaction when events arrive slowly, and never a wait for a batch to fill.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType
from typing import Self

from tidings.eventstore.ports import EventStore, RecordedEvent

__all__ = ["Feed"]


class Feed:
    """Events after a position, buffered ahead of the runner (use as an async context manager).

    Args:
        store: The event store whose log is followed.
        after: The position to follow from (the projection's checkpoint).
        limit: The most events buffered before the reader waits.
    """

    def __init__(self, store: EventStore, after: int, *, limit: int = 2000) -> None:
        self._store = store
        self._after = after
        self._limit = limit
        self._buffer: deque[RecordedEvent] = deque()
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._read(), name="tidings-projection-feed")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def empty(self) -> bool:
        """True when nothing is buffered (the runner has taken everything read so far)."""
        return not self._buffer

    async def take(self, most: int) -> list[RecordedEvent]:
        """Wait until something is buffered, then return up to ``most`` events in log order.

        Raises:
            Exception: whatever the subscription raised, once the buffer is drained.
        """
        await self._ready.wait()
        if not self._buffer and self._error is not None:
            raise self._error
        count = min(most, len(self._buffer))
        taken = [self._buffer.popleft() for _ in range(count)]
        if not self._buffer and self._error is None:
            self._ready.clear()
        if len(self._buffer) < self._limit:
            self._space.set()
        return taken

    async def aclose(self) -> None:
        """Stop reading; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _read(self) -> None:
        try:
            async for record in self._store.subscribe(after_position=self._after):
                self._buffer.append(record)
                self._ready.set()
                if len(self._buffer) >= self._limit:
                    self._space.clear()
                    await self._space.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = exc
            self._ready.set()
