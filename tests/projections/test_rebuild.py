"""Side-by-side rebuilds: the new version fills its own tables, then readers switch to it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.projections.backends import counter, fetch, harness, location
from tests.projections.helpers import append, hits, poison, unique

from tidings.adapters.memory.eventstore import MemoryEventStore
from tidings.adapters.postgres.projections import PostgresReadModel
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.adapters.sqlite.projections import SQLiteReadModel
from tidings.projections import (
    Batch,
    ProjectionFailedError,
    ProjectionKey,
    ProjectionRunner,
    ReadModel,
    rebuild,
)
from tidings.testing.conformance.checkpoints import ReadModelHarness
from tidings.testing.faults import start_worker


@pytest.fixture
async def store() -> AsyncIterator[MemoryEventStore]:
    """A fresh in-memory event store."""
    async with MemoryEventStore() as made:
        yield made


async def _served_v1(
    store: MemoryEventStore, model: ReadModel, harness: ReadModelHarness, name: str
) -> None:
    """Run version 1 up to the head, then append two events it does not see."""
    await append(store, hits("a", "b"))
    async with ProjectionRunner(store, model, [harness.counter(name)]) as runner:
        await runner.wait_for(2, timeout=5)
    await append(store, hits("a", "c"))


async def test_rebuild_fills_the_new_version_while_the_old_one_stays_active(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, name = await read_model_harness.make(), unique()
    await _served_v1(store, model, read_model_harness, name)
    seen: list[tuple[int, bool]] = []  # (v2's position, v2 active) at each progress report
    v2 = read_model_harness.counter(name, version=2)
    done = await rebuild(
        store, model, v2, interval=0.01, on_progress=lambda p: seen.append((p.position, p.active))
    )
    assert (done.position, done.active, done.done) == (4, True, True)
    assert all(not active for position, active in seen[:-1])
    assert await read_model_harness.counts(model, v2) == {"a": (2, 4), "b": (1, 2), "c": (1, 4)}
    assert await read_model_harness.counts(model, read_model_harness.counter(name)) == {
        "a": (1, 1),
        "b": (1, 2),
    }


async def test_rebuild_switches_the_active_version_once_caught_up(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, name = await read_model_harness.make(), unique()
    await _served_v1(store, model, read_model_harness, name)
    await rebuild(store, model, read_model_harness.counter(name, version=2), interval=0.01)
    active = {s.key.version: s.active for s in await model.states() if s.key.name == name}
    assert active == {1: False, 2: True}


async def test_rebuild_with_drop_old_removes_the_previous_version(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, name = await read_model_harness.make(), unique()
    await _served_v1(store, model, read_model_harness, name)
    v2 = read_model_harness.counter(name, version=2)
    await rebuild(store, model, v2, drop_old=True, interval=0.01)
    assert [s.key for s in await model.states() if s.key.name == name] == [ProjectionKey(name, 2)]


async def test_rebuild_of_the_active_caught_up_version_returns_at_once(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, name = await read_model_harness.make(), unique()
    await _served_v1(store, model, read_model_harness, name)
    done = await rebuild(store, model, read_model_harness.counter(name), interval=0.01)
    assert (done.key.version, done.position, done.active) == (1, 4, True)


async def test_rebuild_raises_when_the_new_version_fails(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, name = await read_model_harness.make(), unique()
    await _served_v1(store, model, read_model_harness, name)
    await append(store, poison())
    with pytest.raises(ProjectionFailedError):
        await rebuild(store, model, read_model_harness.counter(name, version=2), interval=0.01)
    active = {s.key.version for s in await model.states() if s.key.name == name and s.active}
    assert active == {1}


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_views_read_the_active_version_after_a_rebuild(
    store: MemoryEventStore, backend: str, tmp_path: Path
) -> None:
    made = harness(backend, tmp_path)
    try:
        model, name = await made.make(), unique()
        await _served_v1(store, model, made, name)
        await rebuild(store, model, made.counter(name, version=2), interval=0.01)
        view = await _view(model, f"{name}_counters")
    finally:
        await made.aclose()
    assert view == [("a", 2, 4), ("b", 1, 2), ("c", 1, 4)]


async def _view(model: ReadModel, table: str) -> list[tuple[object, ...]]:
    if isinstance(model, SQLiteReadModel):
        return await model.fetchall(f'SELECT key, n, total FROM "{table}" ORDER BY key')
    assert isinstance(model, PostgresReadModel)
    return await fetch(f'SELECT key, n, total FROM "{model.schema}"."{table}" ORDER BY key')


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
async def test_rebuild_resumes_from_its_checkpoint_after_its_process_is_killed(
    backend: str, tmp_path: Path
) -> None:
    made, name, path = harness(backend, tmp_path), f"r{uuid.uuid4().hex[:8]}", tmp_path / "ev.db"
    model = await made.make()
    batches: list[Batch] = []
    try:
        async with SQLiteEventStore(path, synchronous="NORMAL") as store:
            await append(store, hits(*"abcdefghij" * 100))
            args = [backend, location(model), str(path), name, "2"]
            worker = await start_worker("tests.projections.rebuild_worker", *args)
            try:
                await worker.wait_for(
                    lambda line: line.startswith("progress ") and line != "progress 0", timeout=10
                )
                worker.kill()
                await worker.wait(timeout=10)
            finally:
                await worker.aclose()
            killed_at = await model.lookup(ProjectionKey(name, 2))
            v2 = counter(backend, name, version=2)
            await rebuild(store, model, v2, on_commit=batches.append, interval=0.05, lease_ttl=1)
            counts = await made.counts(model, v2)
    finally:
        await made.aclose()
    assert killed_at is not None
    assert 0 < killed_at.position < 1000
    assert batches[0].after == killed_at.position
    assert counts == {k: (100, sum(range(i + 1, 1001, 10))) for i, k in enumerate("abcdefghij")}
