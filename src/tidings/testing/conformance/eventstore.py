"""The event store conformance suite: what every `EventStore` backend must do, as tests.

An adapter runs it by giving pytest a ``harness`` fixture and subclassing the suite::

    # conftest.py
    import pytest

    pytest.register_assert_rewrite("tidings.testing")


    @pytest.fixture
    async def harness():
        made = MyHarness()  # an EventStoreHarness
        yield made
        await made.aclose()


    # test_my_store.py
    from tidings.testing.conformance.eventstore import EventStoreConformance


    class TestMyStore(EventStoreConformance):
        pass

Every test makes its own store (`EventStoreHarness.make_store`: fresh, empty, isolated) and its
own stream names, so no test sees another's events. Abilities beyond the contract are declared
in `Capabilities`; a test that needs one the backend lacks is skipped, and says so.

The cases are grouped by topic in mixin classes. They stay in one module, longer than usual, so
that an adapter imports one name and reads one file to see what it must do.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import TracebackType
from typing import Final, Protocol, Self

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.adapters.memory.eventstore import MemoryEventStore
from tidings.errors import (
    CheckpointConflict,
    ClosedError,
    ConcurrencyConflict,
    EventTooLargeError,
    StreamDeletedError,
)
from tidings.events import Event
from tidings.eventstore.ports import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Checkpoint,
    EventStore,
    RecordedEvent,
    StreamAppend,
    StreamMetadata,
)
from tidings.eventstore.records import (
    GENESIS,
    StoredRecord,
    chain,
    content_hash,
    encode_event,
    to_micros,
)

__all__ = [
    "Capabilities",
    "EventStoreConformance",
    "EventStoreHarness",
    "MemoryHarness",
    "make_events",
    "stream_name",
]

SOURCE: Final = "/tidings/conformance"
WAIT: Final = 10.0
"""Seconds a test waits for a subscription before it fails."""
SMALL_EVENT_BYTES: Final = 1024
"""The ``max_event_bytes`` of the store the size-limit tests make."""


# -- what a backend provides ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do beyond the contract every event store meets.

    Attributes:
        durable: Events survive closing the store and opening its storage again.
        cross_process: Several stores opened over one storage share one log; appends through
            one are seen, and wake subscribers, in another.
        tamper: `EventStoreHarness.tamper_envelope` and ``delete_record`` work.
        insert: `EventStoreHarness.insert_record` works.
        recorded_heads: The store records each stream's head apart from its rows, so verify
            also catches a removed last record and a well-forged extra one.
    """

    durable: bool = False
    cross_process: bool = False
    tamper: bool = False
    insert: bool = False
    recorded_heads: bool = False


class EventStoreHarness(Protocol):
    """What a backend gives the suite: fresh stores, and ways to damage their storage.

    Subclass it explicitly. The optional methods raise `NotImplementedError` here; implement
    the ones `capabilities` claims. Methods run on the test's event loop.
    """

    capabilities: Capabilities

    async def make_store(self, *, max_event_bytes: int | None = None) -> EventStore:
        """Return a fresh, empty, isolated, opened store (a new file, a new schema)."""
        ...

    async def aclose(self) -> None:
        """Close every store made and remove its storage; idempotent."""
        ...

    async def open_again(self, store: EventStore) -> EventStore:
        """Return another opened store over ``store``'s storage (durable, cross_process)."""
        raise NotImplementedError

    async def tamper_envelope(self, store: EventStore, position: int, envelope: bytes) -> None:
        """Overwrite the stored envelope of the record at a position, leaving its hashes."""
        raise NotImplementedError

    async def delete_record(self, store: EventStore, position: int) -> None:
        """Remove the record at a position from storage, behind the store's back."""
        raise NotImplementedError

    async def insert_record(self, store: EventStore, record: StoredRecord) -> None:
        """Write a raw record into storage as given, behind the store's back."""
        raise NotImplementedError


class MemoryHarness(EventStoreHarness):
    """The harness of `MemoryEventStore`: the damage helpers edit its in-memory records."""

    capabilities = Capabilities(tamper=True, insert=True)

    def __init__(self) -> None:
        self._stores: list[MemoryEventStore] = []

    async def make_store(self, *, max_event_bytes: int | None = None) -> EventStore:
        """Return a new, opened `MemoryEventStore`."""
        store = MemoryEventStore(max_event_bytes=max_event_bytes)
        self._stores.append(store)
        return await store.open()

    async def aclose(self) -> None:
        """Close every store made."""
        for store in self._stores:
            await store.aclose()

    async def tamper_envelope(self, store: EventStore, position: int, envelope: bytes) -> None:
        """Overwrite a record's envelope in place."""
        _memory_record(store, position).envelope = envelope

    async def delete_record(self, store: EventStore, position: int) -> None:
        """Remove a record from the log and from its stream."""
        memory, record = _memory(store), _memory_record(store, position)
        memory._log.remove(record)
        memory._streams[record.stream_id].records.remove(record)

    async def insert_record(self, store: EventStore, record: StoredRecord) -> None:
        """Put a record into the log and its (existing) stream, in order."""
        memory = _memory(store)
        bisect.insort(memory._log, record, key=lambda r: r.position)
        bisect.insort(memory._streams[record.stream_id].records, record, key=lambda r: r.version)


