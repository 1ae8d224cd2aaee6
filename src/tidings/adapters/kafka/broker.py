"""`KafkaBroker`: the messaging port on a Kafka-protocol broker (``kafka://host:9092``).

How the port maps onto Kafka (each module's docstring has the details):

- a topic is a Kafka topic with the requested partitions (`admin`); a key's partition is
  `tidings.messaging.ports.partition_for` (CRC-32), chosen by tidings, not by the client's
  partitioner, so every tidings backend places a key alike; records carry the tidings envelope
  (`codec`);
- publishing goes through one idempotent producer per broker (`producing`), with event ids
  deduplicated against what this broker published (`dedup`);
- a group is a Kafka consumer group; each subscription is a member whose consumer runs on its
  own thread (`poller`) while claims, deadlines, nacks and commits live on the loop (`member`,
  `partitions`): the committed offset is the lowest unsettled offset, never past a failed event;
- replay seeks this broker's members, or alters the offsets of a group without members; by
  time through ``offsets_for_times`` (`reading`);
- retention by age and count is a floor per partition, never above a group's committed offset
  (`retention`), recorded per topic in Kafka itself (`catalog`);
- `TopicTransfer` reads partitions with an assigned consumer and appends in place (`transfer`).

The client is confluent-kafka (librdkafka): against Tansu its idempotent producer, offset
commits and offsets-by-time work, where aiokafka's idempotent producer handshake fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping, Sequence
from typing import Final

from tidings.adapters.kafka.admin import Admin
from tidings.adapters.kafka.capabilities import KAFKA_CAPABILITIES
from tidings.adapters.kafka.catalog import RetentionCatalog
from tidings.adapters.kafka.clients import client_config
from tidings.adapters.kafka.codec import headers_of
from tidings.adapters.kafka.dedup import PublishedIds
from tidings.adapters.kafka.member import KafkaMember, ledger_group
from tidings.adapters.kafka.options import parse_url
from tidings.adapters.kafka.producing import Record, Sender
from tidings.adapters.kafka.reading import PartitionReader
from tidings.adapters.kafka.retention import RetentionJob
from tidings.adapters.kafka.transfer import group_positions, stored_message
from tidings.events import Event
from tidings.eventstore.records import encode_event
from tidings.messaging.base import (
    DEFAULT_PARTITIONS,
    BrokerBase,
    Claimed,
    ClaimResult,
    Member,
    Outgoing,
)
from tidings.messaging.ports import (
    Capabilities,
    PublishResult,
    Retention,
    StartFrom,
    TopicInfo,
    dead_letter_topic,
    partition_for,
)
from tidings.messaging.transfer import StoredMessage, TopicTransfer

__all__ = ["KafkaBroker"]

_JOIN_FACTOR: Final = 3.0


class KafkaBroker(BrokerBase, TopicTransfer):
    """A broker on Kafka (or a Kafka-protocol server such as Tansu).

    Args:
        url: ``kafka://host:port`` (several hosts separated by commas); query options as below.
        session_timeout: Seconds after which a silent member's partitions move to the others.
        linger: Seconds the producer waits to fill a batch.
        publish_timeout: Seconds a publish may take, retries through an outage included.
        dedup_window: Event ids per topic remembered to drop duplicate publishes.
        commit_interval: Seconds between background commits of group progress.
        client_id: The Kafka client id.
    """

    capabilities: Capabilities = KAFKA_CAPABILITIES

    def __init__(
        self,
        url: str = "kafka://127.0.0.1:9092",
        *,
        session_timeout: float | None = None,
        linger: float | None = None,
        publish_timeout: float | None = None,
        dedup_window: int | None = None,
        commit_interval: float | None = None,
        client_id: str | None = None,
    ) -> None:
        super().__init__()
        overrides: dict[str, object] = {
            "session_timeout": session_timeout,
            "linger": linger,
            "publish_timeout": publish_timeout,
            "dedup_window": dedup_window,
            "commit_interval": commit_interval,
            "client_id": client_id,
        }
        self.servers, self.options = parse_url(url, overrides)
        self._ids = PublishedIds(self.options.dedup_window)
        self._spread = itertools.count()
        self._members: set[KafkaMember] = set()
        self._sender: Sender | None = None
        self._admin = Admin(self.servers, self.options)
        self._reader = PartitionReader(self.servers, self.options)
        self._catalog = RetentionCatalog(self._admin, self._reader)
        self._retention = RetentionJob(self._admin, self._reader, self._catalog)
        self._settling: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<KafkaBroker {self.servers} {self.state.value}>"

    def known_topics(self) -> list[str]:
        """Return the topics this broker created, published to or described."""
        return self._admin.known_topics()

    async def delete_topic(self, topic: str) -> None:
        """Delete a topic and what it holds (its groups' offsets stay with the groups)."""
        await self._ensure_open()
        await self._admin.delete_topic(topic)

    # -- storage primitives ----------------------------------------------------------------------

    async def _open_storage(self) -> None:
        self._sender = Sender(self.servers, self.options)

    async def _close_storage(self) -> None:
        if self._settling:  # dead letters under way finish first (bounded)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.publish_timeout):
                    await asyncio.gather(*self._settling, return_exceptions=True)
        if self._sender is not None:
            await self._sender.aclose()

    async def _ensure_topic(self, topic: str, partitions: int, retention: Retention) -> TopicInfo:
        existing = await self._admin.describe(topic)
        if existing is not None:
            return TopicInfo(topic, existing, await self._catalog.retention(topic))
        info = await self._admin.ensure(topic, partitions)
        assert self._sender is not None
        await self._catalog.record(self._sender, topic, retention)
        return TopicInfo(topic, info.partitions, await self._catalog.retention(topic))

    async def _partitions(self, topic: str) -> int:
        known = await self._admin.describe(topic)
        if known is None:
            known = (await self._admin.ensure(topic, DEFAULT_PARTITIONS)).partitions
        return known

    async def _append(
        self, topic: str, messages: Sequence[Outgoing], *, partition: int | None = None
    ) -> list[PublishResult]:
        assert self._sender is not None
        count = await self._partitions(topic)
        if partition is not None and not 0 <= partition < count:
            raise ValueError(f"topic {topic!r} has no partition {partition}")
        results: list[PublishResult | None] = [None] * len(messages)
        first: dict[str, int] = {}
        copies: dict[int, int] = {}
        sending: list[tuple[int, Record]] = []
        for index, message in enumerate(messages):
            event_id = message.event_id
            if event_id is not None:
                known = self._ids.find(topic, event_id)
                if known is not None:
                    results[index] = PublishResult(event_id, *known, duplicate=True)
                    continue
                if event_id in first:
                    copies[index] = first[event_id]
                    continue
                first[event_id] = index
            sending.append((index, self._record(topic, message, count, partition)))
        stored = await self._sender.send_each([record for _, record in sending])
        failure: BaseException | None = None
        for (index, _), place in zip(sending, stored, strict=True):
            if isinstance(place, BaseException):
                failure = failure or place
                continue
            event_id = messages[index].event_id
            results[index] = PublishResult(event_id or "", *place)
            if event_id is not None:  # remembered even when another record failed: a retry
                self._ids.remember(topic, event_id, place)  # must not store this one twice
        if failure is not None:
            raise failure
        for index, original in copies.items():
            done = results[original]
            assert done is not None
            results[index] = PublishResult(done.event_id, done.partition, done.offset, True)
        return [result for result in results if result is not None]

    def _record(
        self, topic: str, message: Outgoing, partitions: int, partition: int | None
    ) -> Record:
        if partition is None:
            partition = partition_for(message.key, partitions, fallback=next(self._spread))
        key = None if message.key is None else message.key.encode()
        return Record(topic, partition, key, message.envelope, headers_of(message))

    async def _join(self, member: Member) -> None:
        count = await self._partitions(member.topic)
        if member.start is StartFrom.LATEST:
            await self._start_new_group_at_the_end(member, count)
        joined = KafkaMember(
            member,
            config=self._consumer_config(member.group),
            admin=self._admin,
            commit_interval=self.options.commit_interval,
            wake=self._wakeup.notify,
            floors=self._retention.floors,
        )
        member.joined = joined
        self._members.add(joined)
        await joined.start(timeout=max(30.0, _JOIN_FACTOR * self.options.session_timeout))

    async def _start_new_group_at_the_end(self, member: Member, partitions: int) -> None:
        """Commit the partitions' true ends for a group that has no offsets yet."""
        if await self._admin.group_offsets(member.group, member.topic, partitions):
            return  # an existing group ignores StartFrom.LATEST
        ends = await self._reader.ends(member.topic, range(partitions))
        await self._admin.alter_group_offsets(member.group, member.topic, ends)
        await self._admin.alter_group_offsets(ledger_group(member.group), member.topic, ends)

    def _consumer_config(self, group: str) -> dict[str, object]:
        session_ms = int(self.options.session_timeout * 1000)
        return client_config(
            self.servers,
            self.options,
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(100, session_ms // 10),
                "fetch.wait.max.ms": 100,
                "queued.max.messages.kbytes": 8192,
                # librdkafka waits this long to fetch again once that queue is full (default
                # 1 s: a whole second idle after every refill of a fast consumer's queue)
                "fetch.queue.backoff.ms": 20,
            },
        )

    def _member(self, member: Member) -> KafkaMember:
        joined = member.joined
        assert isinstance(joined, KafkaMember)
        return joined

    async def _claim(self, member: Member, limit: int) -> ClaimResult:
        return await self._member(member).claim(limit)

    async def _ack(self, member: Member, claimed: Claimed) -> None:
        self._member(member).ack(claimed)

    async def _nack(self, member: Member, claimed: Claimed, delay: float) -> None:
        self._member(member).nack(claimed, delay)

    async def _extend(self, member: Member, claimed: Claimed, seconds: float) -> None:
        self._member(member).extend(claimed, seconds)

    async def _dead_letter(self, member: Member, claimed: Claimed, message: Outgoing) -> None:
        # Shielded: once started, a dead letter is stored and the event acked even when the
        # caller is cancelled (a consumer stopped mid-reject must not lose the letter).
        task = asyncio.create_task(self._move_to_dead_letters(member, claimed, message))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        await asyncio.shield(task)

    async def _move_to_dead_letters(
        self, member: Member, claimed: Claimed, message: Outgoing
    ) -> None:
        await self._append(dead_letter_topic(member.topic), [message])
        self._member(member).ack(claimed)

    async def _leave(self, member: Member, unyielded: Sequence[Claimed]) -> None:
        if self._settling:  # a reject in flight acks its event only once its letter is stored:
            # leaving first would commit below that event and hand it to the next holder again
            await asyncio.wait(set(self._settling), timeout=self.options.publish_timeout)
        joined = member.joined
        if isinstance(joined, KafkaMember):
            self._members.discard(joined)
            await joined.leave(unyielded)

    async def _replay(
        self, topic: str, group: str, offsets: Mapping[int, int] | None, since_us: int | None
    ) -> None:
        count = await self._partitions(topic)
        if offsets is None:
            assert since_us is not None
            offsets = await self._reader.at_time(topic, range(count), since_us // 1000)
        floors = await self._retention.floors(topic, count)
        offsets = {p: max(o, floors.get(p, 0)) for p, o in offsets.items() if 0 <= p < count}
        remaining = dict(offsets)
        for joined in [m for m in self._members if (m.topic, m.group) == (topic, group)]:
            for moved in await joined.replay(remaining):
                remaining.pop(moved, None)
        if remaining:
            await self._admin.alter_group_offsets(group, topic, remaining)
        await self._admin.alter_group_offsets(ledger_group(group), topic, dict(offsets))

    async def _enforce_retention(self) -> int:
        return await self._retention.enforce()

    # -- TopicTransfer ---------------------------------------------------------------------------

    async def describe_topic(self, topic: str) -> TopicInfo | None:
        """Return the topic's partitions and recorded retention, or None when it is missing."""
        await self._ensure_open()
        partitions = await self._admin.describe(topic)
        if partitions is None:
            return None
        return TopicInfo(topic, partitions, await self._catalog.retention(topic))

    async def read_partition(
        self, topic: str, partition: int, *, from_offset: int = 0, limit: int = 1000
    ) -> list[StoredMessage]:
        """Return up to ``limit`` messages of a partition from an offset, in order."""
        await self._ensure_open()
        if await self._admin.describe(topic) is None:
            return []
        floor = (await self._retention.floors(topic, partition + 1)).get(partition, 0)
        messages = await self._reader.read(topic, partition, max(from_offset, floor), limit)
        return [stored_message(message) for message in messages]

    async def group_positions(self, topic: str) -> Mapping[str, Mapping[int, int]]:
        """Return each group's committed offset per partition (its lowest unsettled offset)."""
        await self._ensure_open()
        partitions = await self._admin.describe(topic)
        if partitions is None:
            return {}
        return await group_positions(self._admin, topic, partitions)

    async def append_to_partition(
        self, topic: str, partition: int, messages: Sequence[tuple[Event, str | None]]
    ) -> list[PublishResult]:
        """Store (event, key) pairs at the end of one partition, in order, once per event id."""
        await self._ensure_open()
        outgoing = [self._keyed(event, key) for event, key in messages]
        return await self._append(topic, outgoing, partition=partition) if outgoing else []

    def _keyed(self, event: Event, key: str | None) -> Outgoing:
        envelope, flags = encode_event(event, limit=self.max_event_bytes)
        return Outgoing(event.id, key, envelope, flags)
