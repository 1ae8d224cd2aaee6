"""The checkpoint store conformance suite: what every `ReadModel` backend must do.

An adapter runs it by giving pytest a ``read_model_harness`` fixture (a `ReadModelHarness`)
and subclassing `CheckpointStoreConformance` in a test module::

    @pytest.fixture
    async def read_model_harness():
        made = MyHarness()
        yield made
        await made.aclose()


    class TestMyCheckpoints(CheckpointStoreConformance):
        pass

The harness also supplies the backend's *counter* projection: ``count.hit`` events (data
``{"key": k}``) add 1 to the key's count and the event's position to its total (on purpose
not idempotent, so a double apply shows); ``count.poison`` events make the handler raise.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import pytest

from tidings.adapters.memory.projections import MemoryReadModel, MemoryTx
from tidings.errors import CheckpointConflict, ClosedError
from tidings.events import Event
from tidings.eventstore.ports import RecordedEvent
from tidings.projections import (
    Batch,
    Failure,
    HandlerError,
    LeaseLost,
    Projection,
    ProjectionError,
    ProjectionKey,
    ReadModel,
    Status,
    handles,
)

__all__ = [
    "CheckpointStoreConformance",
    "Counts",
    "MemoryCounter",
    "MemoryReadModelHarness",
    "ReadModelHarness",
    "records",
]

Counts = dict[str, tuple[int, int]]
"""Key -> (count, total of positions), as a counter projection's read model holds them."""


class ReadModelHarness(Protocol):
    """Makes fresh read models of one backend, and reads what its counter projection wrote."""

    durable: bool
    """True when a read model opened again on the same storage sees what the first committed."""

    async def make(self) -> ReadModel:
        """Return a new, opened read model on fresh storage (a file, a schema, a key prefix)."""
        ...

    async def reopen(self, model: ReadModel) -> ReadModel:
        """Return another opened read model on ``model``'s storage (durable backends)."""
        ...

    def counter(self, name: str, *, version: int = 1) -> Projection[Any]:
        """Return this backend's counter projection under ``name``."""
        ...

    async def counts(self, model: ReadModel, projection: Projection[Any]) -> Counts:
        """Return what the counter projection's version holds."""
        ...

    async def aclose(self) -> None:
        """Close every read model made and remove its storage."""
        ...


class MemoryCounter(Projection[MemoryTx]):
    """The counter projection on `MemoryReadModel`."""

    @handles("count.hit")
    def hit(self, record: RecordedEvent, tx: MemoryTx) -> None:
        """Count the event under its key."""
        key = record.event.data["key"]  # type: ignore[index]
        tx.incr(("n", key))
        tx.incr(("total", key), record.position)

    @handles("count.poison")
    def poison(self, record: RecordedEvent, tx: MemoryTx) -> None:
        """Fail, as a handler with a bug does."""
        raise ValueError(f"poisoned at {record.position}")


class MemoryReadModelHarness:
    """`MemoryReadModel`, fresh per read model; not durable."""

    durable = False

    def __init__(self) -> None:
        self._made: list[MemoryReadModel] = []

    async def make(self) -> ReadModel:
        model = await MemoryReadModel().open()
        self._made.append(model)
        return model

    async def reopen(self, model: ReadModel) -> ReadModel:
        raise NotImplementedError("memory read models are not durable")

    def counter(self, name: str, *, version: int = 1) -> Projection[Any]:
        return MemoryCounter(name=name, version=version)

    async def counts(self, model: ReadModel, projection: Projection[Any]) -> Counts:
        assert isinstance(model, MemoryReadModel)
        data = model.data(projection.name, projection.version)
        keys = {k[1] for k in data if isinstance(k, tuple)}
        return {k: (int(data[("n", k)]), int(data[("total", k)])) for k in keys}  # type: ignore[call-overload]

    async def aclose(self) -> None:
        for model in self._made:
            await model.aclose()


def records(*keys: str, after: int = 0, event_type: str = "count.hit") -> list[RecordedEvent]:
    """Return recorded ``count.hit`` events for ``keys`` at positions after ``after``."""
    now = time.time_ns() // 1000
    return [
        RecordedEvent(
            Event(type=event_type, source="/conformance", data={"key": key}),
            "conformance",
            after + index + 1,
            after + index + 1,
            now,
        )
        for index, key in enumerate(keys)
    ]


def _name() -> str:
    return f"c{uuid.uuid4().hex[:12]}"