def _memory(store: EventStore) -> MemoryEventStore:
    assert isinstance(store, MemoryEventStore), f"not a MemoryEventStore: {store!r}"
    return store


def _memory_record(store: EventStore, position: int) -> StoredRecord:
    return next(r for r in _memory(store)._log if r.position == position)


# -- helpers for tests ------------------------------------------------------------------------


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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if isinstance(self._iterator, AsyncGenerator):
            await self._iterator.aclose()


# -- the suite --------------------------------------------------------------------------------


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


class AppendCases(_Fixtures):
    """Appending to one stream: round trip, versions, expected-version rules, atomicity."""

    async def test_read_stream_returns_events_as_appended(self, store: EventStore) -> None:
        sid, events = stream_name(), _rich_events()
        await store.append(sid, events)
        records = await store.read_stream(sid)
        assert [r.event for r in records] == events
        assert [r.event.to_json() for r in records] == [e.to_json() for e in events]

    async def test_read_stream_preserves_bytes_data(self, store: EventStore) -> None:
        sid = stream_name()
        event = Event(type="file.uploaded", source="/files", data=b"\x00\x01\xfe\xffbinary")
        await store.append(sid, [event])
        [record] = await store.read_stream(sid)
        assert record.event.data == b"\x00\x01\xfe\xffbinary"
        assert record.event == event

    async def test_append_numbers_versions_from_one(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(2))
        await store.append(sid, make_events(3))
        records = await store.read_stream(sid)
        assert _versions(records) == [1, 2, 3, 4, 5]
        assert {r.stream_id for r in records} == {sid}

    async def test_append_returns_new_version_and_last_position(self, store: EventStore) -> None:
        first, second = stream_name("first"), stream_name("second")
        await store.append(first, make_events(2))
        result = await store.append(second, make_events(3))
        assert result == AppendResult(second, 3, 5)

    async def test_recorded_at_is_aware_utc_near_now(self, store: EventStore) -> None:
        sid = stream_name()
        before = datetime.now(UTC) - timedelta(seconds=5)
        await store.append(sid, make_events(1))
        [record] = await store.read_stream(sid)
        assert record.recorded_at.utcoffset() == timedelta(0)
        assert before <= record.recorded_at <= datetime.now(UTC) + timedelta(seconds=5)

    async def test_append_no_stream_succeeds_on_new_stream(self, store: EventStore) -> None:
        result = await store.append(stream_name(), make_events(1), expected_version=NO_STREAM)
        assert result.version == 1

    async def test_append_no_stream_conflicts_on_existing_stream(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(1))
        with pytest.raises(ConcurrencyConflict) as caught:
            await store.append(sid, make_events(1), expected_version=NO_STREAM)
        assert (caught.value.expected, caught.value.actual) == ("no_stream", 1)

    async def test_append_stream_exists_conflicts_on_new_stream(self, store: EventStore) -> None:
        sid = stream_name()
        with pytest.raises(ConcurrencyConflict) as caught:
            await store.append(sid, make_events(1), expected_version=STREAM_EXISTS)
        assert (caught.value.expected, caught.value.actual) == ("stream_exists", None)

    async def test_append_stream_exists_succeeds_on_existing_stream(
        self, store: EventStore
    ) -> None:
        sid = stream_name()
        await store.append(sid, make_events(1))
        result = await store.append(sid, make_events(1), expected_version=STREAM_EXISTS)
        assert result.version == 2

    async def test_append_exact_version_succeeds_when_current(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(2), expected_version=0)
        result = await store.append(sid, make_events(1), expected_version=2)
        assert result.version == 3

    async def test_append_exact_version_conflict_carries_expected_and_actual(
        self, store: EventStore
    ) -> None:
        sid = stream_name()
        await store.append(sid, make_events(2))
        with pytest.raises(ConcurrencyConflict) as caught:
            await store.append(sid, make_events(1), expected_version=1)
        assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == (sid, 1, 2)

    async def test_append_exact_version_conflicts_on_new_stream(self, store: EventStore) -> None:
        sid = stream_name()
        with pytest.raises(ConcurrencyConflict) as caught:
            await store.append(sid, make_events(1), expected_version=3)
        assert (caught.value.expected, caught.value.actual) == (3, None)

    async def test_append_any_succeeds_on_new_and_existing_stream(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(1), expected_version=ANY)
        result = await store.append(sid, make_events(1), expected_version=ANY)
        assert result.version == 2

    async def test_append_conflict_stores_nothing(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(1))
        with pytest.raises(ConcurrencyConflict):
            await store.append(sid, make_events(3), expected_version=0)
        assert _versions(await store.read_stream(sid)) == [1]
        assert await store.head_position() == 1

    async def test_append_stores_nothing_when_one_event_is_too_large(
        self, small_store: EventStore
    ) -> None:
        sid, big = stream_name(), Event(type="t", source=SOURCE, data="x" * SMALL_EVENT_BYTES)
        with pytest.raises(EventTooLargeError):
            await small_store.append(sid, [*make_events(1), big, *make_events(1)])
        assert await small_store.read_stream(sid) == []
        assert await small_store.head_position() == 0


