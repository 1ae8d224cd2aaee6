"""Conformance cases for reading: one stream, the global log, and random workloads read back."""

from __future__ import annotations

import asyncio
from typing import Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.events import Event
from tidings.eventstore.ports import EventStore
from tidings.testing.conformance.eventstore.harness import EventStoreHarness
from tidings.testing.conformance.eventstore.helpers import (
    SOURCE,
    _Fixtures,
    _ids,
    _positions,
    _versions,
    make_events,
    stream_name,
)


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
