"""What the event store conformance cases share: names, events, fixtures, a subscription reader."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from types import TracebackType
from typing import Final, Self

import pytest
import pytest_asyncio

from tidings.events import Event
from tidings.eventstore.ports import EventStore, RecordedEvent
from tidings.testing.conformance.eventstore.harness import EventStoreHarness

SOURCE: Final = "/tidings/conformance"
WAIT: Final = 10.0
"""Seconds a test waits for a subscription before it fails."""
SMALL_EVENT_BYTES: Final = 1024
"""The ``max_event_bytes`` of the store the size-limit tests make."""


def stream_name(prefix: str = "stream") -> str:
    """Return a stream id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex}"


def make_events(
    count: int, *, event_type: str = "conformance.tested", tag: str = ""
) -> list[Event]:
    """Return ``count`` small events numbered in their data."""
    return [Event(type=event_type, source=SOURCE, data={"n": n, "tag": tag}) for n in range(count)]


def _versions(records: Sequence[RecordedEvent]) -> list[int]:
    return [r.version for r in records]


def _positions(records: Sequence[RecordedEvent]) -> list[int]:
    return [r.position for r in records]


def _ids(records: Sequence[RecordedEvent]) -> list[str]:
    return [r.event.id for r in records]


def _require(harness: EventStoreHarness, ability: str) -> None:
    if not getattr(harness.capabilities, ability):
        pytest.skip(f"{type(harness).__name__} does not claim capability {ability!r}")


class _Subscription:
    """Reads a subscription in a background task, so a test can append while it runs."""

    def __init__(
        self, store: EventStore, *, after_position: int = 0, types: Sequence[str] | None = None
    ) -> None:
        self._iterator = store.subscribe(after_position=after_position, types=types)
        self._queue: asyncio.Queue[RecordedEvent] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for record in self._iterator:
            self._queue.put_nowait(record)

    async def take(self, count: int) -> list[RecordedEvent]:
        """Return the next ``count`` events; fail if they do not come within `WAIT` seconds."""
        out: list[RecordedEvent] = []
        try:
            async with asyncio.timeout(WAIT):
                while len(out) < count:
                    out.append(await self._queue.get())
        except TimeoutError:
            if self._task.done():
                self._task.result()  # the subscription's own error explains more
            pytest.fail(f"the subscription yielded {len(out)} of {count} events in {WAIT}s")
        return out

    async def expect_quiet(self, seconds: float = 0.3) -> None:
        """Fail if the subscription yields anything more within ``seconds``."""
        await asyncio.sleep(seconds)
        extra = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        assert not extra, f"unexpected extra events at positions {_positions(extra)}"

    async def stop(self) -> None:
        """Cancel the reading task; fail unless the subscription stops within `WAIT` seconds."""
        self._task.cancel()
        await asyncio.wait({self._task}, timeout=WAIT)
        if not self._task.done():
            pytest.fail("the subscription went on after its task was cancelled")
        if not self._task.cancelled():
            self._task.result()  # the subscription's own error
        if isinstance(self._iterator, AsyncGenerator):
            await self._iterator.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


@pytest.mark.asyncio
class _Fixtures:
    """Fixtures every case class shares; the ``harness`` fixture comes from the backend."""

    @pytest_asyncio.fixture
    async def store(self, harness: EventStoreHarness) -> AsyncIterator[EventStore]:
        """A fresh store, closed after the test."""
        store = await harness.make_store()
        yield store
        await store.aclose()

    @pytest_asyncio.fixture
    async def small_store(self, harness: EventStoreHarness) -> AsyncIterator[EventStore]:
        """A fresh store that refuses events over `SMALL_EVENT_BYTES`."""
        store = await harness.make_store(max_event_bytes=SMALL_EVENT_BYTES)
        yield store
        await store.aclose()


def _rich_events() -> list[Event]:
    moment = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    return [
        Event(
            type="order.placed",
            source="/orders",
            data={"total": 12.5, "items": ["a", "b"], "note": "h\u00e9llo \u2713", "none": None},
            subject="order-1",
            time=moment,
            datacontenttype="application/json",
            dataschema="https://example.com/schemas/order-placed",
            partitionkey="order-1",
            correlationid="corr-1",
            causationid="cause-1",
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            tracestate="vendor=1",
            extensions={"tenant": "acme", "attempt": 3, "urgent": True},
        ),
        Event(type="order.noted", source="/orders", data="plain text", time=None),
        Event(
            type="order.noted",
            source="/orders",
            data=[1, 2.5, False],
            time=moment.astimezone(timezone(timedelta(hours=2))),
        ),
    ]
