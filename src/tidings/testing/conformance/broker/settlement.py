"""Conformance cases for settlement: ack, nack with delay, deadlines, extend, attempts, reject."""

from __future__ import annotations

import time

import pytest

from tidings.errors import ClosedError
from tidings.messaging.ports import (
    HEADER_ATTEMPTS,
    HEADER_ORIGIN,
    HEADER_REASON,
    Broker,
    Delivery,
    Operation,
    dead_letter_topic,
)
from tidings.testing.conformance.broker.helpers import (
    Consumer,
    _Fixtures,
    group_name,
    keep,
    make_events,
    numbers,
)
from tidings.testing.conformance.broker.results import proves


class SettleCases(_Fixtures):
    """Settlement: what each of ack, nack, extend and reject does, and what it never does."""

    async def test_an_acked_event_is_not_delivered_again(self, broker: Broker, topic: str) -> None:
        await broker.publish(topic, make_events(3, key="k"))
        group = group_name()
        async with Consumer(broker, topic, group=group) as consumer:
            await consumer.take(3)
        async with Consumer(broker, topic, group=group) as again:
            await again.expect_quiet()

    @proves(Operation.NACK_DELAY)
    async def test_nack_redelivers_with_the_next_attempt(self, broker: Broker, topic: str) -> None:
        await broker.publish(topic, make_events(1, key="k"))
        async with Consumer(broker, topic, group=group_name(), handler=keep) as consumer:
            first = (await consumer.take(1))[0]
            await first.nack()
            second = (await consumer.take(1))[0]
            await second.ack()
        assert (first.attempt, second.attempt) == (1, 2)
        assert second.event == first.event

    @proves(Operation.NACK_DELAY)
    async def test_nack_with_delay_redelivers_within_20_percent(
        self, broker: Broker, topic: str
    ) -> None:
        delay = 2 * self.tick
        await broker.publish(topic, make_events(1, key="k"))
        async with Consumer(broker, topic, group=group_name(), handler=keep) as consumer:
            first = (await consumer.take(1))[0]
            started = time.monotonic()
            await first.nack(delay=delay)
            again = (await consumer.take(1, timeout=10 * delay))[0]
            waited = time.monotonic() - started
            await again.ack()
        assert 0.8 * delay <= waited <= 1.2 * delay, f"redelivered after {waited:.3f}s"

    @proves(Operation.ACK_DEADLINE)
    async def test_an_unsettled_delivery_comes_back_after_the_ack_deadline(
        self, broker: Broker, topic: str
    ) -> None:
        deadline = 2 * self.tick
        await broker.publish(topic, make_events(1, key="k"))
        group = group_name()
        async with Consumer(broker, topic, group=group, handler=keep, ack_deadline=deadline) as c:
            started = time.monotonic()
            first = (await c.take(1))[0]
            again = (await c.take(1, timeout=10 * deadline))[0]
            waited = time.monotonic() - started
            await again.ack()
        assert (first.attempt, again.attempt) == (1, 2)
        assert 0.8 * deadline <= waited <= 2.5 * deadline, f"redelivered after {waited:.3f}s"

    @proves(Operation.EXTEND)
    async def test_extend_postpones_the_redelivery(self, broker: Broker, topic: str) -> None:
        deadline = 2 * self.tick
        await broker.publish(topic, make_events(1, key="k"))
        group = group_name()
        async with Consumer(broker, topic, group=group, handler=keep, ack_deadline=deadline) as c:
            first = (await c.take(1))[0]
            await first.extend(4 * deadline)
            await c.expect_quiet(2 * deadline)
            await first.ack()
            await c.expect_quiet(deadline)

    @proves(Operation.ACK_DEADLINE, Operation.NACK_DELAY)
    async def test_attempt_counts_every_delivery_exactly(self, broker: Broker, topic: str) -> None:
        deadline = self.tick
        await broker.publish(topic, make_events(1, key="k"))
        group = group_name()
        async with Consumer(broker, topic, group=group, handler=keep, ack_deadline=deadline) as c:
            await (await c.take(1))[0].nack()
            await (await c.take(1))[0].nack(delay=deadline / 2)
            await c.take(1)  # left to expire
            last = (await c.take(1, timeout=10 * deadline))[0]
            await last.ack()
        assert [d.attempt for d in c.seen] == [1, 2, 3, 4]
        assert len({d.event.id for d in c.seen}) == 1

    @proves(Operation.DEAD_LETTER)
    async def test_reject_moves_the_event_to_the_dead_letter_topic(
        self, broker: Broker, topic: str
    ) -> None:
        event = make_events(1, key="k")[0]
        await broker.publish(topic, [event])
        group = group_name()
        async with Consumer(broker, topic, group=group, handler=keep) as consumer:
            await (await consumer.take(1))[0].reject("no such customer")
            await consumer.expect_quiet(0.3)
        async with Consumer(broker, dead_letter_topic(topic), group=group_name()) as dead:
            letter = (await dead.take(1))[0]
        assert letter.event == event
        assert letter.key == "k"
        assert letter.headers[HEADER_REASON] == "no such customer"
        assert (letter.headers[HEADER_ATTEMPTS], letter.headers[HEADER_ORIGIN]) == ("1", topic)

    @proves(Operation.DEAD_LETTER, Operation.NACK_DELAY)
    async def test_dead_letter_after_exactly_n_attempts(self, broker: Broker, topic: str) -> None:
        limit = 4

        async def give_up_at_limit(delivery: Delivery) -> None:
            if delivery.attempt < limit:
                await delivery.nack()
            else:
                await delivery.reject(f"failed {delivery.attempt} times")

        await broker.publish(topic, make_events(1, key="k"))
        group = group_name()
        async with Consumer(broker, topic, group=group, handler=give_up_at_limit) as consumer:
            await consumer.take(limit)
            await consumer.expect_quiet(0.3)
        async with Consumer(broker, dead_letter_topic(topic), group=group_name()) as dead:
            letter = (await dead.take(1))[0]
            await dead.expect_quiet(0.2)
        assert [d.attempt for d in consumer.seen] == [1, 2, 3, 4]
        assert letter.headers[HEADER_ATTEMPTS] == str(limit)
        assert letter.headers[HEADER_REASON] == "failed 4 times"

    async def test_settling_twice_is_harmless(self, broker: Broker, topic: str) -> None:
        await broker.publish(topic, make_events(2, key="k"))
        group = group_name()
        async with Consumer(broker, topic, group=group, handler=keep) as consumer:
            first, second = await consumer.take(2)
            await first.ack()
            await first.ack()
            await first.nack()
            await first.reject("too late")
            await second.nack()
            await second.ack()
            retried = (await consumer.take(1))[0]
            await retried.ack()
            await consumer.expect_quiet(0.3)
        assert numbers([retried]) == [1]
        async with Consumer(broker, dead_letter_topic(topic), group=group_name()) as dead:
            await dead.expect_quiet(0.3)

    async def test_settling_after_the_subscription_closed_raises_closed_error(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.publish(topic, make_events(1, key="k"))
        async with Consumer(broker, topic, group=group_name(), handler=keep) as consumer:
            delivery = (await consumer.take(1))[0]
        with pytest.raises(ClosedError):
            await delivery.ack()

    @proves(Operation.WORK_SHARING)
    async def test_unsettled_deliveries_of_a_member_that_left_come_back(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.publish(topic, make_events(3, key="k"))
        group, deadline = group_name(), 3 * self.tick
        async with Consumer(broker, topic, group=group, handler=keep, ack_deadline=deadline) as c:
            await c.take(3)
        async with Consumer(broker, topic, group=group, ack_deadline=deadline) as staying:
            got = await staying.take(3)
        assert numbers(got) == [0, 1, 2]
        assert [d.attempt for d in got] == [2, 2, 2]
