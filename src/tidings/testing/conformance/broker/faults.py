"""Conformance cases for faults: a consumer SIGKILLed before its ack, a restarted service,
payloads that are not events, and closing things twice."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tidings.codecs import EventTypes
from tidings.errors import BackendError, ClosedError, UnknownEventTypeError
from tidings.events import Event
from tidings.messaging.ports import HEADER_REASON, Broker, Delivery, Operation, dead_letter_topic
from tidings.testing.conformance.broker.helpers import (
    WAIT,
    Consumer,
    _Fixtures,
    closing,
    eventually,
    group_name,
    make_events,
    numbers,
)
from tidings.testing.conformance.broker.results import proves
from tidings.testing.faults import read_lines, start_worker

__all__ = ["FaultCases"]

_WORKER = "tidings.testing.conformance.broker.worker"


@dataclass
class _Current:
    """The broker the load tasks use; swapped when the service restarts."""

    broker: Broker
    seen: set[str] = field(default_factory=set)


class FaultCases(_Fixtures):
    """Faults: nothing is lost when a consumer dies or the service restarts."""

    @proves(Operation.ACK_DEADLINE)
    async def test_a_consumer_killed_between_effect_and_ack_gets_the_event_again(
        self, broker: Broker, topic: str, tmp_path: Path
    ) -> None:
        self.require("cross_process")
        deadline, group, effects = 3 * self.tick, group_name(), tmp_path / "effects.txt"
        event = make_events(1, key="k")[0]
        await broker.create_topic(topic, partitions=2)
        args = (self.harness.worker_url(broker), topic, group, str(effects), str(deadline))
        worker = await start_worker(_WORKER, *args)
        try:
            await broker.publish(topic, [event])
            await worker.wait_for(f"effect {event.id}", timeout=WAIT)
            worker.kill()
        finally:
            await worker.aclose()
        async with Consumer(broker, topic, group=group, ack_deadline=deadline) as survivor:
            again = (await survivor.take(1, timeout=WAIT))[0]
        assert read_lines(effects) == [f"{event.id} 1".encode()]
        assert (again.event.id, again.attempt) == (event.id, 2)

    async def test_a_restarted_service_loses_nothing_under_load(
        self, broker: Broker, topic: str
    ) -> None:
        self.require("restart_service")
        batches = [make_events(20, key=f"k{n % 7}") for n in range(60)]
        current, group = _Current(broker), group_name()
        await broker.create_topic(topic, partitions=4)
        consumer = asyncio.create_task(_consume(current, topic, group, 3 * self.tick))
        try:
            for index, batch in enumerate(batches):
                if index == len(batches) // 3:
                    current.broker = await self.harness.restart_service(current.broker)
                await _publish(current, topic, batch)
            wanted = {e.id for batch in batches for e in batch}
            await eventually(lambda: wanted <= current.seen, timeout=2 * WAIT, what="all seen")
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            if current.broker is not broker:
                await current.broker.aclose()

    @proves(Operation.DEAD_LETTER)
    async def test_a_payload_that_is_not_json_goes_to_the_dead_letter_topic(
        self, broker: Broker, topic: str
    ) -> None:
        await self._expect_dead_letter(broker, topic, b"\x00\x01 not json at all")

    @proves(Operation.DEAD_LETTER)
    async def test_json_that_is_not_a_cloudevent_goes_to_the_dead_letter_topic(
        self, broker: Broker, topic: str
    ) -> None:
        await self._expect_dead_letter(broker, topic, b'{"hello": "world", "specversion": "0.3"}')

    async def _expect_dead_letter(self, broker: Broker, topic: str, payload: bytes) -> None:
        self.require("publish_raw")
        await broker.create_topic(topic, partitions=1)
        await self.harness.publish_raw(broker, topic, payload)
        await broker.publish(topic, make_events(1))
        async with Consumer(broker, topic, group=group_name()) as consumer:
            assert numbers(await consumer.take(1)) == [0]  # the consumer went on
            await consumer.expect_quiet(0.2)
        async with Consumer(broker, dead_letter_topic(topic), group=group_name()) as dead:
            letter = (await dead.take(1))[0]
        assert letter.headers[HEADER_REASON].startswith("malformed")
        assert letter.event.data == payload

    @proves(Operation.DEAD_LETTER)
    async def test_an_unknown_event_type_is_rejected_to_the_dead_letter_topic(
        self, broker: Broker, topic: str
    ) -> None:
        types = EventTypes()

        async def decode_or_reject(delivery: Delivery) -> None:
            try:
                types.from_event(delivery.event)
            except UnknownEventTypeError as exc:
                await delivery.reject(str(exc))
            else:  # pragma: no cover - nothing is registered
                await delivery.ack()

        await broker.publish(topic, make_events(1, key="k"))
        async with Consumer(broker, topic, group=group_name(), handler=decode_or_reject) as c:
            await c.take(1)
        async with Consumer(broker, dead_letter_topic(topic), group=group_name()) as dead:
            letter = (await dead.take(1))[0]
        assert "conformance.tested" in letter.headers[HEADER_REASON]

    async def test_closing_the_broker_twice_is_fine(self, broker: Broker) -> None:
        await broker.aclose()
        await broker.aclose()

    async def test_closing_a_subscription_twice_is_fine(self, broker: Broker, topic: str) -> None:
        consumer = await Consumer(broker, topic, group=group_name()).start()
        await consumer.stop()
        await consumer.stop()

    async def test_publish_after_close_raises_closed_error(
        self, broker: Broker, topic: str
    ) -> None:
        await broker.aclose()
        with pytest.raises(ClosedError):
            await broker.publish(topic, make_events(1))

    async def test_closing_the_broker_ends_its_subscriptions(
        self, broker: Broker, topic: str
    ) -> None:
        subscription = broker.subscribe(topic, group=group_name())

        async def next_delivery() -> Delivery:
            return await anext(subscription)

        waiting = asyncio.create_task(next_delivery())
        await asyncio.sleep(0.1)
        await broker.aclose()
        with pytest.raises((ClosedError, StopAsyncIteration)):
            await asyncio.wait_for(waiting, WAIT)


async def _publish(current: _Current, topic: str, batch: list[Event]) -> None:
    """Publish a batch, retrying through the outage (idempotent publish makes that safe)."""
    async with asyncio.timeout(WAIT * 2):
        while True:
            try:
                await current.broker.publish(topic, batch)
                return
            except (ClosedError, BackendError):
                await asyncio.sleep(0.05)


async def _consume(current: _Current, topic: str, group: str, deadline: float) -> None:
    """Consume and ack for ever, subscribing again whenever the broker goes away."""
    while True:
        subscription = current.broker.subscribe(topic, group=group, ack_deadline=deadline)
        try:
            async with closing(subscription):
                async for delivery in subscription:
                    current.seen.add(delivery.event.id)
                    await delivery.ack()
        except (ClosedError, BackendError):
            await asyncio.sleep(0.05)
