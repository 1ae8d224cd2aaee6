"""Conformance cases for `TopicTransfer`: what ``tidings topics migrate`` reads and writes.

Every broker must implement `tidings.messaging.transfer.TopicTransfer`, so that any topic can
be moved to any backend; a broker that does not fails these cases, saying so.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tidings.messaging.ports import Broker, Delivery, Operation, Retention, partition_for
from tidings.messaging.transfer import TopicTransfer
from tidings.testing.conformance.broker.helpers import (
    WAIT,
    Consumer,
    _Fixtures,
    group_name,
    make_events,
    numbers,
)
from tidings.testing.conformance.broker.results import proves

__all__ = ["TransferCases"]


class TransferCases(_Fixtures):
    """Copying out and in: partitions read in order, positions per group, appends in place."""

    def transfer(self, broker: Broker) -> TopicTransfer:
        """Return the broker as a `TopicTransfer`, or fail the case (every broker must be one)."""
        if isinstance(broker, TopicTransfer):
            return broker
        pytest.fail(
            f"{type(broker).__name__} does not implement tidings.messaging.transfer."
            "TopicTransfer: every broker must, so that its topics can be migrated"
        )

    async def test_describe_topic_of_a_missing_topic_is_none(
        self, broker: Broker, topic: str
    ) -> None:
        assert await self.transfer(broker).describe_topic(topic) is None

    async def test_describe_topic_gives_partitions_and_retention(
        self, broker: Broker, topic: str
    ) -> None:
        retention = Retention(max_age=timedelta(hours=2), max_count=500)
        created = await broker.create_topic(topic, partitions=3, retention=retention)
        described = await self.transfer(broker).describe_topic(topic)
        assert described == created
        assert described is not None
        assert described.partitions == 3

    async def test_read_partition_returns_messages_in_order_from_an_offset(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=3)
        events = make_events(6, key="k")
        await broker.publish(topic, events)
        partition = partition_for("k", 3)
        got = await self.transfer(broker).read_partition(topic, partition, from_offset=2, limit=3)
        assert [(m.partition, m.offset, m.key) for m in got] == [
            (partition, o, "k") for o in (2, 3, 4)
        ]
        assert [m.event for m in got] == events[2:5]

    async def test_append_to_a_partition_the_topic_lacks_is_a_clear_error(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=2)
        with pytest.raises(ValueError, match="no partition 2"):
            await self.transfer(broker).append_to_partition(topic, 2, [(make_events(1)[0], "k")])

    @proves(Operation.RETENTION_COUNT)
    async def test_read_partition_from_0_after_retention_starts_at_the_first_kept(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=1, retention=Retention(max_count=3))
        await broker.publish(topic, make_events(10, key="k"))
        await self.harness.enforce_retention(broker)
        got = await self.transfer(broker).read_partition(topic, 0, from_offset=0, limit=2)
        assert [m.offset for m in got] == [7, 8]

    async def test_read_partition_past_the_end_returns_nothing(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=1)
        await broker.publish(topic, make_events(2, key="k"))
        assert await self.transfer(broker).read_partition(topic, 0, from_offset=2) == []

    async def test_read_partition_gives_an_undecodable_payload_back_raw(
        self, broker: Broker, topic: str
    ) -> None:
        self.require("publish_raw")
        await broker.create_topic(topic, partitions=1)
        await self.harness.publish_raw(broker, topic, b"\x00 not an event")
        await broker.publish(topic, make_events(1, key="k"))
        got = await self.transfer(broker).read_partition(topic, 0)
        assert [(m.offset, m.event, m.payload) for m in got[:1]] == [
            (0, None, b"\x00 not an event")
        ]
        assert got[1].event is not None
        assert got[1].payload == b""

    async def test_append_to_partition_places_events_there_whatever_their_key(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=3)
        target = (partition_for("k", 3) + 1) % 3
        events = make_events(3, key="k")
        results = await self.transfer(broker).append_to_partition(
            topic, target, [(e, "k") for e in events]
        )
        assert [(r.partition, r.offset, r.duplicate) for r in results] == [
            (target, o, False) for o in range(3)
        ]
        async with Consumer(broker, topic, group=group_name()) as consumer:
            got = await consumer.take(3)
        assert [(d.partition, d.key, d.event) for d in got] == [(target, "k", e) for e in events]

    async def test_append_to_partition_stores_an_event_id_once(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=2)
        transfer = self.transfer(broker)
        events = make_events(2, key="k")
        first = await transfer.append_to_partition(topic, 1, [(e, "k") for e in events])
        again = await transfer.append_to_partition(topic, 1, [(e, "k") for e in events])
        assert [r.duplicate for r in again] == [True, True]
        assert [(r.partition, r.offset) for r in again] == [(r.partition, r.offset) for r in first]
        stored = await transfer.read_partition(topic, 1)
        assert [m.event for m in stored] == events

    async def test_group_positions_are_the_lowest_unsettled_offset(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=1)
        await broker.publish(topic, make_events(6, key="k"))
        transfer = self.transfer(broker)

        async def settle(delivery: Delivery) -> None:
            n = numbers([delivery])[0]
            if n == 2:
                await delivery.nack(delay=600.0)
            elif n != 4:
                await delivery.ack()  # 4 stays unsettled

        behind, done = group_name("behind"), group_name("done")
        async with (
            Consumer(broker, topic, group=behind, handler=settle) as partial,
            Consumer(broker, topic, group=done) as complete,
        ):
            await partial.take(6)
            await complete.take(6)
            await _positions_become(transfer, topic, {behind: {0: 2}, done: {0: 6}})

    async def test_group_positions_of_a_missing_topic_are_empty(
        self, broker: Broker, topic: str
    ) -> None:
        assert await self.transfer(broker).group_positions(topic) == {}


async def _positions_become(
    transfer: TopicTransfer, topic: str, expected: dict[str, dict[int, int]]
) -> None:
    """Wait until `group_positions` gives ``expected`` (settlements may land a little later)."""
    seen: dict[str, dict[int, int]] = {}
    try:
        async with asyncio.timeout(WAIT):
            while True:
                positions = await transfer.group_positions(topic)
                seen = {group: dict(offsets) for group, offsets in positions.items()}
                if seen == expected:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"group positions are {seen}, expected {expected} within {WAIT}s")
