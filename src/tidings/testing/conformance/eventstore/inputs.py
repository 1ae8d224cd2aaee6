"""Conformance cases for refusing bad input, the closed state, and durability."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import pytest

from tidings.errors import ClosedError, EventTooLargeError
from tidings.events import Event
from tidings.eventstore.ports import EventStore, StreamAppend, StreamMetadata
from tidings.testing.conformance.eventstore.harness import EventStoreHarness
from tidings.testing.conformance.eventstore.helpers import (
    SMALL_EVENT_BYTES,
    SOURCE,
    _Fixtures,
    _require,
    _rich_events,
    make_events,
    stream_name,
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
