"""Conformance cases for consumer groups: fan-out, work sharing, where a group starts, order."""

from __future__ import annotations

import asyncio

from tidings.messaging.ports import Broker, Delivery, Operation, StartFrom
from tidings.testing.conformance.broker.helpers import (
    Consumer,
    _Fixtures,
    eventually,
    group_name,
    make_events,
    numbers,
)
from tidings.testing.conformance.broker.ordering import run_order_torture
from tidings.testing.conformance.broker.results import proves


def _ids(deliveries: list[Delivery]) -> list[str]:
    return [d.event.id for d in deliveries]


class GroupCases(_Fixtures):
    """Groups: every group gets everything, members share it, order holds per key."""

    @proves(Operation.FAN_OUT)
    async def test_every_group_receives_every_event(self, broker: Broker, topic: str) -> None:
        events = make_events(12, key="k")
        async with (
            Consumer(broker, topic, group=group_name("a")) as first,
            Consumer(broker, topic, group=group_name("b")) as second,
        ):
            await broker.publish(topic, events)
            assert sorted(_ids(await first.take(12))) == sorted(e.id for e in events)
            assert sorted(_ids(await second.take(12))) == sorted(e.id for e in events)

    @proves(Operation.WORK_SHARING)
    async def test_members_of_a_group_share_the_work(self, broker: Broker, topic: str) -> None:
        await broker.create_topic(topic, partitions=4)
        group = group_name()
        events = [e for n in range(16) for e in make_events(10, key=f"key-{n}")]
        async with (
            Consumer(broker, topic, group=group) as first,
            Consumer(broker, topic, group=group) as second,
        ):
            await asyncio.sleep(self.tick / 3)  # both joined and idle before the work arrives
            await broker.publish(topic, events)
            await eventually(lambda: len(first.seen) + len(second.seen) >= len(events))
            await asyncio.sleep(0.2)  # time for a duplicate to show
        assert first.seen, "the second member got all the work"
        assert second.seen, "the first member got all the work"
        assert sorted(_ids(first.seen) + _ids(second.seen)) == sorted(e.id for e in events)

    @proves(Operation.WORK_SHARING)
    async def test_member_joining_later_takes_over_partitions(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=4)
        group = group_name()
        await broker.publish(topic, [e for n in range(8) for e in make_events(50, key=f"k{n}")])

        async def slowly(delivery: Delivery) -> None:
            await asyncio.sleep(0.005)
            await delivery.ack()

        async with Consumer(broker, topic, group=group, handler=slowly, prefetch=8) as first:
            await first.take(5)
            async with Consumer(broker, topic, group=group, prefetch=8) as second:
                await second.take(5)
                await eventually(lambda: len({*_ids(first.seen), *_ids(second.seen)}) >= 400)
        assert len(first.seen) < 400, "the first member kept every partition"

    async def test_new_group_from_earliest_reads_the_history(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.publish(topic, make_events(5, key="k"))
        async with Consumer(broker, topic, group=group_name()) as consumer:
            assert numbers(await consumer.take(5)) == [0, 1, 2, 3, 4]

    async def test_new_group_from_latest_skips_earlier_events(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.publish(topic, make_events(5, key="k", tag="old"))
        group = group_name()
        async with Consumer(broker, topic, group=group, start=StartFrom.LATEST) as consumer:
            await broker.publish(topic, make_events(2, key="k", tag="new"))
            got = await consumer.take(2)
            await consumer.expect_quiet(0.3)
        assert [d.event.data["tag"] for d in got] == ["new", "new"]  # type: ignore[index]

    async def test_an_existing_group_ignores_start_latest(self, broker: Broker, topic: str) -> None:
        # What the first member left unsettled comes back: at once, or after its deadline.
        group, deadline = group_name(), 3 * self.tick
        async with Consumer(
            broker, topic, group=group, handler=_nothing, ack_deadline=deadline
        ) as consumer:
            await broker.publish(topic, make_events(3, key="k"))
            await consumer.take(3)
        async with Consumer(
            broker, topic, group=group, start=StartFrom.LATEST, ack_deadline=deadline
        ) as again:
            assert numbers(await again.take(3)) == [0, 1, 2]

    @proves(Operation.ORDER_PER_KEY)
    async def test_a_partition_is_handed_out_in_offset_order(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.create_topic(topic, partitions=3)
        for batch in range(10):
            await broker.publish(topic, make_events(10, key=f"k{batch % 4}"))
        async with Consumer(broker, topic, group=group_name(), prefetch=7) as consumer:
            got = await consumer.take(100)
        for partition in {d.partition for d in got}:
            offsets = [d.offset for d in got if d.partition == partition]
            assert offsets == sorted(offsets)

    @proves(Operation.ORDER_PER_KEY, Operation.WORK_SHARING)
    async def test_order_per_key_holds_under_32_way_concurrency_with_failures(
        self, broker: Broker, topic: str
    ) -> None:
        report = await run_order_torture(
            broker, topic, keys=32, per_key=25, seed=topic, ack_deadline=10 * self.tick
        )
        assert not report.missing, f"never handled: {sorted(report.missing)[:10]}"
        assert not report.out_of_order, f"handled ahead of a predecessor: {report.out_of_order[:5]}"
        assert report.failures > 0, "no handler failure was injected"
        assert report.members_closed > 0, "no member was closed"


async def _nothing(delivery: Delivery) -> None:
    """Leave the delivery unsettled (it goes back to the group when the member leaves)."""