class AppendManyCases(_Fixtures):
    """Appending to several streams, and a checkpoint, in one commit."""

    async def test_append_many_assigns_positions_in_given_order(self, store: EventStore) -> None:
        first, second = stream_name("first"), stream_name("second")
        results = await store.append_many(
            [StreamAppend(first, make_events(2)), StreamAppend(second, make_events(1))]
        )
        assert results == [AppendResult(first, 2, 2), AppendResult(second, 1, 3)]
        assert [r.stream_id for r in await store.read_all()] == [first, first, second]

    async def test_append_many_stores_nothing_when_one_stream_conflicts(
        self, store: EventStore
    ) -> None:
        fresh, stale = stream_name("fresh"), stream_name("stale")
        await store.append(stale, make_events(1))
        with pytest.raises(ConcurrencyConflict) as caught:
            await store.append_many(
                [
                    StreamAppend(fresh, make_events(2), NO_STREAM),
                    StreamAppend(stale, make_events(1), 5),
                ]
            )
        assert caught.value.stream_id == stale
        assert await store.read_stream(fresh) == []
        assert await store.head_position() == 1

    async def test_append_many_commits_checkpoint_with_events(self, store: EventStore) -> None:
        name, sid = stream_name("consumer"), stream_name()
        await store.append_many([StreamAppend(sid, make_events(1))], checkpoint=Checkpoint(name, 7))
        with pytest.raises(CheckpointConflict) as caught:
            await store.append_many(
                [StreamAppend(sid, make_events(1))], checkpoint=Checkpoint(name, 7)
            )
        assert (caught.value.name, caught.value.stored, caught.value.given) == (name, 7, 7)
        assert _versions(await store.read_stream(sid)) == [1]

    async def test_append_many_repeated_checkpoint_stores_nothing(self, store: EventStore) -> None:
        name, sid, other = stream_name("consumer"), stream_name(), stream_name("other")
        await store.append_many([StreamAppend(sid, make_events(1))], checkpoint=Checkpoint(name, 3))
        with pytest.raises(CheckpointConflict):
            await store.append_many(
                [StreamAppend(other, make_events(2))], checkpoint=Checkpoint(name, 3)
            )
        assert await store.read_stream(other) == []
        assert await store.head_position() == 1

    async def test_append_many_lower_checkpoint_conflicts(self, store: EventStore) -> None:
        name, sid = stream_name("consumer"), stream_name()
        await store.append_many([StreamAppend(sid, make_events(1))], checkpoint=Checkpoint(name, 9))
        with pytest.raises(CheckpointConflict) as caught:
            await store.append_many(
                [StreamAppend(sid, make_events(1))], checkpoint=Checkpoint(name, 4)
            )
        assert (caught.value.stored, caught.value.given) == (9, 4)
        assert _versions(await store.read_stream(sid)) == [1]

    async def test_append_many_higher_checkpoint_succeeds(self, store: EventStore) -> None:
        name, sid = stream_name("consumer"), stream_name()
        for position in (2, 5):
            await store.append_many(
                [StreamAppend(sid, make_events(1))], checkpoint=Checkpoint(name, position)
            )
        assert _versions(await store.read_stream(sid)) == [1, 2]

    async def test_append_many_checkpoints_are_independent_per_name(
        self, store: EventStore
    ) -> None:
        sid = stream_name()
        for name in (stream_name("one"), stream_name("two")):
            await store.append_many(
                [StreamAppend(sid, make_events(1))], checkpoint=Checkpoint(name, 4)
            )
        assert _versions(await store.read_stream(sid)) == [1, 2]

    async def test_append_many_conflict_leaves_checkpoint_unchanged(
        self, store: EventStore
    ) -> None:
        name, sid = stream_name("consumer"), stream_name()
        await store.append(sid, make_events(1))
        with pytest.raises(ConcurrencyConflict):
            await store.append_many(
                [StreamAppend(sid, make_events(1), NO_STREAM)], checkpoint=Checkpoint(name, 6)
            )
        await store.append_many([StreamAppend(sid, make_events(1))], checkpoint=Checkpoint(name, 6))
        assert _versions(await store.read_stream(sid)) == [1, 2]


