"""Upcasting: old event versions read as the new one, in a chain, never rewriting history."""

from __future__ import annotations

import uuid
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.codecs import SCHEMA_VERSION, EventTypes
from tidings.domain import Repository
from tidings.errors import CodecError
from tidings.events import Event

from .conftest import Backend
from .orders import Order, OrderPlaced, OrderPlacedV1, orders, types

V1 = OrderPlacedV1("o-1", "u-1", Decimal("12.50"))


def v1_event() -> Event:
    return types.to_event(V1, source="/orders", subject="o-1")


class Bag(msgspec.Struct):
    steps: list[int] = msgspec.field(default_factory=list)


def chain(versions: int, *, gap: int | None = None) -> EventTypes:
    """A type whose upcaster from version i appends i to ``steps``; newest is ``versions``."""
    registry = EventTypes()
    registry.add(Bag, "bag", version=versions)
    for step in range(1, versions):
        if step != gap:
            registry.add_upcaster("bag", _append(step), from_version=step)
    return registry


def _append(step: int) -> object:
    return lambda data: {**data, "steps": [*data.get("steps", []), step]}


def bag_event(version: int, steps: list[int]) -> Event:
    return Event(
        type="bag", source="/b", data={"steps": steps}, extensions={SCHEMA_VERSION: version}
    )


# -- the seed's case --------------------------------------------------------------------------


def test_v1_event_reads_as_v2_with_subtotal_and_unknown_new_fields() -> None:
    assert types.from_event(v1_event()) == OrderPlaced("o-1", "u-1", Decimal("12.50"), None, None)


def test_upcasting_leaves_the_event_data_as_stored() -> None:
    event = v1_event()
    types.from_event(event)
    assert event.data == {"orderId": "o-1", "userId": "u-1", "total": "12.50"}


def test_v2_event_reads_without_upcasting() -> None:
    placed = OrderPlaced("o-2", "u-1", Decimal(3), "SPRING", 2)
    assert types.from_event(types.to_event(placed, source="/orders")) == placed


# -- the chain --------------------------------------------------------------------------------


def test_chain_applies_every_step_in_order() -> None:
    assert chain(4).from_event(bag_event(1, [])) == Bag([1, 2, 3])


def test_missing_link_raises_codec_error_naming_it() -> None:
    with pytest.raises(CodecError, match="no upcaster from v2 to v3"):
        chain(4, gap=2).from_event(bag_event(1, []))


def test_event_above_the_gap_still_reads() -> None:
    assert chain(4, gap=2).from_event(bag_event(3, [])) == Bag([3])


def test_second_upcaster_for_one_version_raises_codec_error() -> None:
    registry = chain(3)
    with pytest.raises(CodecError, match="already has an upcaster from v1"):
        registry.add_upcaster("bag", lambda data: data, from_version=1)


def test_registering_the_same_upcaster_again_is_allowed() -> None:
    registry = EventTypes()
    step = _append(1)
    registry.add_upcaster("bag", step, from_version=1)  # type: ignore[arg-type]
    registry.add_upcaster("bag", step, from_version=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "version"), [("", 1), ("bag", 0)])
def test_upcaster_needs_a_name_and_a_version_from_one(name: str, version: int) -> None:
    with pytest.raises(CodecError):
        EventTypes().add_upcaster(name, lambda data: data, from_version=version)


def test_failing_upcaster_raises_codec_error() -> None:
    registry = EventTypes()
    registry.add(Bag, "bag", version=2)
    registry.add_upcaster("bag", lambda data: {"steps": data["missing"]}, from_version=1)
    with pytest.raises(CodecError, match="upcaster of bag v1 failed"):
        registry.from_event(bag_event(1, []))


def test_upcaster_returning_something_else_than_an_object_raises_codec_error() -> None:
    registry = EventTypes()
    registry.add(Bag, "bag", version=2)
    registry.add_upcaster("bag", lambda data: [data], from_version=1)  # type: ignore[arg-type,return-value]
    with pytest.raises(CodecError, match="returned list"):
        registry.from_event(bag_event(1, []))


def test_data_that_is_not_an_object_raises_codec_error() -> None:
    event = Event(type="bag", source="/b", data=[1], extensions={SCHEMA_VERSION: 1})
    with pytest.raises(CodecError, match="not an object"):
        chain(2).from_event(event)


@given(
    versions=st.integers(2, 8),
    start=st.integers(1, 8),
    before=st.lists(st.integers(-5, 0), max_size=3),
)
def test_upcasting_equals_applying_each_step_in_turn(
    versions: int, start: int, before: list[int]
) -> None:
    start = min(start, versions)
    registry = chain(versions)
    event = bag_event(start, before)
    assert registry.from_event(event) == Bag([*before, *range(start, versions)])
    assert event.data == {"steps": before}
    if start < versions:
        stepped = _append(start)({"steps": before})  # type: ignore[operator]
        assert registry.upcast("bag", start, event.data) == registry.upcast(
            "bag", start + 1, stepped
        )


@given(versions=st.integers(3, 8), gap=st.integers(1, 7), start=st.integers(1, 8))
def test_a_gap_fails_exactly_the_events_below_it(versions: int, gap: int, start: int) -> None:
    gap, start = min(gap, versions - 1), min(start, versions)
    registry = chain(versions, gap=gap)
    if start <= gap:
        with pytest.raises(CodecError, match=f"from v{gap} to v{gap + 1}"):
            registry.from_event(bag_event(start, []))
    else:
        assert registry.from_event(bag_event(start, [])) == Bag(list(range(start, versions)))


# -- through the repository, both styles, every backend ---------------------------------------


@pytest.mark.parametrize("model", [Order, orders], ids=["aggregate", "decider"])
async def test_stored_v1_history_loads_as_v2_and_stays_v1(backend: Backend, model: object) -> None:
    repo = Repository(backend.store, types, model, source="/orders")  # type: ignore[call-overload]
    id = uuid.uuid4().hex[:12]
    await backend.store.append(repo.stream_id(id), [v1_event()])  # written by the old code
    loaded = await repo.load(id)
    state = getattr(loaded, "state", loaded)  # a Versioned's state, or the Order itself
    assert (state.subtotal, state.item_count) == (Decimal("12.50"), None)
    [record] = await backend.store.read_stream(repo.stream_id(id))
    assert record.event.extensions[SCHEMA_VERSION] == 1
    assert record.event.data == {"orderId": "o-1", "userId": "u-1", "total": "12.50"}
    assert (await backend.store.verify()).ok
