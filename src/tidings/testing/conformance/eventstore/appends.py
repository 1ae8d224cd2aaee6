"""Conformance cases for appending: one stream, several streams with a checkpoint, races."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tidings.errors import CheckpointConflict, ConcurrencyConflict, EventTooLargeError
from tidings.events import Event
from tidings.eventstore.ports import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Checkpoint,
    EventStore,
    StreamAppend,
)
from tidings.testing.conformance.eventstore.harness import EventStoreHarness
from tidings.testing.conformance.eventstore.helpers import (
    SMALL_EVENT_BYTES,
    SOURCE,
    _Fixtures,
    _require,
    _rich_events,
    _versions,
    make_events,
    stream_name,
)


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
