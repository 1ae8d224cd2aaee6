"""Kafka cases of the messaging benchmark: tidings' `KafkaBroker` against raw confluent-kafka.

Hooked into ``benchmarks/messaging.py`` by name (``kafka_cases()``). Every case uses a fresh
one-partition topic on the shared Tansu at 127.0.0.1:9092 (in-memory storage) and the typical
event of the envelope benchmark, stored as `KafkaBroker` stores it (the tidings envelope as the
value, its key and headers):

- ``kafka-publish/*``: N events in calls of 1,000, each call returning when every event is
  acknowledged (``acks=all``, idempotent producer, the same ``linger.ms``). ``raw``: a
  confluent-kafka `Producer` producing the precomputed values, keys and headers to the
  partition, then ``poll()`` until their 1,000 delivery reports came, on a worker thread
  (``flush()`` took a steady 0.5 s per call against Tansu); ``tidings``: ``publish(topic, batch)``
  (encoding and the event-id check included).
- ``kafka-consume/*``: N stored events consumed and acknowledged by a new group (joining is not
  timed). ``raw``: a confluent-kafka `Consumer` in the group, ``consume(64)`` on a worker
  thread (waiting at most 50 ms for a full batch, as tidings' poller does) and an asynchronous
  commit of each batch's next offset, no decoding; ``raw+decode``: the same plus decoding each
  value into an `Event`; ``tidings``: ``subscribe(prefetch=64)`` + ``ack()`` of every
  delivery, each decoded into an `Event`.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Final

from benchmarks._envelope_fixtures import PAYLOAD, make_event
from benchmarks.api import Case, skip_unless_reachable
from tidings.eventstore.records import decode_event

__all__ = ["PACKAGES", "kafka_cases"]

PACKAGES: Final = ("confluent-kafka",)
SERVERS: Final = "127.0.0.1:9092"
URL: Final = f"kafka://{SERVERS}?session_timeout=6"
BATCH: Final = 1_000
FETCH: Final = 64
LINGER_MS: Final = 2.0
WAIT: Final = 0.05
"""Seconds a raw consume() waits for a full batch (it blocks until 64 or this): as tidings."""


class _Topic:
    """A fresh one-partition topic per run, deleted afterwards."""

    async def setup(self, size: int) -> None:
        skip_unless_reachable("127.0.0.1", 9092, service="Kafka (Tansu)")
        from tidings.adapters.kafka import KafkaBroker

        self.broker = KafkaBroker(URL, linger=LINGER_MS / 1000)
        await self.broker.open()
        self.topic = f"bench-{uuid.uuid4().hex[:10]}"
        await self.broker.create_topic(self.topic, partitions=1)
        self.events = [make_event(PAYLOAD) for _ in range(size)]

    async def fill(self) -> None:
        for start in range(0, len(self.events), BATCH):
            await self.broker.publish(self.topic, self.events[start : start + BATCH])

    async def teardown(self) -> None:
        await self.broker.delete_topic(self.topic)
        await self.broker.aclose()


class RawPublish(_Topic):
    """confluent-kafka produce() of the same values, keys and headers; poll() for 1,000 reports."""

    async def setup(self, size: int) -> None:
        await super().setup(size)
        from confluent_kafka import Producer

        from tidings.adapters.kafka.codec import headers_of
        from tidings.eventstore.base import DEFAULT_MAX_EVENT_BYTES
        from tidings.eventstore.records import encode_event
        from tidings.messaging.subscription import Outgoing

        self.producer = Producer(
            {
                "bootstrap.servers": SERVERS,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": LINGER_MS,
            }
        )
        self.records = []
        for event in self.events:
            envelope, flags = encode_event(event, limit=DEFAULT_MAX_EVENT_BYTES)
            headers = list(
                headers_of(Outgoing(event.id, event.partitionkey, envelope, flags)).items()
            )
            key = None if event.partitionkey is None else event.partitionkey.encode()
            self.records.append((envelope, key, headers))

    def _produce(self, start: int) -> None:
        waiting = [0]

        def report(error: object, message: object) -> None:
            waiting[0] -= 1

        for value, key, headers in self.records[start : start + BATCH]:
            waiting[0] += 1
            self.producer.produce(
                self.topic, value=value, key=key, partition=0, headers=headers, on_delivery=report
            )
        while waiting[0]:
            self.producer.poll(0.05)

    async def run(self, size: int) -> None:
        for start in range(0, size, BATCH):
            await asyncio.to_thread(self._produce, start)


class TidingsPublish(_Topic):
    """KafkaBroker.publish(topic, 1,000 events) until N are stored."""

    async def run(self, size: int) -> None:
        await self.fill()


class RawConsume(_Topic):
    """confluent-kafka consume(64) in a group, commit each batch asynchronously."""

    def __init__(self, *, decode: bool = False) -> None:
        self.decode = decode

    async def setup(self, size: int) -> None:
        await super().setup(size)
        await self.fill()
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer(
            {
                "bootstrap.servers": SERVERS,
                "group.id": f"raw-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "fetch.wait.max.ms": 100,
            }
        )
        self.partition = TopicPartition
        assigned = asyncio.get_running_loop().create_future()

        def on_assign(consumer: object, partitions: list[object]) -> None:
            assigned.get_loop().call_soon_threadsafe(assigned.set_result, None)

        self.consumer.subscribe([self.topic], on_assign=on_assign)
        self.pending: list[object] = []
        while not assigned.done():  # joining is not timed
            self.pending.extend(await asyncio.to_thread(self.consumer.consume, FETCH, 0.1))

    def _take(self) -> int:
        messages = self.pending or self.consumer.consume(FETCH, WAIT)
        self.pending = []
        good = [m for m in messages if m.error() is None]  # type: ignore[attr-defined]
        if self.decode:
            for message in good:
                decode_event(message.value(), 0)  # type: ignore[attr-defined]
        if good:
            last = good[-1]
            self.consumer.commit(
                offsets=[self.partition(self.topic, 0, last.offset() + 1)], asynchronous=True
            )
        return len(good)

    async def run(self, size: int) -> None:
        done = 0
        while done < size:
            done += await asyncio.to_thread(self._take)

    async def teardown(self) -> None:
        await asyncio.to_thread(self.consumer.close)
        await super().teardown()


class TidingsConsume(_Topic):
    """KafkaBroker.subscribe(prefetch=64) and ack every delivery."""

    async def setup(self, size: int) -> None:
        await super().setup(size)
        await self.fill()
        self.sub = self.broker.subscribe(
            self.topic, group=f"tidings-{uuid.uuid4().hex[:8]}", prefetch=FETCH
        )
        await self.sub.join()  # joining and leaving are not timed, as for the raw consumer

    async def run(self, size: int) -> None:
        done = 0
        async for delivery in self.sub:
            await delivery.ack()
            done += 1
            if done == size:
                break

    async def teardown(self) -> None:
        await self.sub.aclose()
        await super().teardown()


def kafka_cases(*, size: int = 20_000) -> list[Case]:
    """Return the Kafka cases, ready to append to the messaging module's ``CASES``."""

    def case(name: str, state: _Topic, **options: object) -> Case:
        doc = (type(state).__doc__ or "").strip().splitlines()[0]
        return Case(
            name=name,
            run=state.run,  # type: ignore[attr-defined]
            setup=state.setup,
            teardown=state.teardown,
            size=size,
            unit="events/s",
            description=doc,
            **options,  # type: ignore[arg-type]
        )

    return [
        case("kafka-publish/raw", RawPublish()),
        case("kafka-publish/tidings", TidingsPublish(), baseline="kafka-publish/raw"),
        case("kafka-consume/raw", RawConsume()),
        case("kafka-consume/raw+decode", RawConsume(decode=True)),
        case(
            "kafka-consume/tidings",
            TidingsConsume(),
            baseline="kafka-consume/raw",
            peers=("kafka-consume/raw+decode",),
        ),
    ]