class RaceCases(_Fixtures):
    """Appends racing for the same version: one winner, clean losers."""

    async def test_append_race_has_one_winner_per_round(self, store: EventStore) -> None:
        sid, rounds, racers = stream_name(), 4, 16
        for round_ in range(rounds):
            outcomes = await asyncio.gather(
                *(
                    store.append(
                        sid, make_events(2, tag=f"{round_}-{racer}"), expected_version=2 * round_
                    )
                    for racer in range(racers)
                ),
                return_exceptions=True,
            )
            losers = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
            assert sum(isinstance(o, AppendResult) for o in outcomes) == 1, outcomes
            assert len(losers) == racers - 1, outcomes
            assert {(c.expected, c.actual) for c in losers} == {(2 * round_, 2 * round_ + 2)}
        assert await store.head_position() == 2 * rounds

    async def test_append_race_leaves_no_partial_batches(self, store: EventStore) -> None:
        sid = stream_name()
        for round_ in range(3):
            await asyncio.gather(
                *(
                    store.append(
                        sid, make_events(3, tag=f"{round_}-{r}"), expected_version=3 * round_
                    )
                    for r in range(16)
                ),
                return_exceptions=True,
            )
        records = await store.read_stream(sid)
        assert _versions(records) == list(range(1, 10))
        for round_ in range(3):
            batch = [r.event.data for r in records[3 * round_ : 3 * round_ + 3]]
            possible = [[{"n": n, "tag": f"{round_}-{r}"} for n in range(3)] for r in range(16)]
            assert batch in possible, f"round {round_} mixed batches: {batch}"

    async def test_append_race_across_stores_has_one_winner(
        self, store: EventStore, harness: EventStoreHarness
    ) -> None:
        _require(harness, "cross_process")
        other, sid = await harness.open_again(store), stream_name()
        try:
            outcomes = await asyncio.gather(
                *(
                    s.append(sid, make_events(1), expected_version=NO_STREAM)
                    for s in [store, other] * 4
                ),
                return_exceptions=True,
            )
        finally:
            await other.aclose()
        assert sum(isinstance(o, AppendResult) for o in outcomes) == 1, outcomes
        assert sum(isinstance(o, ConcurrencyConflict) for o in outcomes) == 7, outcomes


class ReadStreamCases(_Fixtures):
    """Reading one stream: direction, bounds, and how it was at a version or a time."""

    async def test_read_stream_of_unknown_stream_is_empty(self, store: EventStore) -> None:
        assert await store.read_stream(stream_name("unknown")) == []

    async def test_read_stream_backwards_returns_newest_first(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(4))
        assert _versions(await store.read_stream(sid, backwards=True)) == [4, 3, 2, 1]

    async def test_read_stream_from_version_is_inclusive(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(5))
        assert _versions(await store.read_stream(sid, from_version=3)) == [3, 4, 5]

    async def test_read_stream_backwards_from_version_goes_down(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(5))
        records = await store.read_stream(sid, from_version=3, backwards=True)
        assert _versions(records) == [3, 2, 1]

    async def test_read_stream_with_limit_returns_first_events(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(5))
        assert _versions(await store.read_stream(sid, from_version=2, limit=2)) == [2, 3]
        assert _versions(await store.read_stream(sid, backwards=True, limit=2)) == [5, 4]

    async def test_read_stream_from_version_past_end_is_empty(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(2))
        assert await store.read_stream(sid, from_version=3) == []

    async def test_read_stream_as_of_version_hides_later_events(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(5))
        assert _versions(await store.read_stream(sid, as_of=3)) == [1, 2, 3]

    async def test_read_stream_as_of_time_hides_later_events(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(2))
        [*_, last] = await store.read_stream(sid)
        await asyncio.sleep(0.01)  # a later commit gets a later recorded_at
        await store.append(sid, make_events(2))
        assert _versions(await store.read_stream(sid, as_of=last.recorded_at)) == [1, 2]


class ReadAllCases(_Fixtures):
    """Reading the global log: order, density, filters, paging, head."""

    async def test_read_all_of_empty_store_is_empty(self, store: EventStore) -> None:
        assert await store.read_all() == []
        assert await store.head_position() == 0

    async def test_read_all_returns_log_in_dense_position_order(self, store: EventStore) -> None:
        one, two = stream_name("one"), stream_name("two")
        appended = [make_events(2), make_events(1), make_events(3)]
        for sid, events in zip([one, two, one], appended, strict=True):
            await store.append(sid, events)
        records = await store.read_all()
        assert _positions(records) == [1, 2, 3, 4, 5, 6]
        assert _ids(records) == [e.id for events in appended for e in events]
        assert [r.stream_id for r in records] == [one, one, two, one, one, one]

    async def test_head_position_is_last_position(self, store: EventStore) -> None:
        await store.append(stream_name(), make_events(3))
        await store.append(stream_name(), make_events(2))
        assert await store.head_position() == 5

    async def test_read_all_after_position_starts_after_it(self, store: EventStore) -> None:
        await store.append(stream_name(), make_events(5))
        assert _positions(await store.read_all(after_position=3)) == [4, 5]
        assert await store.read_all(after_position=5) == []

    async def test_read_all_with_limit_returns_first_events(self, store: EventStore) -> None:
        await store.append(stream_name(), make_events(5))
        assert _positions(await store.read_all(after_position=1, limit=2)) == [2, 3]

    async def test_read_all_with_types_returns_only_those_types(self, store: EventStore) -> None:
        sid = stream_name()
        for event_type in ("a.one", "b.two", "a.one", "c.three", "b.two"):
            await store.append(sid, make_events(1, event_type=event_type))
        records = await store.read_all(types=["a.one", "c.three"])
        assert _positions(records) == [1, 3, 4]

    async def test_read_all_with_types_and_limit_returns_first_matches(
        self, store: EventStore
    ) -> None:
        sid = stream_name()
        for event_type in ("a", "b", "a", "b", "a", "a"):
            await store.append(sid, make_events(1, event_type=event_type))
        assert _positions(await store.read_all(types=["a"], limit=2)) == [1, 3]
        assert _positions(await store.read_all(after_position=3, types=["a"], limit=2)) == [5, 6]

    async def test_read_all_pages_past_a_thousand_events(self, store: EventStore) -> None:
        for _ in range(12):
            await store.append(stream_name(), make_events(100))
        assert _positions(await store.read_all()) == list(range(1, 1201))
        assert _positions(await store.read_all(after_position=950, limit=100)) == list(
            range(951, 1051)
        )


