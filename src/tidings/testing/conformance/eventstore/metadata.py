"""Conformance cases for stream metadata: retention by count and age, deletion, listing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tidings.errors import StreamDeletedError
from tidings.eventstore.ports import NO_STREAM, EventStore, StreamMetadata
from tidings.testing.conformance.eventstore.helpers import (
    _Fixtures,
    _positions,
    _versions,
    make_events,
    stream_name,
)


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
