"""NATS JetStream cases of the messaging benchmark: tidings' `NatsBroker` against raw nats-py,
with FastStream as the peer for consuming. Hooked into ``benchmarks/messaging.py`` with
``for case in nats_cases(): CASES.append(case)``.

Every case uses a fresh one-partition topic laid out as `NatsBroker` lays it out (one file
stream, subject ``tidings.t.<topic>.0``), on the server at 127.0.0.1:4222, and the typical event
of the envelope benchmark as CloudEvents JSON (what `NatsBroker` stores):

- ``nats-publish/*``: N events in calls of 1,000, each call returning when every event is
  acknowledged by JetStream. ``raw``: nats-py ``publish_async`` of the same payloads and
  headers (precomputed), then waiting for the 1,000 acks; ``raw+inbox``: the same messages
  through core ``Client.publish``, each with a reply subject ``<inbox>.<call>.<index>`` on one
  wildcard subscription that counts the acks (``json.loads`` each) and wakes the call once
  all 1,000 came, the way `NatsBroker` collects them without a future per message;
  ``tidings``: ``publish(topic, batch)`` (encoding included).
- ``nats-consume/*``: N stored events consumed and acked by a new durable group.
  ``raw``: nats-py ``pull_subscribe_bind`` + ``fetch(64)`` + ``msg.ack()``, no decoding;
  ``raw+decode`` the same plus ``Event.from_json`` of each payload; ``tidings``: ``subscribe``
  (prefetch 64) + ``ack()``, every delivery decoded into an `Event`; ``faststream``: a
  FastStream 0.7 JetStream pull subscriber (``PullSub(batch_size=64)``, durable, logging off)
  whose handler takes the body as bytes and decodes it with ``Event.from_json`` (FastStream
  parses JSON only for ``application/json``), acked by FastStream when the handler returns.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Final

from benchmarks._envelope_fixtures import PAYLOAD, make_event
from benchmarks.api import Case, Skip, skip_unless_reachable
from tidings.events import Event

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["PACKAGES", "nats_cases"]

PACKAGES: Final = ("nats-py", "faststream")
URL: Final = "nats://127.0.0.1:4222"
BATCH: Final = 1_000
FETCH: Final = 64


class _Topic:
    """A fresh one-partition topic per run, deleted afterwards."""

    async def setup(self, size: int) -> None:
        skip_unless_reachable("127.0.0.1", 4222, service="NATS")
        from tidings.adapters.nats import NatsBroker
        from tidings.adapters.nats.naming import TopicNames

        self.broker = NatsBroker(URL, fsync_ack_warning=False)
        await self.broker.open()
        self.topic = f"bench.{uuid.uuid4().hex[:10]}"
        await self.broker.create_topic(self.topic, partitions=1)
        self.names = TopicNames.of(self.topic)
        self.events = [make_event(PAYLOAD) for _ in range(size)]

    async def fill(self) -> None:
        for start in range(0, len(self.events), BATCH):
            await self.broker.publish(self.topic, self.events[start : start + BATCH])

    async def teardown(self) -> None:
        await self.broker.delete_topic(self.topic)
        await self.broker.aclose()


class RawPublish(_Topic):
    """nats-py publish_async of the same payloads and headers, 1,000 acks awaited at a time."""

    async def setup(self, size: int) -> None:
        await super().setup(size)
        from tidings.adapters.nats import codec

        self.messages = [codec.encode(event, event.partitionkey) for event in self.events]

    async def run(self, size: int) -> None:
        js = self.broker.connection.jetstream()
        subject = self.names.subject(0)
        for start in range(0, size, BATCH):
            futures = [
                await js.publish_async(subject, payload, headers=dict(headers))
                for payload, headers in self.messages[start : start + BATCH]
            ]
            await asyncio.gather(*futures)


class RawInboxPublish(RawPublish):
    """Core nats-py publish with reply subjects on one ack inbox, 1,000 acks awaited at a time."""

    async def run(self, size: int) -> None:
        nc = self.broker.connection
        prefix = nc.new_inbox()
        pending: dict[str, list[int]] = {}
        done: dict[str, asyncio.Future[None]] = {}

        async def on_ack(msg: Msg) -> None:
            call = msg.subject[len(prefix) + 1 :].rpartition(".")[0]
            future = done[call]
            if "error" in json.loads(msg.data) and not future.done():
                future.set_exception(RuntimeError(msg.data.decode()))
            pending[call][0] -= 1
            if pending[call][0] == 0 and not future.done():
                future.set_result(None)

        subscription = await nc.subscribe(f"{prefix}.*.*", cb=on_ack)
        subject = self.names.subject(0)
        for start in range(0, size, BATCH):
            batch = self.messages[start : start + BATCH]
            call = str(start)
            pending[call] = [len(batch)]
            done[call] = asyncio.get_running_loop().create_future()
            for index, (payload, headers) in enumerate(batch):
                await nc.publish(subject, payload, f"{prefix}.{call}.{index}", headers)
            await done[call]
        await subscription.unsubscribe()


class TidingsPublish(_Topic):
    """NatsBroker.publish(topic, 1,000 events) until N are stored."""

    async def run(self, size: int) -> None:
        await self.fill()


class RawConsume(_Topic):
    """nats-py fetch(64) from a durable pull consumer, ack each message."""

    def __init__(self, *, decode: bool = False) -> None:
        self.decode = decode

    async def setup(self, size: int) -> None:
        await super().setup(size)
        await self.fill()
        from nats.js import api

        jsm = self.broker.connection.jsm()
        config = api.ConsumerConfig(durable_name="raw", ack_policy=api.AckPolicy.EXPLICIT)
        await jsm.add_consumer(self.names.stream(0), config)
        js = self.broker.connection.jetstream()
        self.sub = await js.pull_subscribe_bind("raw", self.names.stream(0))

    async def run(self, size: int) -> None:
        done = 0
        while done < size:
            for msg in await self.sub.fetch(FETCH, timeout=5):
                if self.decode:
                    Event.from_json(msg.data)
                await msg.ack()
                done += 1


class TidingsConsume(_Topic):
    """NatsBroker.subscribe(prefetch=64) and ack every delivery."""

    async def setup(self, size: int) -> None:
        await super().setup(size)
        await self.fill()
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


class FastStreamConsume(_Topic):
    """FastStream JetStream pull subscriber (batch 64, durable), handler decodes the Event."""

    async def setup(self, size: int) -> None:
        try:
            from faststream.nats import JStream, NatsBroker, PullSub
        except ImportError as exc:
            raise Skip("faststream[nats] is not installed") from exc
        await super().setup(size)
        await self.fill()
        self.done = asyncio.Event()
        self.count = 0
        self.fast = NatsBroker(URL, logger=None)  # no log line per message
        stream = JStream(self.names.stream(0), declare=False)

        @self.fast.subscriber(
            self.names.subject(0), stream=stream, durable="fast", pull_sub=PullSub(FETCH)
        )
        async def handle(body: bytes) -> None:
            Event.from_json(body)  # the same decoding as tidings and raw+decode
            self.count += 1
            if self.count == self.size:
                self.done.set()

        self.size = size

    async def run(self, size: int) -> None:
        await self.fast.start()
        await self.done.wait()

    async def teardown(self) -> None:
        await self.fast.stop()
        await super().teardown()


def nats_cases(*, size: int = 20_000) -> list[Case]:
    """Return the NATS cases, ready to append to the messaging module's ``CASES``."""

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
        case("nats-publish/raw", RawPublish()),
        case("nats-publish/raw+inbox", RawInboxPublish()),
        case(
            "nats-publish/tidings",
            TidingsPublish(),
            baseline="nats-publish/raw",
            peers=("nats-publish/raw+inbox",),
        ),
        case("nats-consume/raw", RawConsume()),
        case(
            "nats-consume/raw+decode",
            RawConsume(decode=True),
            "the same, plus Event.from_json of each payload",
        ),
        case(
            "nats-consume/tidings",
            TidingsConsume(),
            baseline="nats-consume/raw",
            peers=("nats-consume/raw+decode", "nats-consume/faststream"),
        ),
        case("nats-consume/faststream", FastStreamConsume()),
    ]
