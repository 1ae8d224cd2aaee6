"""Conformance cases for the hash chains, and the records they forge behind a store's back."""

from __future__ import annotations

from datetime import UTC, datetime

from tidings.eventstore.ports import EventStore, StreamAppend, StreamMetadata
from tidings.eventstore.records import (
    GENESIS,
    StoredRecord,
    chain,
    content_hash,
    encode_event,
    to_micros,
)
from tidings.testing.conformance.eventstore.harness import EventStoreHarness
from tidings.testing.conformance.eventstore.helpers import (
    SMALL_EVENT_BYTES,
    _Fixtures,
    _require,
    _rich_events,
    make_events,
    stream_name,
)


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