class SubscribeCases(_Fixtures):
    """Subscriptions: catch-up then live, never skipping, never repeating."""

    async def test_subscribe_yields_stored_events_in_position_order(
        self, store: EventStore
    ) -> None:
        await store.append(stream_name(), make_events(3))
        await store.append(stream_name(), make_events(2))
        async with _Subscription(store) as subscription:
            assert _positions(await subscription.take(5)) == [1, 2, 3, 4, 5]

    async def test_subscribe_goes_live_without_gap_or_duplicate_under_writers(
        self, store: EventStore
    ) -> None:
        await store.append(stream_name("before"), make_events(20))
        async with _Subscription(store) as subscription:
            await asyncio.gather(*(self._write_singly(store, 10) for _ in range(8)))
            seen = await subscription.take(100)
            await subscription.expect_quiet()
        logged = await store.read_all()
        assert _positions(seen) == list(range(1, 101))
        assert _ids(seen) == _ids(logged)

    @staticmethod
    async def _write_singly(store: EventStore, count: int) -> None:
        sid = stream_name("writer")
        for _ in range(count):
            await store.append(sid, make_events(1))

    async def test_subscribe_resumes_after_a_position_without_repeats(
        self, store: EventStore
    ) -> None:
        await store.append(stream_name(), make_events(10))
        async with _Subscription(store) as first:
            checkpoint = (await first.take(4))[-1].position
        async with _Subscription(store, after_position=checkpoint) as resumed:
            assert _positions(await resumed.take(6)) == [5, 6, 7, 8, 9, 10]
            await store.append(stream_name(), make_events(1))
            assert _positions(await resumed.take(1)) == [11]

    async def test_subscribe_with_types_yields_only_those_and_goes_live(
        self, store: EventStore
    ) -> None:
        sid = stream_name()
        for event_type in ("wanted", "other", "wanted"):
            await store.append(sid, make_events(1, event_type=event_type))
        async with _Subscription(store, types=["wanted"]) as subscription:
            assert _positions(await subscription.take(2)) == [1, 3]
            await store.append(sid, make_events(2, event_type="other"))
            await store.append(sid, make_events(1, event_type="wanted"))
            assert _positions(await subscription.take(1)) == [6]
            await subscription.expect_quiet()

    async def test_subscribe_skips_deleted_stream_events(self, store: EventStore) -> None:
        doomed, kept = stream_name("doomed"), stream_name("kept")
        await store.append(doomed, make_events(2))
        await store.append(kept, make_events(2))
        await store.delete_stream(doomed)
        async with _Subscription(store) as subscription:
            assert _positions(await subscription.take(2)) == [3, 4]
            await store.append(kept, make_events(1))
            assert _positions(await subscription.take(1)) == [5]
            await subscription.expect_quiet()

    async def test_subscribe_wakes_for_appends_through_another_store(
        self, store: EventStore, harness: EventStoreHarness
    ) -> None:
        _require(harness, "cross_process")
        other = await harness.open_again(store)
        try:
            async with _Subscription(store) as subscription:
                await other.append(stream_name(), make_events(1))
                assert _positions(await subscription.take(1)) == [1]
        finally:
            await other.aclose()


