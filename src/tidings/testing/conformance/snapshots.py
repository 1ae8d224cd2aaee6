"""The snapshot store conformance suite: what every `SnapshotStore` backend must do.

An adapter runs it by giving pytest a ``snapshot_harness`` fixture (a `SnapshotStoreHarness`)
and subclassing `SnapshotStoreConformance` in a test module::

    @pytest.fixture
    async def snapshot_harness():
        made = MyHarness()
        yield made
        await made.aclose()


    class TestMySnapshots(SnapshotStoreConformance):
        pass

Every test makes its own store and its own stream names.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Protocol

import pytest

from tidings.adapters.memory.snapshots import MemorySnapshotStore
from tidings.domain.snapshots import Snapshot, SnapshotStore
from tidings.errors import ClosedError

__all__ = ["MemorySnapshotHarness", "SnapshotStoreConformance", "SnapshotStoreHarness"]


class SnapshotStoreHarness(Protocol):
    """Makes fresh, opened stores of one backend for the suite."""

    durable: bool
    """True when a store opened again on the same storage sees what the first one saved."""

    async def make(self) -> SnapshotStore:
        """Return a new, opened, empty store."""
        ...

    async def reopen(self, store: SnapshotStore) -> SnapshotStore:
        """Return a new opened store on the storage of ``store`` (durable backends only)."""
        ...

    async def aclose(self) -> None:
        """Close every store made and remove what they stored."""
        ...


class MemorySnapshotHarness:
    """`MemorySnapshotStore`, fresh per store; not durable."""

    durable = False

    def __init__(self) -> None:
        self._made: list[SnapshotStore] = []

    async def make(self) -> SnapshotStore:
        store = await MemorySnapshotStore().open()
        self._made.append(store)
        return store

    async def reopen(self, store: SnapshotStore) -> SnapshotStore:
        raise NotImplementedError("memory stores are not durable")

    async def aclose(self) -> None:
        for store in self._made:
            await store.aclose()


def _stream() -> str:
    return f"snap-{uuid.uuid4().hex[:12]}"


def _snapshot(stream_id: str, version: int, *, schema: int = 1, state: bytes = b"") -> Snapshot:
    return Snapshot(stream_id, version, schema, state or f"s{version}".encode(), 1_000 + version)


class SnapshotStoreConformance:
    """Every snapshot store behaviour; subclass it with a ``snapshot_harness`` fixture."""

    async def test_latest_returns_none_for_unknown_stream(
        self, snapshot_harness: SnapshotStoreHarness
    ) -> None:
        store = await snapshot_harness.make()
        assert await store.latest(_stream()) is None

    async def test_saved_snapshot_reads_back_equal(
        self, snapshot_harness: SnapshotStoreHarness
    ) -> None:
        store = await snapshot_harness.make()
        saved = Snapshot(_stream(), 7, 3, b"\x00\xffbinary\x00", 1_700_000_000_123_456)
        await store.save(saved)
        assert await store.latest(saved.stream_id) == saved

    async def test_latest_returns_highest_version(
        self, snapshot_harness: SnapshotStoreHarness
    ) -> None:
        store = await snapshot_harness.make()
        stream = _stream()
        for version in (200, 100, 300):
            await store.save(_snapshot(stream, version))
        found = await store.latest(stream)
        assert found is not None
        assert found.version == 300

    @pytest.mark.parametrize(("bound", "expected"), [(99, None), (100, 100), (250, 200)])
    async def test_latest_respects_max_version(
        self, snapshot_harness: SnapshotStoreHarness, bound: int, expected: int | None
    ) -> None:
        store = await snapshot_harness.make()
        stream = _stream()
        for version in (100, 200, 300):
            await store.save(_snapshot(stream, version))
        found = await store.latest(stream, max_version=bound)
        assert (found.version if found else None) == expected

    async def test_save_of_same_version_replaces_snapshot(
        self, snapshot_harness: SnapshotStoreHarness
    ) -> None:
        store = await snapshot_harness.make()
        stream = _stream()
        await store.save(_snapshot(stream, 5, schema=1, state=b"old"))
        await store.save(_snapshot(stream, 5, schema=2, state=b"new"))
        found = await store.latest(stream)
        assert found is not None
        assert (found.schema_version, found.state) == (2, b"new")

    async def test_latest_ignores_streams_sharing_a_prefix(
        self, snapshot_harness: SnapshotStoreHarness
    ) -> None:
        store = await snapshot_harness.make()
        stream = _stream()
        await store.save(_snapshot(f"{stream}0", 9))
        await store.save(_snapshot(stream, 1))
        found = await store.latest(stream)
        assert found is not None
        assert (found.stream_id, found.version) == (stream, 1)

    async def test_delete_removes_every_snapshot_of_the_stream_only(
        self, snapshot_harness: SnapshotStoreHarness
    ) -> None:
        store = await snapshot_harness.make()
        gone, kept = _stream(), _stream()
        for version in (1, 2):
            await store.save(_snapshot(gone, version))
        await store.save(_snapshot(kept, 1))
        await store.delete(gone)
        assert (await store.latest(gone), await store.latest(kept)) == (None, _snapshot(kept, 1))

    async def test_delete_of_unknown_stream_does_nothing(
        self, snapshot_harness: SnapshotStoreHarness
    ) -> None:
        store = await snapshot_harness.make()
        await store.delete(_stream())

    async def test_large_state_round_trips(self, snapshot_harness: SnapshotStoreHarness) -> None:
        store = await snapshot_harness.make()
        saved = _snapshot(_stream(), 1, state=os.urandom(2 * 1024 * 1024))
        await store.save(saved)
        assert await store.latest(saved.stream_id) == saved

    async def test_concurrent_saves_of_one_version_leave_one_of_them(
        self, snapshot_harness: SnapshotStoreHarness
    ) -> None:
        store = await snapshot_harness.make()
        stream = _stream()
        racers = [_snapshot(stream, 10, state=f"racer-{i}".encode()) for i in range(10)]
        await asyncio.gather(*(store.save(s) for s in racers))
        assert await store.latest(stream) in racers

    async def test_snapshot_survives_reopening_the_store(
        self, snapshot_harness: SnapshotStoreHarness
    ) -> None:
        if not snapshot_harness.durable:
            pytest.skip("the backend is not durable")
        store = await snapshot_harness.make()
        saved = _snapshot(_stream(), 4)
        await store.save(saved)
        await store.aclose()
        again = await snapshot_harness.reopen(store)
        assert await again.latest(saved.stream_id) == saved

    async def test_closed_store_raises_closed_error(
        self, snapshot_harness: SnapshotStoreHarness
    ) -> None:
        store = await snapshot_harness.make()
        await store.aclose()
        await store.aclose()  # idempotent
        with pytest.raises(ClosedError):
            await store.latest(_stream())
