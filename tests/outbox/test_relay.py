"""The relay over both outbox tables: what commits is published once, in order; nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tests.outbox.conftest import OutboxDb, order_event

from tidings.adapters.memory.broker import MemoryBroker
from tidings.errors import MalformedEventError
from tidings.events import Event
from tidings.lifecycle import Resource
from tidings.messaging.ports import Broker
from tidings.outbox import Relay
from tidings.outbox.ports import OutboxSource


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    async with MemoryBroker() as opened:
        yield opened


async def published(broker: Broker, expected: int, topic: str = "orders") -> list[Event]:
    """Every event on the topic: a fresh group reads until ``expected`` came and 0.3 s more."""
    seen: list[Event] = []
    async with broker.subscribe(topic, group=f"check-{id(seen)}") as deliveries:
        iterator = aiter(deliveries)
        while True:
            patience = 10.0 if len(seen) < expected else 0.3
            try:
                delivery = await asyncio.wait_for(anext(iterator), patience)
            except TimeoutError:
                break
            seen.append(delivery.event)
            await delivery.ack()
    return seen


async def opened(source: OutboxSource) -> OutboxSource:
    assert isinstance(source, Resource)
    await source.open()
    return source


async def test_relay_publishes_each_committed_event_once_in_order(
    outbox_db: OutboxDb, broker: MemoryBroker
) -> None:
    events = [order_event(f"o{i % 3}", i) for i in range(12)]
    for start in range(0, 12, 4):
        await outbox_db.write(events[start : start + 4])
    source = await opened(outbox_db.source())
    try:
        assert await Relay(source, broker, batch_size=5).drain() == 12
    finally:
        await source.aclose()  # type: ignore[attr-defined]
    seen = await published(broker, 12)
    assert sorted(e.id for e in seen) == sorted(e.id for e in events)
    for order in ("o0", "o1", "o2"):
        got = [e.data for e in seen if e.subject == order]
        assert got == [e.data for e in events if e.subject == order]
    assert {e.partitionkey for e in seen} == {"o0", "o1", "o2"}


async def test_rolled_back_events_are_never_relayed(
    outbox_db: OutboxDb, broker: MemoryBroker
) -> None:
    kept, dropped = order_event("kept"), order_event("dropped")
    await outbox_db.write([dropped], commit=False)
    await outbox_db.write([kept])
    source = await opened(outbox_db.source())
    try:
        assert await Relay(source, broker).drain() == 1
        assert (await source.status()).backlog == 0
    finally:
        await source.aclose()  # type: ignore[attr-defined]
    assert [e.id for e in await published(broker, 1)] == [kept.id]


async def test_crash_before_mark_republishes_and_the_broker_drops_the_repeat(
    outbox_db: OutboxDb, broker: MemoryBroker
) -> None:
    events = [order_event("o1", i) for i in range(3)]
    await outbox_db.write(events)
    first = await opened(outbox_db.source())
    batch = await first.fetch(10)
    await broker.publish("orders", [m.event for m in batch])
    await first.aclose()  # type: ignore[attr-defined]  # gone without marking: a crash
    second = await opened(outbox_db.source())
    try:
        assert await Relay(second, broker).drain() == 3
    finally:
        await second.aclose()  # type: ignore[attr-defined]
    seen = await published(broker, 3)
    assert [e.id for e in seen] == [e.id for e in events]


async def test_released_batch_is_fetched_again(outbox_db: OutboxDb) -> None:
    await outbox_db.write([order_event("o1")])
    source = await opened(outbox_db.source())
    try:
        batch = await source.fetch(10)
        await source.release(batch)
        again = await source.fetch(10)
        assert [m.event.id for m in again] == [m.event.id for m in batch]
        await source.mark_relayed(again)
        assert await source.fetch(10) == []
    finally:
        await source.aclose()  # type: ignore[attr-defined]


async def test_retention_keeps_relayed_rows_and_status_counts_them(outbox_db: OutboxDb) -> None:
    await outbox_db.write([order_event("o1", 0), order_event("o2", 1)])
    source = await opened(outbox_db.source(retention=3600))
    try:
        before = await source.status()
        assert (before.backlog, before.relayed) == (2, 0)
        assert before.oldest is not None
        await source.mark_relayed(await source.fetch(10))
        after = await source.status()
        assert (after.backlog, after.oldest, after.relayed) == (0, None, 2)
    finally:
        await source.aclose()  # type: ignore[attr-defined]


async def test_wait_returns_soon_after_another_connection_commits(outbox_db: OutboxDb) -> None:
    source = await opened(outbox_db.source())
    try:
        assert await source.fetch(10) == []
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.create_task(source.wait(10.0))
        await asyncio.sleep(0.2)
        await outbox_db.write([order_event("o1")])
        await asyncio.wait_for(waiting, 5.0)
        assert loop.time() - started < 5.0
        assert len(await source.fetch(10)) == 1
    finally:
        await source.aclose()  # type: ignore[attr-defined]


async def test_run_relays_what_commits_while_it_runs(
    outbox_db: OutboxDb, broker: MemoryBroker
) -> None:
    source = await opened(outbox_db.source())
    stop = asyncio.Event()
    relay = Relay(source, broker, idle_wait=5.0)
    running = asyncio.create_task(relay.run(stop))
    try:
        events = [order_event(f"o{i}") for i in range(5)]
        for event in events:
            await outbox_db.write([event])
        seen = await published(broker, 5)
        assert sorted(e.id for e in seen) == sorted(e.id for e in events)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await source.aclose()  # type: ignore[attr-defined]


def test_an_event_without_an_aggregate_is_refused() -> None:
    from tidings.outbox.rows import outbox_row

    with pytest.raises(ValueError, match="aggregate id"):
        outbox_row(Event(type="t", source="/s"), topic="orders")


async def test_a_row_that_is_not_an_event_stops_the_relay_with_an_error_naming_it(
    outbox_db: OutboxDb, broker: MemoryBroker
) -> None:
    await outbox_db.write([order_event("o1")])
    await outbox_db.execute('UPDATE {table} SET payload = \'{"not": "an event"}\'')
    source = await opened(outbox_db.source())
    try:
        with pytest.raises(MalformedEventError, match=r"outbox row seq=\d+ does not hold an event"):
            await Relay(source, broker).relay_once()
        await source.release([])  # the source is still usable: the row was not taken
        assert (await source.status()).backlog == 1
    finally:
        await source.aclose()  # type: ignore[attr-defined]