class MetadataCases(_Fixtures):
    """Stream metadata: retention by count and age, deletion, listing."""

    async def test_stream_metadata_of_unknown_stream_is_default(self, store: EventStore) -> None:
        assert await store.stream_metadata(stream_name()) == StreamMetadata()

    async def test_stream_metadata_round_trips(self, store: EventStore) -> None:
        sid, metadata = stream_name(), StreamMetadata(max_count=3, max_age=timedelta(hours=2))
        await store.append(sid, make_events(1))
        await store.set_stream_metadata(sid, metadata)
        assert await store.stream_metadata(sid) == metadata

    async def test_max_count_hides_old_events_from_read_stream(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(5))
        await store.set_stream_metadata(sid, StreamMetadata(max_count=2))
        assert _versions(await store.read_stream(sid)) == [4, 5]
        assert _versions(await store.read_stream(sid, backwards=True)) == [5, 4]

    async def test_max_count_applies_to_later_appends(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(2))
        await store.set_stream_metadata(sid, StreamMetadata(max_count=2))
        await store.append(sid, make_events(1))
        assert _versions(await store.read_stream(sid)) == [2, 3]

    async def test_max_count_hides_old_events_from_read_all_keeping_positions(
        self, store: EventStore
    ) -> None:
        kept, trimmed = stream_name("kept"), stream_name("trimmed")
        await store.append(kept, make_events(2))
        await store.append(trimmed, make_events(4))
        await store.append(kept, make_events(1))
        await store.set_stream_metadata(trimmed, StreamMetadata(max_count=1))
        assert _positions(await store.read_all()) == [1, 2, 6, 7]
        assert await store.head_position() == 7

    async def test_max_age_hides_events_older_than_the_age(self, store: EventStore) -> None:
        aged, kept = stream_name("aged"), stream_name("kept")
        await store.append(aged, make_events(2))
        await store.append(kept, make_events(1))
        await asyncio.sleep(0.3)
        await store.set_stream_metadata(aged, StreamMetadata(max_age=timedelta(seconds=0.1)))
        assert await store.read_stream(aged) == []
        assert _positions(await store.read_all()) == [3]

    async def test_max_age_keeps_events_younger_than_the_age(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(2))
        await store.set_stream_metadata(sid, StreamMetadata(max_age=timedelta(hours=1)))
        assert _versions(await store.read_stream(sid)) == [1, 2]
        assert _positions(await store.read_all()) == [1, 2]

    async def test_append_to_deleted_stream_raises_stream_deleted(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(1))
        await store.delete_stream(sid)
        with pytest.raises(StreamDeletedError) as caught:
            await store.append(sid, make_events(1))
        assert caught.value.stream_id == sid

    async def test_read_stream_of_deleted_stream_raises_stream_deleted(
        self, store: EventStore
    ) -> None:
        sid = stream_name()
        await store.append(sid, make_events(1))
        await store.delete_stream(sid)
        with pytest.raises(StreamDeletedError):
            await store.read_stream(sid)

    async def test_read_all_skips_deleted_stream_keeping_positions(self, store: EventStore) -> None:
        doomed, kept = stream_name("doomed"), stream_name("kept")
        await store.append(kept, make_events(1))
        await store.append(doomed, make_events(2))
        await store.append(kept, make_events(1))
        await store.delete_stream(doomed)
        assert _positions(await store.read_all()) == [1, 4]
        assert await store.head_position() == 4

    async def test_delete_unknown_stream_refuses_later_appends(self, store: EventStore) -> None:
        sid = stream_name()
        await store.delete_stream(sid)
        with pytest.raises(StreamDeletedError):
            await store.append(sid, make_events(1), expected_version=NO_STREAM)

    async def test_set_stream_metadata_cannot_undelete(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(1))
        await store.delete_stream(sid)
        await store.set_stream_metadata(sid, StreamMetadata(max_count=5, deleted=False))
        assert (await store.stream_metadata(sid)).deleted
        with pytest.raises(StreamDeletedError):
            await store.append(sid, make_events(1))

    async def test_streams_lists_ids_in_order_with_versions(self, store: EventStore) -> None:
        names = sorted(stream_name("listed") for _ in range(3))
        for count, sid in enumerate(names, start=1):
            await store.append(sid, make_events(count))
        listed = await store.streams()
        assert [(s.stream_id, s.version) for s in listed] == list(
            zip(names, [1, 2, 3], strict=True)
        )

    async def test_streams_pages_with_after_and_limit(self, store: EventStore) -> None:
        names = sorted(stream_name("paged") for _ in range(5))
        for sid in names:
            await store.append(sid, make_events(1))
        page = await store.streams(after=names[1], limit=2)
        assert [s.stream_id for s in page] == names[2:4]
        assert await store.streams(after=names[4]) == []

    async def test_streams_reports_metadata(self, store: EventStore) -> None:
        sid = stream_name()
        await store.append(sid, make_events(1))
        await store.set_stream_metadata(sid, StreamMetadata(max_count=9))
        [info] = await store.streams()
        assert info.metadata == StreamMetadata(max_count=9)


class VerifyCases(_Fixtures):
    """The hash chains: a clean store verifies; damage is found and located."""

    async def test_verify_passes_on_empty_store(self, store: EventStore) -> None:
        report = await store.verify()
        assert (report.ok, report.records, report.problem) == (True, 0, None)

    async def test_verify_passes_on_clean_store(self, store: EventStore) -> None:
        await store.append(stream_name(), make_events(3))
        await store.append_many(
            [
                StreamAppend(stream_name(), _rich_events()),
                StreamAppend(stream_name(), make_events(1)),
            ]
        )
        report = await store.verify()
        assert (report.ok, report.records, report.streams, report.problem) == (True, 7, 3, None)

    async def test_verify_passes_after_retention_hides_events(self, store: EventStore) -> None:
        trimmed, doomed = stream_name("trimmed"), stream_name("doomed")
        await store.append(trimmed, make_events(4))
        await store.append(doomed, make_events(2))
        await store.set_stream_metadata(trimmed, StreamMetadata(max_count=1))
        await store.delete_stream(doomed)
        await store.append(trimmed, make_events(1))
        report = await store.verify()
        assert (report.ok, report.records, report.problem) == (True, 7, None)

    async def test_verify_reports_altered_envelope_at_its_position(
        self, store: EventStore, harness: EventStoreHarness
    ) -> None:
        _require(harness, "tamper")
        sid = stream_name()
        await store.append(sid, make_events(3))
        target = (await store.read_stream(sid))[1]
        forged = target.event.replace(data={"n": 1_000_000, "tag": "forged"})
        envelope, _ = encode_event(forged, limit=SMALL_EVENT_BYTES)
        await harness.tamper_envelope(store, target.position, envelope)
        report = await store.verify()
        assert (report.ok, report.position) == (False, target.position), report
        assert f"position {target.position}" in (report.problem or "")

    async def test_verify_reports_removed_record(
        self, store: EventStore, harness: EventStoreHarness
    ) -> None:
        _require(harness, "tamper")
        await store.append(stream_name(), make_events(2))
        await store.append(stream_name(), make_events(2))
        await harness.delete_record(store, 2)
        report = await store.verify()
        assert (report.ok, report.position) == (False, 3), report

    async def test_verify_reports_removed_last_record(
        self, store: EventStore, harness: EventStoreHarness
    ) -> None:
        _require(harness, "tamper")
        _require(harness, "recorded_heads")
        await store.append(stream_name(), make_events(3))
        await harness.delete_record(store, 3)
        report = await store.verify()
        assert not report.ok, report

    async def test_verify_reports_inserted_record_at_its_position(
        self, store: EventStore, harness: EventStoreHarness
    ) -> None:
        _require(harness, "insert")
        sid = stream_name()
        await store.append(sid, make_events(2))
        await harness.insert_record(store, _forged_record(sid, version=3, position=3))
        report = await store.verify()
        assert (report.ok, report.position) == (False, 3), report

    async def test_verify_reports_forged_record_with_valid_links(
        self, store: EventStore, harness: EventStoreHarness
    ) -> None:
        _require(harness, "insert")
        _require(harness, "recorded_heads")
        sid = stream_name()
        await store.append(sid, make_events(2))
        last = await _replayed_last(store)
        await harness.insert_record(store, _forged_record(sid, version=3, position=3, after=last))
        report = await store.verify()
        assert not report.ok, report


