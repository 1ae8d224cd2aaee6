"""tidings.App on the memory broker: routing, decoding, settling, publishing, registration."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from tests.messaging.support import until

from tidings import App, Event, EventTypes
from tidings.adapters.memory.broker import MemoryBroker
from tidings.errors import ClosedError, ConfigurationError
from tidings.messaging import Delivery
from tidings.messaging.handlers import Context
from tidings.messaging.ports import HEADER_ORIGIN, HEADER_REASON

if TYPE_CHECKING:
    from tidings.messaging.dispatch import Slot  # never imported at run time

types = EventTypes()


@types.register("order.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    cents: int


@types.register("invoice.issued")
@dataclass(frozen=True)
class InvoiceIssued:
    order_id: str


@dataclass(frozen=True)
class NotRegistered:
    x: int


@pytest.fixture
def topic() -> str:
    return f"orders-{uuid.uuid4().hex[:8]}"


async def take(broker: MemoryBroker, topic: str, group: str, idle: float = 0.2) -> list[Delivery]:
    """Ack and return what ``group`` gets from ``topic`` until nothing comes for ``idle`` s."""
    got: list[Delivery] = []
    async with broker.subscribe(topic, group=group) as subscription:
        while True:
            try:
                delivery = await asyncio.wait_for(anext(subscription), idle)
            except TimeoutError:
                return got
            got.append(delivery)
            await delivery.ack()


async def place(broker: MemoryBroker, topic: str, *orders: OrderPlaced) -> list[Event]:
    events = [types.to_event(o, source="/shop", partitionkey=o.order_id) for o in orders]
    for event in events:
        await broker.publish(topic, [event])
    return events


async def test_handler_gets_the_decoded_payload_and_the_delivery_is_acked(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="billing", types=types)
    seen: list[tuple[OrderPlaced, int]] = []

    @app.handler(topic)
    async def bill(order: OrderPlaced, ctx: Context) -> None:
        seen.append((order, ctx.delivery.attempt))

    await place(broker, topic, OrderPlaced("o-1", 950))
    async with app.running():
        await until(lambda: app.stats.acked == 1)
    assert seen == [(OrderPlaced("o-1", 950), 1)]
    assert await take(broker, topic, "billing") == []


async def test_event_type_is_inferred_from_the_payload_annotation(topic: str) -> None:
    app = App("memory://", group="g", types=types)

    @app.handler(topic)
    async def one(order: OrderPlaced) -> None: ...

    assert [(r.event_type, r.payload) for r in app.routes] == [("order.placed", OrderPlaced)]


async def test_raw_handler_without_a_type_takes_the_types_nobody_else_handles(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="g", types=types)
    raw: list[str] = []
    typed: list[str] = []

    @app.handler(topic)
    async def placed(order: OrderPlaced) -> None:
        typed.append(order.order_id)

    @app.handler(topic)
    async def anything(event: Event) -> None:
        raw.append(event.type)

    await place(broker, topic, OrderPlaced("o-1", 1))
    await broker.publish(topic, [Event(type="cart.abandoned", source="/shop")])
    async with app.running():
        await until(lambda: app.stats.acked == 2)
    assert (typed, raw) == (["o-1"], ["cart.abandoned"])


async def test_an_event_of_an_unhandled_type_is_dead_lettered_with_the_reason(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="billing", types=types)

    @app.handler(topic)
    async def bill(order: OrderPlaced) -> None: ...

    await broker.publish(topic, [Event(type="cart.abandoned", source="/shop")])
    async with app.running():
        await until(lambda: app.stats.rejected == 1)
    [dead] = await take(broker, f"{topic}.dlq", "inspect")
    assert dead.event.type == "cart.abandoned"
    assert dead.headers[HEADER_REASON] == "no handler for cart.abandoned in billing"
    assert dead.headers[HEADER_ORIGIN] == topic


async def test_unhandled_ack_ignores_events_of_unknown_types(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="billing", types=types, unhandled="ack")

    @app.handler(topic)
    async def bill(order: OrderPlaced) -> None: ...

    await broker.publish(topic, [Event(type="cart.abandoned", source="/shop")])
    async with app.running():
        await until(lambda: app.stats.acked == 1)
    assert await take(broker, f"{topic}.dlq", "inspect") == []


async def test_a_payload_that_does_not_decode_is_dead_lettered_without_running_the_handler(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="billing", types=types)
    calls: list[object] = []

    @app.handler(topic)
    async def bill(order: OrderPlaced) -> None:
        calls.append(order)

    await broker.publish(topic, [Event(type="order.placed", source="/s", data={"cents": "x"})])
    async with app.running():
        await until(lambda: app.stats.rejected == 1)
    [dead] = await take(broker, f"{topic}.dlq", "inspect")
    assert dead.headers[HEADER_REASON].startswith("cannot decode order.placed:")
    assert calls == []


async def test_published_events_go_out_after_success_with_correlation_and_causation(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="billing", types=types)

    @app.handler(topic)
    async def bill(order: OrderPlaced, ctx: Context) -> None:
        await ctx.publish(f"{topic}-invoices", InvoiceIssued(order.order_id), key=order.order_id)

    [placed] = await place(broker, topic, OrderPlaced("o-1", 5))
    async with app.running():
        await until(lambda: app.stats.acked == 1)
    [issued] = await take(broker, f"{topic}-invoices", "inspect")
    assert issued.event.type == "invoice.issued"
    assert issued.event.causationid == placed.id
    assert issued.event.correlationid == placed.id  # the placed event started the transaction
    assert (issued.key, issued.event.partitionkey) == ("o-1", "o-1")
    assert issued.event.source == "/billing"


async def test_a_failed_attempt_publishes_nothing(broker: MemoryBroker, topic: str) -> None:
    app = App(broker, group="billing", types=types)
    attempts: list[int] = []

    @app.handler(topic)
    async def bill(order: OrderPlaced, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        await ctx.publish(f"{topic}-invoices", InvoiceIssued(f"try-{ctx.attempt}"))
        if ctx.attempt < 3:
            raise RuntimeError("flaky")

    await place(broker, topic, OrderPlaced("o-1", 5))
    async with app.running():
        await until(lambda: app.stats.acked == 1)
    published = await take(broker, f"{topic}-invoices", "inspect")
    assert attempts == [1, 2, 3]
    assert [d.event.data for d in published] == [{"order_id": "try-3"}]


async def test_a_redelivered_event_republishes_the_same_ids(
    broker: MemoryBroker, topic: str
) -> None:
    ids: list[str] = []

    async def publish(order: OrderPlaced, ctx: Context) -> None:
        event = await ctx.publish(f"{topic}-invoices", InvoiceIssued(order.order_id))
        ids.append(event.id)

    await place(broker, topic, OrderPlaced("o-1", 5))
    for run in (1, 2):  # the same event, handled twice by the same group
        app = App(broker, group="billing", types=types)
        app.add_handler(topic, publish)
        async with app.running():
            await until(lambda run=run: len(ids) == run)
        await broker.replay(topic, group="billing", offsets=dict.fromkeys(range(4), 0))
    assert ids[0] == ids[1]
    assert len(await take(broker, f"{topic}-invoices", "inspect")) == 1


async def test_a_failure_without_dead_letter_middleware_is_nacked_and_comes_back(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="billing", types=types, middleware=[])
    deliveries: list[int] = []

    @app.handler(topic)
    async def bill(order: OrderPlaced, ctx: Context) -> None:
        deliveries.append(ctx.delivery.attempt)
        if ctx.delivery.attempt == 1:
            raise RuntimeError("not yet")

    await place(broker, topic, OrderPlaced("o-1", 5))
    async with app.running():
        await until(lambda: app.stats.acked == 1)
    assert deliveries == [1, 2]
    assert app.stats.nacked == 1


@pytest.mark.parametrize(
    ("register", "message"),
    [
        (lambda app: app.add_handler("t", lambda e: None), "must be an async function"),
        (lambda app: app.add_handler("t", _takes_three), r"must take \(payload\) or"),
        (lambda app: app.add_handler("t", _not_registered), "NotRegistered is not registered"),
        (lambda app: app.add_handler("t", _placed, event_type="x"), "not registered as 'x'"),
    ],
    ids=["sync", "arity", "unregistered", "mismatch"],
)
def test_registration_refuses_handlers_it_cannot_run(
    register: Callable[[App], object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        register(App("memory://", group="g", types=types))


def test_only_the_payload_annotation_has_to_resolve_at_run_time() -> None:
    app = App("memory://", group="g", types=types)
    assert app.add_handler("t", _context_only_for_type_checkers).payload is OrderPlaced


def test_a_payload_class_defined_in_a_function_needs_its_event_type_named() -> None:
    local = EventTypes()

    @local.register("local.thing")
    @dataclass(frozen=True)
    class Thing:
        n: int

    async def handle(thing: Thing) -> None: ...

    app = App("memory://", group="g", types=local)
    with pytest.raises(ConfigurationError, match="name the event type"):
        app.add_handler("t", handle)
    assert app.add_handler("t", handle, event_type="local.thing").payload is Thing


def test_registration_refuses_a_second_handler_for_a_topic_and_type() -> None:
    app = App("memory://", group="g", types=types)
    app.add_handler("t", _placed)
    with pytest.raises(ConfigurationError, match="already has a handler: _placed"):
        app.add_handler("t", _placed)


async def test_run_refuses_an_app_without_handlers() -> None:
    with pytest.raises(ConfigurationError, match="no handlers"):
        await App("memory://", group="g").run()


async def test_run_raises_when_the_broker_closes_under_it(broker: MemoryBroker, topic: str) -> None:
    app = App(broker, group="g", types=types)
    app.add_handler(topic, _placed)
    running = asyncio.create_task(app.run())
    await asyncio.sleep(0.05)
    await broker.aclose()
    with pytest.raises(ClosedError):
        await asyncio.wait_for(running, 2.0)


async def test_an_app_opens_and_closes_a_broker_given_by_url(topic: str) -> None:
    app = App("memory://", group="g", types=types)
    app.add_handler(topic, _placed)
    async with app.running():
        pass
    async with app.running():  # runs again after a stop
        pass
    assert app.stats.received == 0


async def _placed(order: OrderPlaced) -> None: ...


async def _context_only_for_type_checkers(order: OrderPlaced, ctx: Slot) -> None: ...


async def _takes_three(order: OrderPlaced, ctx: Context, extra: int) -> None: ...


async def _not_registered(payload: NotRegistered) -> None: ...
