"""The correlation middleware: what a handler publishes names its cause and its transaction."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest
from tests.messaging.support import until

from tidings import App, Event, EventTypes
from tidings.adapters.memory.broker import MemoryBroker
from tidings.messaging.handlers import Context
from tidings.messaging.middleware import correlation
from tidings.messaging.middleware.correlation import stamp

types = EventTypes()


@types.register("order.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str


@types.register("invoice.issued")
@dataclass(frozen=True)
class InvoiceIssued:
    order_id: str


def test_stamp_inherits_the_correlation_id_and_names_the_cause() -> None:
    cause = Event(type="a", source="/t", correlationid="tx-1")
    stamped = stamp(Event(type="b", source="/t"), cause)
    assert (stamped.correlationid, stamped.causationid) == ("tx-1", cause.id)


def test_stamp_takes_the_causes_id_when_the_cause_started_the_transaction() -> None:
    cause = Event(type="a", source="/t")
    assert stamp(Event(type="b", source="/t"), cause).correlationid == cause.id


def test_stamp_keeps_ids_the_handler_set() -> None:
    mine = Event(type="b", source="/t", correlationid="mine", causationid="also-mine")
    assert stamp(mine, Event(type="a", source="/t", correlationid="tx")) is mine


async def published(broker: MemoryBroker, app: App, topic: str) -> Event:
    async with app.running():
        await until(lambda: app.stats.acked > 0)
    async with broker.subscribe(f"{topic}-out", group="inspect") as out:
        return (await asyncio.wait_for(anext(out), 1.0)).event


async def handle(order: OrderPlaced, ctx: Context) -> None:
    await ctx.publish(f"{ctx.delivery.topic}-out", InvoiceIssued(order.order_id))
    await ctx.publish(f"{ctx.delivery.topic}-out", Event(type="raw", source="/t"))


@pytest.mark.parametrize("stamped", [True, False], ids=["correlation", "without"])
async def test_events_a_handler_publishes_are_stamped_only_by_the_middleware(
    broker: MemoryBroker, stamped: bool
) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    placed = types.to_event(OrderPlaced("o-1"), source="/shop", correlationid="checkout-7")
    await broker.publish(topic, [placed])
    app = App(broker, group="g", types=types, middleware=[correlation()] if stamped else [])
    app.add_handler(topic, handle)
    event = await published(broker, app, topic)
    ids = (event.correlationid, event.causationid)
    assert ids == (("checkout-7", placed.id) if stamped else (None, None))
