"""What a backend gives the event store conformance suite: stores, and ways to damage them."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Protocol

from tidings.adapters.memory.eventstore import MemoryEventStore
from tidings.eventstore.ports import EventStore
from tidings.eventstore.records import StoredRecord

__all__ = ["Capabilities", "EventStoreHarness", "MemoryHarness"]


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