async def _replayed_last(store: EventStore) -> StoredRecord:
    """Return the log's last record as stored, its hashes recomputed from what reads return."""
    # The chains are a pure function of the records, so whoever can read them can extend them;
    # only heads recorded apart from the rows catch such a forgery.
    log_hash, stream_hashes, last = GENESIS, dict[str, bytes](), None
    for record in await store.read_all():
        envelope, flags = encode_event(record.event, limit=2**31)
        micros = to_micros(record.recorded_at)
        digest = content_hash(record.stream_id, record.version, micros, flags, envelope)
        log_hash = chain(log_hash, digest)
        stream_hashes[record.stream_id] = chain(
            stream_hashes.get(record.stream_id, GENESIS), digest
        )
        last = StoredRecord(
            position=record.position,
            stream_id=record.stream_id,
            version=record.version,
            recorded_at_us=micros,
            flags=flags,
            envelope=envelope,
            content_hash=digest,
            stream_hash=stream_hashes[record.stream_id],
            log_hash=log_hash,
        )
    assert last is not None, "the store is empty"
    return last


def _forged_record(
    stream_id: str, *, version: int, position: int, after: StoredRecord | None = None
) -> StoredRecord:
    """A record written behind the store's back; with ``after``, its links are valid."""
    envelope, flags = encode_event(make_events(1, tag="forged")[0], limit=SMALL_EVENT_BYTES)
    recorded_us = to_micros(datetime.now(UTC))
    digest = content_hash(stream_id, version, recorded_us, flags, envelope)
    return StoredRecord(
        position=position,
        stream_id=stream_id,
        version=version,
        recorded_at_us=recorded_us,
        flags=flags,
        envelope=envelope,
        content_hash=digest,
        stream_hash=chain(GENESIS if after is None else after.stream_hash, digest),
        log_hash=chain(GENESIS if after is None else after.log_hash, digest),
    )


def _closed_calls() -> dict[str, Callable[[EventStore], Awaitable[object]]]:
    sid = stream_name("closed")
    return {
        "append": lambda s: s.append(sid, make_events(1)),
        "append_many": lambda s: s.append_many([StreamAppend(sid, make_events(1))]),
        "read_stream": lambda s: s.read_stream(sid),
        "read_all": lambda s: s.read_all(),
        "subscribe": lambda s: anext(aiter(s.subscribe())),
        "head_position": lambda s: s.head_position(),
        "streams": lambda s: s.streams(),
        "stream_metadata": lambda s: s.stream_metadata(sid),
        "set_stream_metadata": lambda s: s.set_stream_metadata(sid, StreamMetadata(max_count=1)),
        "delete_stream": lambda s: s.delete_stream(sid),
        "verify": lambda s: s.verify(),
    }


_LIMITED_READS: Final[dict[str, Callable[[EventStore, int], Awaitable[object]]]] = {
    "read_stream": lambda s, limit: s.read_stream(stream_name(), limit=limit),
    "read_all": lambda s, limit: s.read_all(limit=limit),
    "streams": lambda s, limit: s.streams(limit=limit),
}


