"""The projection runner on every read model backend: catch-up, live, wait_for, failures, lag."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.projections.helpers import append, eventually, hits, poison, unique

from tidings.adapters.memory.eventstore import MemoryEventStore
from tidings.projections import (
    Batch,
    ProjectionFailedError,
    ProjectionRunner,
    ProjectionTimeout,
    Status,
)
from tidings.testing.conformance.checkpoints import ReadModelHarness


@pytest.fixture
async def store() -> AsyncIterator[MemoryEventStore]:
    """A fresh in-memory event store."""
    async with MemoryEventStore() as made:
        yield made


async def test_runner_applies_every_event_once_when_catching_up(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    result = await append(store, hits("a", "b", "a"))
    async with ProjectionRunner(store, model, [projection]) as runner:
        await runner.wait_for(result.position, timeout=5)
    assert await read_model_harness.counts(model, projection) == {"a": (2, 4), "b": (1, 2)}


async def test_runner_applies_events_appended_while_it_runs(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    async with ProjectionRunner(store, model, [projection]) as runner:
        await append(store, hits("a"))
        result = await append(store, hits("b"))
        reached = await runner[projection.name].wait_for(result.position, timeout=5)
    assert reached == 2
    assert await read_model_harness.counts(model, projection) == {"a": (1, 1), "b": (1, 2)}


async def test_wait_for_raises_timeout_when_position_is_not_reached(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    async with ProjectionRunner(store, model, [projection]) as runner:
        with pytest.raises(ProjectionTimeout) as caught:
            await runner.wait_for(5, timeout=0.2)
    assert (caught.value.wanted, caught.value.reached) == (5, 0)


async def test_commits_never_exceed_the_batch_size(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    batches: list[Batch] = []
    await append(store, hits(*"abcdefghij" * 5))
    async with ProjectionRunner(
        store, model, [projection], batch_size=7, on_commit=batches.append
    ) as runner:
        await runner.wait_for(50, timeout=5)
    assert max(len(b.records) for b in batches) <= 7
    assert sum(len(b.records) for b in batches) == 50


async def test_stop_policy_marks_projection_failed_with_the_event_named(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    await append(store, [*hits("a"), *poison(), *hits("b")])
    async with ProjectionRunner(store, model, [projection]) as runner:
        with pytest.raises(ProjectionFailedError) as caught:
            await runner.wait_for(3, timeout=5)
    state = await model.lookup(projection.key)
    assert state is not None
    assert (state.status, state.position) == (Status.FAILED, 1)
    assert "position 2 (count.poison" in (state.error or "")
    assert "poisoned at 2" in str(caught.value)
    assert await read_model_harness.counts(model, projection) == {"a": (1, 1)}


async def test_failed_projection_stays_stopped_when_a_runner_restarts(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    batches: list[Batch] = []
    await append(store, [*poison(), *hits("a")])
    for _ in range(2):
        async with ProjectionRunner(store, model, [projection], on_commit=batches.append) as run:
            with pytest.raises(ProjectionFailedError):
                await run.wait_for(2, timeout=5)
    assert batches == []
    assert await read_model_harness.counts(model, projection) == {}


async def test_retry_resumes_a_failed_projection_from_its_checkpoint(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    await append(store, [*hits("a"), *poison()])
    async with ProjectionRunner(store, model, [projection]) as runner:
        with pytest.raises(ProjectionFailedError):
            await runner.wait_for(2, timeout=5)
    projection.dispatch()["count.poison"] = lambda record, tx: None  # the fix is deployed
    await model.set_status(projection.key, Status.RUNNING)
    await append(store, hits("b"))
    async with ProjectionRunner(store, model, [projection]) as runner:
        await runner.wait_for(3, timeout=5)
    assert await read_model_harness.counts(model, projection) == {"a": (1, 1), "b": (1, 3)}


async def test_skip_policy_records_the_failure_and_applies_later_events(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    projection.on_error = "skip"
    await append(store, [*hits("a"), *poison(), *hits("b"), *poison(), *hits("a")])
    async with ProjectionRunner(store, model, [projection]) as runner:
        await runner.wait_for(5, timeout=5)
    failures = await model.failures(projection.key)
    assert [(f.position, f.event_type) for f in failures] == [
        (2, "count.poison"),
        (4, "count.poison"),
    ]
    assert "poisoned at 2" in failures[0].error
    assert await read_model_harness.counts(model, projection) == {"a": (2, 6), "b": (1, 3)}


async def test_several_projections_follow_one_log(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model = await read_model_harness.make()
    projections = [read_model_harness.counter(unique()) for _ in range(3)]
    await append(store, hits("a", "b"))
    async with ProjectionRunner(store, model, projections) as runner:
        await runner.wait_for(2, timeout=5)
    counts = [await read_model_harness.counts(model, p) for p in projections]
    assert counts == [{"a": (1, 1), "b": (1, 2)}] * 3


async def test_status_reports_lag_in_events_and_seconds_while_stopped(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    await append(store, hits("a"))
    async with ProjectionRunner(store, model, [projection]) as runner:
        await runner.wait_for(1, timeout=5)
    await append(store, hits("b", "c"))
    async with ProjectionRunner(store, model, []) as idle:
        status = await idle.monitor.status(projection.name)
    assert (status.position, status.head, status.lag_events) == (1, 3, 2)
    assert status.lag_seconds > 0
    assert (status.phase, status.owner) == ("stopped", None)


async def test_status_reports_live_with_its_owner_when_caught_up(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    await append(store, hits("a"))
    async with ProjectionRunner(store, model, [projection], owner="me") as runner:
        await runner.wait_for(1, timeout=5)
        found = [s for s in await runner.statuses() if s.key == projection.key]
    assert [(s.phase, s.lag_events, s.lag_seconds, s.owner) for s in found] == [
        ("live", 0, 0.0, "me")
    ]


async def test_handle_position_follows_commits(
    store: MemoryEventStore, read_model_harness: ReadModelHarness
) -> None:
    model, projection = await read_model_harness.make(), read_model_harness.counter(unique())
    async with ProjectionRunner(store, model, [projection]) as runner:
        handle = runner[projection.name]
        await append(store, hits("a", "b"))
        await eventually(lambda: handle.position == 2)
        status = await handle.status()
    assert status.position == 2


def test_runner_refuses_two_projections_with_one_name(
    read_model_harness: ReadModelHarness,
) -> None:
    from tidings.errors import ConfigurationError

    name = unique()
    twins: list[Any] = [read_model_harness.counter(name), read_model_harness.counter(name)]
    with pytest.raises(ConfigurationError):
        ProjectionRunner(MemoryEventStore(), None, twins)  # type: ignore[arg-type]
