"""Conformance cases for replay, retention and durability across a restart of the broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tidings.messaging.ports import Broker, Delivery, Operation, Retention
from tidings.testing.conformance.broker.helpers import (
    Consumer,
    _Fixtures,
    group_name,
    keep,
    make_events,
    numbers,
)
from tidings.testing.conformance.broker.results import proves


class ReplayCases(_Fixtures):
    """Replay: a group moved back to an offset or a time gets those events again."""

    @proves(Operation.REPLAY_OFFSET)
    async def test_replay_from_an_offset_delivers_again_from_there(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=1)
        await broker.publish(topic, make_events(6))
        group = group_name()
        async with Consumer(broker, topic, group=group) as consumer:
            await consumer.take(6)
        await broker.replay(topic, group=group, offsets={0: 2})
        async with Consumer(broker, topic, group=group) as again:
            got = await again.take(4)
            await again.expect_quiet(0.3)
        assert numbers(got) == [2, 3, 4, 5]
        assert [d.offset for d in got] == [2, 3, 4, 5]
        assert {d.attempt for d in got} == {1}

    @proves(Operation.REPLAY_OFFSET)
    async def test_replay_reaches_a_member_that_is_still_subscribed(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=1)
        await broker.publish(topic, make_events(3))
        group = group_name()
        async with Consumer(broker, topic, group=group) as consumer:
            await consumer.take(3)
            await broker.replay(topic, group=group, offsets={0: 1})
            assert numbers(await consumer.take(2)) == [1, 2]

    @proves(Operation.REPLAY_OFFSET)
    async def test_replay_forward_skips_events(self, broker: Broker, topic: str) -> None:
        await broker.create_topic(topic, partitions=1)
        await broker.publish(topic, make_events(5))
        group = group_name()
        await broker.replay(topic, group=group, offsets={0: 3})
        async with Consumer(broker, topic, group=group) as consumer:
            assert numbers(await consumer.take(2)) == [3, 4]
            await consumer.expect_quiet(0.3)

    @proves(Operation.REPLAY_TIME)
    async def test_replay_from_a_time_delivers_the_events_since(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=2)
        await broker.publish(topic, make_events(3, tag="before"))
        await asyncio.sleep(0.1)
        since = datetime.now(UTC)
        await asyncio.sleep(0.1)
        await broker.publish(topic, make_events(3, tag="after"))
        group = group_name()
        async with Consumer(broker, topic, group=group) as consumer:
            await consumer.take(6)
        await broker.replay(topic, group=group, since=since)
        async with Consumer(broker, topic, group=group) as again:
            got = await again.take(3)
            await again.expect_quiet(0.3)
        assert {d.event.data["tag"] for d in got} == {"after"}  # type: ignore[index]


class RetentionCases(_Fixtures):
    """Retention: old events go, but never one that a group has not settled."""

    @proves(Operation.RETENTION_COUNT)
    async def test_retention_by_count_keeps_the_newest(self, broker: Broker, topic: str) -> None:
        await broker.create_topic(topic, partitions=1, retention=Retention(max_count=3))
        await broker.publish(topic, make_events(10))
        await self.harness.enforce_retention(broker)
        async with Consumer(broker, topic, group=group_name()) as consumer:
            assert numbers(await consumer.take(3)) == [7, 8, 9]
            await consumer.expect_quiet(0.3)

    @proves(Operation.RETENTION_AGE)
    async def test_retention_by_age_drops_old_events(self, broker: Broker, topic: str) -> None:
        age = timedelta(seconds=2 * self.tick)
        await broker.create_topic(topic, partitions=1, retention=Retention(max_age=age))
        await broker.publish(topic, make_events(3, tag="old"))
        await asyncio.sleep(3 * self.tick)
        await broker.publish(topic, make_events(2, tag="new"))
        await self.harness.enforce_retention(broker)
        async with Consumer(broker, topic, group=group_name()) as consumer:
            got = await consumer.take(2)
            await consumer.expect_quiet(0.3)
        assert [d.event.data["tag"] for d in got] == ["new", "new"]  # type: ignore[index]

    @proves(Operation.RETENTION_COUNT)
    async def test_retention_keeps_events_a_group_has_not_settled(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=1, retention=Retention(max_count=2))
        group, deadline = group_name(), 3 * self.tick
        async with Consumer(broker, topic, group=group, handler=keep, ack_deadline=deadline) as c:
            await broker.publish(topic, make_events(6))
            await c.take(6)
        await self.harness.enforce_retention(broker)
        async with Consumer(broker, topic, group=group, ack_deadline=deadline) as consumer:
            assert numbers(await consumer.take(6)) == [0, 1, 2, 3, 4, 5]
        await self.harness.enforce_retention(broker)
        async with Consumer(broker, topic, group=group_name()) as late:
            assert numbers(await late.take(2)) == [4, 5]
            await late.expect_quiet(0.3)


class DurabilityCases(_Fixtures):
    """Durability: events and group progress survive closing the broker and opening it again."""

    @proves(Operation.DURABLE_OFFSETS)
    async def test_group_progress_survives_a_restart(self, broker: Broker, topic: str) -> None:
        self.require("reopen")
        await broker.create_topic(topic, partitions=1)
        await broker.publish(topic, make_events(10))
        group = group_name()

        async def ack_four(delivery: Delivery) -> None:
            if delivery.offset < 4:
                await delivery.ack()

        deadline = 3 * self.tick
        async with Consumer(
            broker, topic, group=group, handler=ack_four, ack_deadline=deadline
        ) as consumer:
            await consumer.take(10)  # the 5th arrives after the 4th was acked
        await broker.aclose()
        reopened = await self.harness.open_again(broker)
        async with Consumer(reopened, topic, group=group, ack_deadline=deadline) as again:
            rest = await again.take(6)
            await again.expect_quiet(0.3)
        assert numbers(rest) == [4, 5, 6, 7, 8, 9]
        assert {d.attempt for d in rest} == {2}

    @proves(Operation.DURABLE_OFFSETS)
    async def test_an_unsettled_delivery_survives_a_restart(
        self, broker: Broker, topic: str
    ) -> None:
        self.require("reopen")
        await broker.publish(topic, make_events(1, key="k"))
        group, deadline = group_name(), 3 * self.tick
        async with Consumer(broker, topic, group=group, handler=keep, ack_deadline=deadline) as c:
            await c.take(1)
        await broker.aclose()
        reopened = await self.harness.open_again(broker)
        async with Consumer(reopened, topic, group=group, ack_deadline=deadline) as again:
            got = (await again.take(1))[0]
        assert got.attempt == 2
        assert got.event == c.seen[0].event