def _batch(owner: str, after: int, events: Sequence[RecordedEvent], **kw: Any) -> Batch:
    up_to = kw.pop("up_to", events[-1].position if events else after)
    return Batch(owner, after, up_to, list(events), **kw)


async def _ready(harness: ReadModelHarness, *, owner: str = "me") -> tuple[ReadModel, Any]:
    model = await harness.make()
    projection = harness.counter(_name())
    await model.prepare(projection)
    assert await model.acquire_lease(projection.key, owner, 30.0)
    return model, projection


class CheckpointStoreConformance:
    """Every checkpoint store behaviour; subclass it with a ``read_model_harness`` fixture."""

    async def test_register_creates_entry_at_position_zero(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model = await read_model_harness.make()
        state = await model.register(ProjectionKey(_name(), 1))
        assert (state.position, state.status, state.error) == (0, Status.RUNNING, None)

    async def test_register_twice_keeps_the_checkpoint(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, projection = await _ready(read_model_harness)
        await model.apply(projection, _batch("me", 0, records("a", "b")))
        again = await model.register(projection.key)
        assert again.position == 2

    async def test_first_version_is_active_and_later_ones_are_not(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, name = await read_model_harness.make(), _name()
        first = await model.register(ProjectionKey(name, 1))
        second = await model.register(ProjectionKey(name, 2))
        assert (first.active, second.active) == (True, False)

    async def test_lookup_of_unknown_version_returns_none(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model = await read_model_harness.make()
        assert await model.lookup(ProjectionKey(_name(), 1)) is None

    async def test_apply_commits_effects_and_checkpoint_together(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, projection = await _ready(read_model_harness)
        batch = _batch("me", 0, records("a", "b", "a"), last_recorded_us=123)
        await model.apply(projection, batch)
        state = await model.lookup(projection.key)
        assert state is not None
        assert (state.position, state.last_recorded_us) == (3, 123)
        assert await read_model_harness.counts(model, projection) == {"a": (2, 4), "b": (1, 2)}

    async def test_apply_moves_checkpoint_past_unhandled_tail(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, projection = await _ready(read_model_harness)
        await model.apply(projection, _batch("me", 0, records("a"), up_to=9))
        state = await model.lookup(projection.key)
        assert state is not None
        assert state.position == 9

    async def test_replayed_batch_raises_conflict_and_applies_nothing(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, projection = await _ready(read_model_harness)
        batch = _batch("me", 0, records("a", "b"))
        await model.apply(projection, batch)
        with pytest.raises(CheckpointConflict):
            await model.apply(projection, batch)
        assert await read_model_harness.counts(model, projection) == {"a": (1, 1), "b": (1, 2)}

    async def test_apply_without_the_lease_raises_lease_lost(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, projection = await _ready(read_model_harness, owner="holder")
        with pytest.raises(LeaseLost) as caught:
            await model.apply(projection, _batch("zombie", 0, records("a")))
        assert caught.value.holder == "holder"
        assert await read_model_harness.counts(model, projection) == {}

    async def test_zombie_batch_after_takeover_is_fenced(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model = await read_model_harness.make()
        projection = read_model_harness.counter(_name())
        await model.prepare(projection)
        assert await model.acquire_lease(projection.key, "old", 0.05)
        await asyncio.sleep(0.1)
        assert await model.acquire_lease(projection.key, "new", 30.0)
        with pytest.raises(LeaseLost):
            await model.apply(projection, _batch("old", 0, records("a")))
        await model.apply(projection, _batch("new", 0, records("b")))
        assert await read_model_harness.counts(model, projection) == {"b": (1, 1)}

    async def test_handler_error_rolls_back_the_whole_batch(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, projection = await _ready(read_model_harness)
        events = [*records("a", "b"), *records("x", after=2, event_type="count.poison")]
        with pytest.raises(HandlerError) as caught:
            await model.apply(projection, _batch("me", 0, events))
        state = await model.lookup(projection.key)
        assert (caught.value.index, caught.value.record.position) == (2, 3)
        assert state is not None
        assert state.position == 0
        assert await read_model_harness.counts(model, projection) == {}

    async def test_lease_is_refused_while_another_owner_holds_it(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, projection = await _ready(read_model_harness, owner="a")
        assert not await model.acquire_lease(projection.key, "b", 30.0)
        assert await model.acquire_lease(projection.key, "a", 30.0)  # renewal

    async def test_lease_is_taken_over_after_it_expires(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model = await read_model_harness.make()
        projection = read_model_harness.counter(_name())
        await model.prepare(projection)
        assert await model.acquire_lease(projection.key, "a", 0.05)
        await asyncio.sleep(0.1)
        assert await model.acquire_lease(projection.key, "b", 30.0)
        state = await model.lookup(projection.key)
        assert state is not None
        assert state.lease_owner == "b"

    async def test_released_lease_is_free_at_once(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, projection = await _ready(read_model_harness, owner="a")
        await model.release_lease(projection.key, "b")  # not the holder: no effect
        assert not await model.acquire_lease(projection.key, "b", 30.0)
        await model.release_lease(projection.key, "a")
        assert await model.acquire_lease(projection.key, "b", 30.0)

    async def test_concurrent_acquires_have_one_winner(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model = await read_model_harness.make()
        projection = read_model_harness.counter(_name())
        await model.prepare(projection)
        owners = [f"runner-{i}" for i in range(8)]
        won = await asyncio.gather(*(model.acquire_lease(projection.key, o, 30.0) for o in owners))
        assert sum(won) == 1

    async def test_lease_of_unregistered_version_raises(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model = await read_model_harness.make()
        with pytest.raises(ProjectionError):
            await model.acquire_lease(ProjectionKey(_name(), 1), "a", 30.0)

    async def test_failed_status_keeps_its_error_until_running_again(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, projection = await _ready(read_model_harness)
        await model.set_status(projection.key, Status.FAILED, error="boom at 7")
        failed = await model.lookup(projection.key)
        await model.set_status(projection.key, Status.RUNNING)
        running = await model.lookup(projection.key)
        assert failed is not None
        assert running is not None
        assert (failed.status, failed.error) == (Status.FAILED, "boom at 7")
        assert (running.status, running.error) == (Status.RUNNING, None)

    async def test_activate_switches_the_active_version(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, name = await read_model_harness.make(), _name()
        for version in (1, 2):
            await model.prepare(read_model_harness.counter(name, version=version))
        await model.activate(ProjectionKey(name, 2))
        active = {s.key.version: s.active for s in await model.states() if s.key.name == name}
        assert active == {1: False, 2: True}

    async def test_states_are_ordered_by_name_and_version(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, name = await read_model_harness.make(), _name()
        for key in (ProjectionKey(f"{name}b", 1), ProjectionKey(name, 2), ProjectionKey(name, 1)):
            await model.register(key)
        keys = [s.key for s in await model.states() if s.key.name.startswith(name)]
        assert keys == [
            ProjectionKey(name, 1),
            ProjectionKey(name, 2),
            ProjectionKey(f"{name}b", 1),
        ]

    async def test_failure_commits_with_its_batch_and_lists_in_order(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, projection = await _ready(read_model_harness)
        for position in (2, 5):
            failure = Failure(position, f"id-{position}", "count.poison", f"bad {position}")
            state = await model.lookup(projection.key)
            assert state is not None
            await model.apply(
                projection, _batch("me", state.position, [], up_to=position, failure=failure)
            )
        found = await model.failures(projection.key)
        assert [(f.position, f.event_id, f.error) for f in found] == [
            (2, "id-2", "bad 2"),
            (5, "id-5", "bad 5"),
        ]

    async def test_drop_removes_an_inactive_version_only(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model, name = await read_model_harness.make(), _name()
        old, new = (read_model_harness.counter(name, version=v) for v in (1, 2))
        for projection in (old, new):
            await model.prepare(projection)
        with pytest.raises(ProjectionError):
            await model.drop(old.key)
        await model.activate(new.key)
        await model.drop(old.key)
        assert await model.lookup(old.key) is None

    async def test_checkpoint_and_effects_survive_reopening(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        if not read_model_harness.durable:
            pytest.skip("the backend is not durable")
        model, projection = await _ready(read_model_harness)
        await model.apply(projection, _batch("me", 0, records("a", "b")))
        await model.aclose()
        again = await read_model_harness.reopen(model)
        state = await again.lookup(projection.key)
        assert state is not None
        assert state.position == 2
        assert await read_model_harness.counts(again, projection) == {"a": (1, 1), "b": (1, 2)}

    async def test_closed_read_model_raises_closed_error(
        self, read_model_harness: ReadModelHarness
    ) -> None:
        model = await read_model_harness.make()
        await model.aclose()
        await model.aclose()  # idempotent
        with pytest.raises(ClosedError):
            await model.states()
