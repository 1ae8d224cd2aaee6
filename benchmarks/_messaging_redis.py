"""Redis Streams cases of the messaging benchmark: tidings' `RedisBroker` against raw redis-py.
Hooked into ``benchmarks/messaging.py`` with ``for case in redis_cases(): CASES.append(case)``.

Every case uses a fresh one-partition topic laid out as `RedisBroker` lays it out (the stream
``bench:t:<topic>:0`` with ids ``0-<offset + 1>``) on the server at 127.0.0.1:6379, and the
typical event of the envelope benchmark, stored as the msgspec envelope `RedisBroker` stores.
Both sides talk to the same server in the same run; its persistence settings are whatever it
runs with (the shared test server keeps nothing on disk), the same for both.

- ``redis-publish/*``: N events in calls of 1,000. ``raw``: one pipelined round trip of 1,000
  ``XADD stream 0-* e <envelope> f <flags> t <time> k <key> i <id>`` (precomputed fields, no
  dedup); ``tidings``: ``publish(topic, batch)``, encoding included, which runs one Lua script
  per call that also checks and records each event id (idempotent publish).
- ``redis-consume/*``: N stored events consumed and acked by a new group, ``XREADGROUP COUNT
  64`` at a time (tidings: ``subscribe(prefetch=64)``, each claim a Lua script). Two pairs:
  ``raw`` awaits one ``XACK`` per entry, as ``tidings-await`` does (``await_acks=True``: each
  ``ack()`` is one Lua script call awaited: lease check, XACK, the deadline schedule);
  ``raw-batch`` sends one ``XACK`` of the 64 ids after each read, the raw counterpart of
  ``tidings`` by default, whose ``ack()`` returns once queued and whose acks go in batches (one
  script call for every ack queued while the previous batch was on the wire). ``raw+decode``
  (and ``raw-batch+decode``) add decoding each envelope into an `Event`, which every tidings
  delivery does, so they are the baselines: a consumer of raw redis-py that hands its handler
  events does that work too. The raw cases without decoding stay as peers, the transport's
  floor.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Final

from benchmarks._envelope_fixtures import PAYLOAD, make_event
from benchmarks.api import Case, skip_unless_reachable
from tidings.eventstore.records import decode_event, encode_event

__all__ = ["PACKAGES", "redis_cases"]

PACKAGES: Final = ("redis", "hiredis")
URL: Final = "redis://127.0.0.1:6379/0?prefix=bench&aof_warning=false"
BATCH: Final = 1_000
FETCH: Final = 64


class _Topic:
    """A fresh one-partition topic per run, its keys deleted afterwards."""

    async def setup(self, size: int) -> None:
        skip_unless_reachable("127.0.0.1", 6379, service="Redis")
        from tidings.adapters.redis.broker import RedisBroker

        self.broker = RedisBroker(URL)
        await self.broker.open()
        self.topic = f"bench.{uuid.uuid4().hex[:10]}"
        await self.broker.create_topic(self.topic, partitions=1)
        self.stream = f"bench:t:{self.topic}:0"
        self.events = [make_event(PAYLOAD) for _ in range(size)]

    async def fill(self) -> None:
        for start in range(0, len(self.events), BATCH):
            await self.broker.publish(self.topic, self.events[start : start + BATCH])

    async def teardown(self) -> None:
        client = self.broker.client
        keys = [key async for key in client.scan_iter(match=f"bench:*{self.topic}*")]
        if keys:
            await client.delete(*keys)
        await self.broker.aclose()


class RawPublish(_Topic):
    """redis-py pipeline of 1,000 XADD (the same fields) per round trip."""

    async def setup(self, size: int) -> None:
        await super().setup(size)
        self.fields = []
        for event in self.events:
            envelope, flags = encode_event(event, limit=self.broker.max_event_bytes)
            fields = {"e": envelope, "f": flags, "t": 0, "i": event.id}
            if event.partitionkey is not None:
                fields["k"] = event.partitionkey
            self.fields.append(fields)

    async def run(self, size: int) -> None:
        client = self.broker.client
        for start in range(0, size, BATCH):
            now = time.time_ns() // 1000
            pipe = client.pipeline(transaction=False)
            for fields in self.fields[start : start + BATCH]:
                pipe.xadd(self.stream, {**fields, "t": now}, id="0-*")
            await pipe.execute()


class TidingsPublish(_Topic):
    """RedisBroker.publish(topic, 1,000 events) until N are stored."""

    async def run(self, size: int) -> None:
        await self.fill()


class RawConsume(_Topic):
    """redis-py XREADGROUP COUNT 64 from a new group, one awaited XACK per entry."""

    def __init__(self, *, decode: bool = False, batch: bool = False) -> None:
        self.decode = decode
        self.batch = batch

    async def setup(self, size: int) -> None:
        await super().setup(size)
        await self.fill()
        await self.broker.client.xgroup_create(self.stream, "raw", id="0")

    async def run(self, size: int) -> None:
        client = self.broker.client
        done = 0
        while done < size:
            reply = await client.xreadgroup("raw", "c", {self.stream: ">"}, count=FETCH)
            entries = reply[0][1]
            for entry_id, fields in entries:
                if self.decode:
                    decode_event(fields[b"e"], int(fields[b"f"]))
                if not self.batch:
                    await client.xack(self.stream, "raw", entry_id)
                done += 1
            if self.batch:
                await client.xack(self.stream, "raw", *(entry_id for entry_id, _ in entries))


class TidingsConsume(_Topic):
    """RedisBroker.subscribe(prefetch=64) and ack every delivery (acks batched)."""

    def __init__(self, *, await_acks: bool = False) -> None:
        self.await_acks = await_acks

    async def setup(self, size: int) -> None:
        await super().setup(size)
        await self.fill()
        self.broker.options = replace(self.broker.options, await_acks=self.await_acks)
        self.sub = self.broker.subscribe(self.topic, group="tidings", prefetch=FETCH)
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


def redis_cases(*, size: int = 20_000) -> list[Case]:
    """Return the Redis cases, ready to append to the messaging module's ``CASES``."""

    def case(name: str, state: _Topic, description: str = "", **options: object) -> Case:
        doc = description or (type(state).__doc__ or "").strip().splitlines()[0]
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
        case("redis-publish/raw", RawPublish()),
        case("redis-publish/tidings", TidingsPublish(), baseline="redis-publish/raw"),
        case("redis-consume/raw", RawConsume()),
        case(
            "redis-consume/raw+decode",
            RawConsume(decode=True),
            "the same, plus decoding each envelope into an Event",
        ),
        case(
            "redis-consume/tidings-await",
            TidingsConsume(await_acks=True),
            "the same with await_acks=True: each ack() awaits its own script call",
            baseline="redis-consume/raw+decode",
            peers=("redis-consume/raw",),
        ),
        case(
            "redis-consume/raw-batch",
            RawConsume(batch=True),
            "XREADGROUP COUNT 64, then one XACK of the 64 ids",
        ),
        case(
            "redis-consume/raw-batch+decode",
            RawConsume(batch=True, decode=True),
            "the same, plus decoding each envelope into an Event",
        ),
        case(
            "redis-consume/tidings",
            TidingsConsume(),
            baseline="redis-consume/raw-batch+decode",
            peers=("redis-consume/raw-batch",),
        ),
    ]
