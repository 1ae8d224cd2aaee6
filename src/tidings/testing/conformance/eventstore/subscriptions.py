"""Conformance cases for subscriptions: catch-up then live, never skipping, never repeating."""

from __future__ import annotations

import asyncio

from tidings.eventstore.ports import EventStore
from tidings.testing.conformance.eventstore.harness import EventStoreHarness
from tidings.testing.conformance.eventstore.helpers import (
    _Fixtures,
    _ids,
    _positions,
    _require,
    _Subscription,
    make_events,
    stream_name,
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

    async def test_subscription_stops_when_cancelled_as_an_event_arrives(
        self, store: EventStore
    ) -> None:
        async with _Subscription(store) as subscription:
            await store.append(stream_name(), make_events(1))
            await subscription.take(1)
            await asyncio.sleep(0.05)  # caught up: waiting for the next commit
            await store.append(stream_name(), make_events(1))
            await subscription.stop()  # the commit is waking it right now

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
