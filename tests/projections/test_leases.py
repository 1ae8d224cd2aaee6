"""Leases: one runner applies each projection, the others stand by and take over."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.projections.backends import counter, harness, location
from tests.projections.helpers import append, hits, unique

from tidings.adapters.memory.eventstore import MemoryEventStore
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.projections import Batch, ProjectionRunner, ProjectionTimeout
from tidings.testing.conformance.checkpoints import ReadModelHarness
from tidings.testing.faults import start_worker


@pytest.fixture
async def store() -> AsyncIterator[MemoryEventStore]:
    """A fresh in-memory event store."""
    async with MemoryEventStore() as made:
        yield made


async def test_only_the_lease_holder_applies_when_two_runners_run(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    seen: dict[str, list[Batch]] = {"a": [], "b": []}
    async with (
        ProjectionRunner(store, model, [projection], owner="a", on_commit=seen["a"].append) as a,
        ProjectionRunner(store, model, [projection], owner="b", on_commit=seen["b"].append),
    ):
        for key in "xyz":
            result = await append(store, hits(key))
            await a.wait_for(result.position, timeout=5)
    assert sorted(len(batches) > 0 for batches in seen.values()) == [False, True]
    assert await read_model_harness.counts(model, projection) == {
        "x": (1, 1),
        "y": (1, 2),
        "z": (1, 3),
    }


async def test_standby_takes_over_at_once_when_the_leader_stops_cleanly(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    await append(store, hits("a"))
    leader = ProjectionRunner(store, model, [projection], owner="a", lease_ttl=30)
    async with leader:
        await leader.wait_for(1, timeout=5)
        async with ProjectionRunner(store, model, [projection], owner="b", lease_ttl=30) as b:
            await leader.aclose()  # releases its lease
            result = await append(store, hits("b"))
            await b.wait_for(result.position, timeout=3)
            assert b.worker(projection.name).leader


async def test_runner_restarted_with_its_owner_id_takes_its_lease_back_at_once(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    await model.prepare(projection)
    assert await model.acquire_lease(projection.key, "crashed", 30)  # held by a dead runner
    await append(store, hits("a"))
    async with ProjectionRunner(store, model, [projection], owner="other") as other:
        with pytest.raises(ProjectionTimeout):
            await other.wait_for(1, timeout=0.5)
    async with ProjectionRunner(store, model, [projection], owner="crashed") as again:
        await again.wait_for(1, timeout=3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
async def test_standby_takes_over_after_the_leader_process_is_killed(
    backend: str, tmp_path: Path
) -> None:
    made, name, path = harness(backend, tmp_path), f"l{uuid.uuid4().hex[:8]}", tmp_path / "ev.db"
    model = await made.make()
    mine: list[Batch] = []
    args = [backend, location(model), str(path), name, "leader", "1"]
    try:
        async with SQLiteEventStore(path, synchronous="NORMAL") as store:
            await append(store, hits(*"abcdefgh" * 50))
            leader = await start_worker("tests.projections.fault_worker", *args)
            try:
                await leader.wait_for(lambda line: line.startswith("commit "), timeout=10)
                projection = counter(backend, name)
                async with ProjectionRunner(
                    store, model, [projection], owner="b", lease_ttl=0.5, on_commit=mine.append
                ) as standby:
                    await asyncio.sleep(0.3)
                    assert mine == []  # the leader holds the lease
                    leader.kill()
                    result = await append(store, hits("z"))
                    await standby.wait_for(result.position, timeout=5)
            finally:
                await leader.aclose()
            counts = await made.counts(model, projection)
    finally:
        await made.aclose()
    assert mine
    assert sum(n for n, _ in counts.values()) == 401
