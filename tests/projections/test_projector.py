"""Projection classes: handlers by type name or payload class, names, versions, checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from tests.projections.helpers import append

from tidings import Event, EventTypes
from tidings.adapters.memory.eventstore import MemoryEventStore
from tidings.adapters.memory.projections import MemoryReadModel, MemoryTx
from tidings.errors import ConfigurationError, UnknownEventTypeError
from tidings.eventstore.ports import RecordedEvent
from tidings.projections import Projection, ProjectionKey, ProjectionRunner, handles

types = EventTypes()


@types.register("shop.order.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    cents: int


@dataclass(frozen=True)
class NotRegistered:
    value: int


class Totals(Projection[MemoryTx]):
    name = "totals"
    types = types

    @handles(OrderPlaced)
    def placed(self, order: OrderPlaced, tx: MemoryTx) -> None:
        tx.incr("cents", order.cents)
        tx.set("last_position", tx.record.position if tx.record else None)

    @handles("shop.order.cancelled", "shop.order.refunded")
    def undone(self, record: RecordedEvent, tx: MemoryTx) -> None:
        tx.incr("undone")


class AuditedTotals(Totals):
    name = "audited"

    @handles("shop.order.audited")
    async def audited(self, record: RecordedEvent, tx: MemoryTx) -> None:
        tx.incr("audits")


async def test_handler_by_payload_class_receives_the_decoded_payload() -> None:
    async with MemoryEventStore() as store, MemoryReadModel() as model:
        event = types.to_event(OrderPlaced("o-1", 250), source="/shop")
        await append(store, [event, Event(type="shop.order.refunded", source="/shop")])
        async with ProjectionRunner(store, model, [Totals()]) as runner:
            await runner.wait_for(2, timeout=5)
        assert model.data("totals") == {"cents": 250, "last_position": 1, "undone": 1}


async def test_async_handlers_of_a_subclass_run_with_the_inherited_ones() -> None:
    async with MemoryEventStore() as store, MemoryReadModel() as model:
        await append(store, [Event(type="shop.order.audited", source="/shop")])
        await append(store, [Event(type="shop.order.cancelled", source="/shop")])
        async with ProjectionRunner(store, model, [AuditedTotals()]) as runner:
            await runner.wait_for(2, timeout=5)
        assert model.data("audited") == {"audits": 1, "undone": 1}


def test_dispatch_maps_every_declared_type_name() -> None:
    assert sorted(AuditedTotals().dispatch()) == [
        "shop.order.audited",
        "shop.order.cancelled",
        "shop.order.placed",
        "shop.order.refunded",
    ]


def test_has_async_handlers_is_true_only_with_an_async_handler() -> None:
    assert (Totals().has_async_handlers(), AuditedTotals().has_async_handlers()) == (False, True)


def test_name_and_version_given_to_init_override_the_class() -> None:
    assert Totals(name="totals_eu", version=3).key == ProjectionKey("totals_eu", 3)


@pytest.mark.parametrize("name", ["", "Totals", "9lives", "a-b", "x" * 41])
def test_invalid_name_raises_configuration_error(name: str) -> None:
    with pytest.raises(ConfigurationError):
        Totals(name=name)


@pytest.mark.parametrize("version", [0, -1])
def test_invalid_version_raises_configuration_error(version: int) -> None:
    with pytest.raises(ConfigurationError):
        Totals(version=version)


def test_invalid_table_name_raises_configuration_error() -> None:
    class BadTables(Projection[MemoryTx]):
        name = "bad"
        tables = ("Orders",)

    with pytest.raises(ConfigurationError):
        BadTables()


def test_payload_class_handler_without_types_raises_configuration_error() -> None:
    class Untyped(Projection[MemoryTx]):
        name = "untyped"

        @handles(OrderPlaced)
        def placed(self, order: OrderPlaced, tx: MemoryTx) -> None: ...

    with pytest.raises(ConfigurationError):
        Untyped().dispatch()


def test_unregistered_payload_class_raises_unknown_event_type() -> None:
    class Unknown(Projection[MemoryTx]):
        name = "unknown"
        types = types

        @handles(NotRegistered)
        def seen(self, payload: NotRegistered, tx: MemoryTx) -> None: ...

    with pytest.raises(UnknownEventTypeError):
        Unknown().dispatch()


def test_handles_without_types_raises_value_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        handles()
