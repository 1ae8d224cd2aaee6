"""Conformance cases for publishing: round trip, partitions and offsets, idempotent publish."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tidings.events import Event
from tidings.messaging.ports import Broker, Operation, partition_for
from tidings.testing.conformance.broker.helpers import (
    SOURCE,
    Consumer,
    _Fixtures,
    group_name,
    make_events,
    numbers,
)
from tidings.testing.conformance.broker.results import proves


def _rich_events() -> list[Event]:
    moment = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    return [
        Event(
            type="order.placed",
            source="/orders",
            data={"total": 12.5, "items": ["a", "b"], "note": "h\u00e9llo \u2713", "none": None},
            subject="order-1",
            time=moment,
            datacontenttype="application/json",
            dataschema="https://example.com/schemas/order-placed",
            partitionkey="order-1",
            correlationid="corr-1",
            causationid="cause-1",
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            tracestate="vendor=1",
            extensions={"tenant": "acme", "attempt": 3, "urgent": True},
        ),
        Event(type="order.noted", source="/orders", data="plain", partitionkey="order-1"),
        Event(
            type="order.noted",
            source="/orders",
            data=[1, 2.5, False],
            time=moment.astimezone(timezone(timedelta(hours=2))),
            partitionkey="order-1",
        ),
        Event(type="blob.stored", source="/blobs", data=b"\x00\xffbytes", partitionkey="order-1"),
    ]


class PublishCases(_Fixtures):
    """Publishing: what goes in comes out, where the key says, once per event id."""

    async def test_round_trip_keeps_every_attribute(self, broker: Broker, topic: str) -> None:
        events = _rich_events()
        await broker.publish(topic, events)
        async with Consumer(broker, topic, group=group_name()) as consumer:
            got = await consumer.take(len(events))
        assert [d.event for d in got] == events
        assert {d.topic for d in got} == {topic}
        assert [d.key for d in got] == ["order-1"] * len(events)

    async def test_publish_returns_dense_offsets_per_partition(
        self, broker: Broker, topic: str
    ) -> None:
        events = [e for key in ("a", "b", "c") for e in make_events(4, key=key)]
        results = await broker.publish(topic, events)
        by_partition: dict[int, list[int]] = {}
        for result in results:
            by_partition.setdefault(result.partition, []).append(result.offset)
        for offsets in by_partition.values():
            assert offsets == list(range(len(offsets)))
        assert [r.event_id for r in results] == [e.id for e in events]
        assert not any(r.duplicate for r in results)

    @proves(Operation.ORDER_PER_KEY)
    async def test_publish_puts_a_key_on_the_partition_of_its_hash(
        self, broker: Broker, topic: str
    ) -> None:
        info = await broker.create_topic(topic, partitions=5)
        results = await broker.publish(topic, make_events(3), key="customer-7")
        assert {r.partition for r in results} == {partition_for("customer-7", info.partitions)}

    @proves(Operation.ORDER_PER_KEY)
    async def test_publish_keys_by_partitionkey_when_no_key_is_given(
        self, broker: Broker, topic: str
    ) -> None:
        info = await broker.create_topic(topic, partitions=5)
        results = await broker.publish(topic, make_events(3, key="order-9"))
        assert {r.partition for r in results} == {partition_for("order-9", info.partitions)}
        async with Consumer(broker, topic, group=group_name()) as consumer:
            assert {d.key for d in await consumer.take(3)} == {"order-9"}

    @proves(Operation.IDEMPOTENT_PUBLISH)
    async def test_publish_of_a_known_event_id_stores_nothing_new(
        self, broker: Broker, topic: str
    ) -> None:
        events = make_events(3, key="k")
        first = await broker.publish(topic, events)
        again = await broker.publish(topic, [events[1]])
        assert again[0].duplicate
        assert (again[0].partition, again[0].offset) == (first[1].partition, first[1].offset)
        async with Consumer(broker, topic, group=group_name()) as consumer:
            assert numbers(await consumer.take(3)) == [0, 1, 2]
            await consumer.expect_quiet()

    @proves(Operation.IDEMPOTENT_PUBLISH)
    async def test_publish_of_one_event_twice_in_a_batch_stores_it_once(
        self, broker: Broker, topic: str
    ) -> None:
        event = make_events(1, key="k")[0]
        results = await broker.publish(topic, [event, event])
        assert [r.duplicate for r in results] == [False, True]
        async with Consumer(broker, topic, group=group_name()) as consumer:
            await consumer.take(1)
            await consumer.expect_quiet()

    async def test_create_topic_twice_keeps_the_first_shape(
        self, broker: Broker, topic: str
    ) -> None:
        first = await broker.create_topic(topic, partitions=3)
        again = await broker.create_topic(topic, partitions=7)
        assert (first.partitions, again.partitions) == (3, 3)

    async def test_publish_to_a_missing_topic_creates_it(self, broker: Broker, topic: str) -> None:
        results = await broker.publish(topic, make_events(1))
        info = await broker.create_topic(topic, partitions=9)
        assert 0 <= results[0].partition < info.partitions < 9

    async def test_publish_of_nothing_returns_nothing(self, broker: Broker, topic: str) -> None:
        assert await broker.publish(topic, []) == []

    async def test_publish_refuses_what_is_not_an_event(self, broker: Broker, topic: str) -> None:
        with pytest.raises(TypeError):
            await broker.publish(topic, [{"type": "x", "source": SOURCE}])  # type: ignore[list-item]