class InputCases(_Fixtures):
    """Refusing bad input before it reaches storage, and the closed state."""

    async def test_append_rejects_empty_stream_id(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match="stream id"):
            await store.append("", make_events(1))

    async def test_append_rejects_no_events(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match="no events"):
            await store.append(stream_name(), [])

    async def test_append_rejects_non_event(self, store: EventStore) -> None:
        not_an_event: object = {"type": "t", "source": SOURCE}
        with pytest.raises(TypeError, match="Event"):
            await store.append(stream_name(), [not_an_event])  # type: ignore[list-item]
        assert await store.head_position() == 0

    async def test_append_rejects_negative_expected_version(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match="expected_version"):
            await store.append(stream_name(), make_events(1), expected_version=-1)

    async def test_append_many_rejects_same_stream_twice(self, store: EventStore) -> None:
        sid = stream_name()
        with pytest.raises(ValueError, match="twice"):
            await store.append_many([StreamAppend(sid, make_events(1))] * 2)

    async def test_append_many_rejects_no_streams(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match="at least one"):
            await store.append_many([])

    async def test_read_stream_rejects_empty_stream_id(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match="stream id"):
            await store.read_stream("")

    @pytest.mark.parametrize("limit", [0, -1])
    @pytest.mark.parametrize("read", sorted(_LIMITED_READS))
    async def test_reads_reject_limit_below_one(
        self, store: EventStore, read: str, limit: int
    ) -> None:
        with pytest.raises(ValueError, match="limit"):
            await _LIMITED_READS[read](store, limit)

    async def test_set_stream_metadata_rejects_max_count_below_one(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match="max_count"):
            await store.set_stream_metadata(stream_name(), StreamMetadata(max_count=0))

    async def test_append_rejects_event_over_max_event_bytes(self, small_store: EventStore) -> None:
        big = Event(type="t", source=SOURCE, data="x" * SMALL_EVENT_BYTES)
        with pytest.raises(EventTooLargeError) as caught:
            await small_store.append(stream_name(), [big])
        assert caught.value.event_id == big.id
        assert caught.value.size > caught.value.limit == SMALL_EVENT_BYTES

    async def test_append_accepts_event_under_max_event_bytes(
        self, small_store: EventStore
    ) -> None:
        event = Event(type="t", source=SOURCE, data="x" * (SMALL_EVENT_BYTES // 2))
        result = await small_store.append(stream_name(), [event])
        assert result.version == 1

    @pytest.mark.parametrize("method", sorted(_closed_calls()))
    async def test_closed_store_raises_closed_error(
        self, harness: EventStoreHarness, method: str
    ) -> None:
        store = await harness.make_store()
        await store.aclose()
        with pytest.raises(ClosedError):
            await _closed_calls()[method](store)

    async def test_aclose_twice_is_harmless(self, harness: EventStoreHarness) -> None:
        store = await harness.make_store()
        await store.aclose()
        await store.aclose()


class DurabilityCases(_Fixtures):
    """What survives closing the store (backends that claim ``durable``)."""

    async def test_events_survive_reopen(
        self, store: EventStore, harness: EventStoreHarness
    ) -> None:
        _require(harness, "durable")
        sid, events = stream_name(), _rich_events()
        await store.append(sid, events)
        await store.aclose()
        reopened = await harness.open_again(store)
        assert [r.event for r in await reopened.read_stream(sid)] == events
        assert (await reopened.verify()).ok

    async def test_positions_continue_after_reopen(
        self, store: EventStore, harness: EventStoreHarness
    ) -> None:
        _require(harness, "durable")
        await store.append(stream_name(), make_events(3))
        await store.aclose()
        reopened = await harness.open_again(store)
        result = await reopened.append(stream_name(), make_events(1))
        assert result.position == 4


_JSON: Final = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_BATCH: Final = st.lists(
    st.tuples(st.sampled_from(["prop.a", "prop.b"]), _JSON | st.binary(max_size=24)),
    min_size=1,
    max_size=3,
)
_PLAN: Final = st.lists(st.tuples(st.integers(0, 2), _BATCH), min_size=1, max_size=8)


class PropertyCases(_Fixtures):
    """Random workloads read back exactly as written."""

    @settings(
        max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(plan=_PLAN)
    async def test_random_appends_read_back_identically(
        self, harness: EventStoreHarness, plan: list[tuple[int, list[tuple[str, object]]]]
    ) -> None:
        store = await harness.make_store()
        try:
            await self._check_plan(store, plan)
        finally:
            await store.aclose()

    @staticmethod
    async def _check_plan(
        store: EventStore, plan: list[tuple[int, list[tuple[str, object]]]]
    ) -> None:
        names = [stream_name(f"prop{i}") for i in range(3)]
        streams: dict[str, list[Event]] = {sid: [] for sid in names}
        log: list[tuple[str, Event]] = []
        for index, batch in plan:
            sid, events = names[index], [Event(type=t, source=SOURCE, data=d) for t, d in batch]
            await store.append(sid, events, expected_version=len(streams[sid]))
            streams[sid].extend(events)
            log.extend((sid, event) for event in events)
        for sid, events in streams.items():
            assert [r.event for r in await store.read_stream(sid)] == events
        records = await store.read_all()
        assert [(r.stream_id, r.event) for r in records] == log
        assert _positions(records) == list(range(1, len(log) + 1))


class EventStoreConformance(
    AppendCases,
    AppendManyCases,
    RaceCases,
    ReadStreamCases,
    ReadAllCases,
    SubscribeCases,
    MetadataCases,
    VerifyCases,
    InputCases,
    DurabilityCases,
    PropertyCases,
):
    """Every behaviour an event store must show; subclass it in a test module to run it.

    The subclass's module (or a conftest) provides a ``harness`` fixture yielding an
    `EventStoreHarness`; parametrize that fixture to run the suite over several backends.
    """
