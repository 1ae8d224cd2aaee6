"""`NatsBroker`: the messaging port on NATS JetStream (``nats://host:4222``).

How the port maps onto JetStream (each module's docstring has the details):

- a topic is one file-backed stream per partition (`topics`), named after the escaped topic
  (`naming`); events travel as CloudEvents JSON, structured mode (`codec`);
- a group is one durable pull consumer per partition stream (`consumers`); members share the
  partitions through leases (`leases`) and pull continuously within ``prefetch`` (`puller`,
  `intake`, `member`); attempts are exact across members that prefetch (`attempts`);
- ack, nack with delay, extend and reject are JetStream acks (`delivery`);
- retention by age and count is applied by the broker, never past a group's ack floor
  (`retention`); the server's own limits would drop unsettled events;
- the server may lose acknowledged writes in a machine crash: see `durability`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from nats.aio.client import Client

from tidings.adapters.nats import codec, transfer
from tidings.adapters.nats.attempts import ensure_attempts_stream, forget_topic
from tidings.adapters.nats.capabilities import NATS_CAPABILITIES
from tidings.adapters.nats.connection import connect, translate_errors
from tidings.adapters.nats.durability import warn_unless_synced
from tidings.adapters.nats.leasebook import ensure_group_stream
from tidings.adapters.nats.member import Member, MemberLinks
from tidings.adapters.nats.naming import TopicNames
from tidings.adapters.nats.options import parse_url
from tidings.adapters.nats.publishing import Outgoing, Publisher
from tidings.adapters.nats.replay import check_replay, replay_targets, restart_group
from tidings.adapters.nats.retention import Trimmer
from tidings.adapters.nats.topics import TopicCatalog
from tidings.errors import ClosedError, EventTooLargeError
from tidings.events import Event
from tidings.eventstore.base import DEFAULT_MAX_EVENT_BYTES
from tidings.lifecycle import Resource, State
from tidings.messaging.base import check_name
from tidings.messaging.ports import (
    Broker,
    Capabilities,
    PublishResult,
    Retention,
    StartFrom,
    TopicInfo,
    dead_letter_topic,
    partition_for,
)
from tidings.messaging.transfer import StoredMessage, TopicTransfer

__all__ = ["NatsBroker"]

_HEADER_ROOM: Final = 4096


class NatsBroker(Resource, Broker, TopicTransfer):
    """A broker on NATS JetStream; open it with ``async with NatsBroker(url) as broker``.

    Args:
        url: ``nats://host:port`` (several hosts separated by commas); query options as below.
        fsync_ack_warning: Warn once on open that acknowledged writes can be lost in a machine
            crash (see `tidings.adapters.nats.durability`).
        lease_ttl: Seconds after which a crashed member's partitions move to the others.
        duplicate_window: Seconds JetStream remembers event ids (new topics only).
        max_deliver: Move an event to the dead-letter topic after this many deliveries.
        publish_timeout: Seconds a publish may take, reconnects included.
        monitor_url: The server's monitoring endpoint, to read whether it syncs every write.
    """

    capabilities: Capabilities = NATS_CAPABILITIES

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        fsync_ack_warning: bool | None = None,
        lease_ttl: float | None = None,
        duplicate_window: float | None = None,
        max_deliver: int | None = None,
        publish_timeout: float | None = None,
        monitor_url: str | None = None,
    ) -> None:
        overrides: dict[str, object] = {
            "fsync_ack_warning": fsync_ack_warning,
            "lease_ttl": lease_ttl,
            "duplicate_window": duplicate_window,
            "max_deliver": max_deliver,
            "publish_timeout": publish_timeout,
            "monitor_url": monitor_url,
        }
        self.url = url
        self._servers, self.options = parse_url(url, overrides)
        self.max_event_bytes = DEFAULT_MAX_EVENT_BYTES
        self._nc: Client | None = None
        self._members: set[Member] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def _open(self) -> None:
        options = self.options
        nc = await connect(
            self._servers, timeout=options.connect_timeout, on_reconnect=self._reconnected
        )
        self._nc = nc
        jsm = nc.jsm()
        self.max_event_bytes = min(DEFAULT_MAX_EVENT_BYTES, nc.max_payload - _HEADER_ROOM)
        with translate_errors("open"):
            await ensure_group_stream(nc)
            await ensure_attempts_stream(nc)
        self._catalog = TopicCatalog(jsm, duplicate_window=options.duplicate_window)
        self._publisher = Publisher(nc, timeout=options.publish_timeout)
        with translate_errors("open"):
            await self._publisher.open()
        self._trimmer = Trimmer(jsm, self._catalog)
        self._trimmer.start()
        if options.fsync_ack_warning:
            version = nc.connected_server_version
            release = f"{version.major}.{version.minor}.{version.patch}"
            await warn_unless_synced(release, options.monitor_url)

    async def _close(self) -> None:
        for member in list(self._members):
            await member.end(broker_closed=True)
        await self._trimmer.aclose()
        if self._nc is not None:
            with translate_errors("close"):
                await self._nc.drain()

    async def _reconnected(self) -> None:
        for member in list(self._members):
            member.reconnected()

    @property
    def connection(self) -> Client:
        """The nats-py connection (open the broker first)."""
        if self._nc is None:
            raise ClosedError(f"{type(self).__name__} (not opened)")
        return self._nc

    # -- topics and publishing -----------------------------------------------------------------

    async def create_topic(
        self, topic: str, *, partitions: int = 4, retention: Retention | None = None
    ) -> TopicInfo:
        """Create a topic (idempotent: an existing topic keeps its partitions and retention)."""
        check_name("topic", topic)
        if not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"partitions must be a positive integer, got {partitions!r}")
        await self._ensure_open()
        return await self._catalog.create(topic, partitions=partitions, retention=retention)

    async def publish(
        self, topic: str, events: Sequence[Event], *, key: str | None = None
    ) -> list[PublishResult]:
        """Store events on a topic, in order; the key defaults to each event's partitionkey.

        Returns when JetStream acknowledged every event. Creates the topic when missing. An
        event whose id the partition already holds (within the duplicate window) is not stored
        again: its result has ``duplicate=True`` and the offset of the first copy.
        """
        check_name("topic", topic)
        for event in events:
            if not isinstance(event, Event):
                raise TypeError(f"expected tidings.Event, got {type(event).__name__}")
        await self._ensure_open()
        if not events:
            return []
        info = await self._catalog.get(topic)
        messages = self._publisher.prepare(info, events, key)
        return await self._send(info, messages)

    async def publish_raw(self, topic: str, payload: bytes, *, key: str | None = None) -> None:
        """Store bytes that may not be an event at all (for tests of the dead-letter path)."""
        check_name("topic", topic)
        await self._ensure_open()
        info = await self._catalog.get(topic)
        partition = partition_for(key, info.partitions)
        headers = {} if key is None else {codec.KEY_HEADER: key}
        subject = TopicNames.of(topic).subject(partition)
        await self._send(info, [Outgoing("", partition, subject, bytes(payload), headers)])

    async def _send(self, info: TopicInfo, messages: list[Outgoing]) -> list[PublishResult]:
        for message in messages:
            if len(message.payload) > self.max_event_bytes:
                raise EventTooLargeError(
                    message.event_id, len(message.payload), self.max_event_bytes
                )
        with translate_errors(f"publish to {info.name!r}"):
            results = await self._publisher.send(messages)
        self._trimmer.touch(info)
        return results

    async def _dead_letter(
        self, topic: str, event: Event, key: str | None, headers: dict[str, str], msg_id: str
    ) -> None:
        origin = await self._catalog.get(topic)
        target = await self._catalog.create(dead_letter_topic(topic), partitions=origin.partitions)
        message = self._publisher.prepare(target, [event], key, extra=headers)[0]
        message.headers[codec.MSG_ID] = msg_id
        await self._send(target, [message])

    # -- groups --------------------------------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        *,
        group: str,
        ack_deadline: float = 30.0,
        start: StartFrom = StartFrom.EARLIEST,
        prefetch: int = 64,
    ) -> Member:
        """Join a group and yield deliveries until the subscription is closed.

        The subscription is an async iterator and an async context manager; ``aclose()`` (or
        leaving the ``async with``) hands its unsettled deliveries back to the group at once.
        """
        check_name("topic", topic)
        check_name("group", group)
        if ack_deadline <= 0:
            raise ValueError(f"ack_deadline must be > 0, got {ack_deadline}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self._check_not_closed()
        member = Member(
            self._links(),
            topic,
            group=group,
            ack_deadline=ack_deadline,
            start=start,
            prefetch=prefetch,
        )
        self._members.add(member)
        return member

    def _links(self) -> MemberLinks:
        return MemberLinks(
            nc=self.connection,
            lease_ttl=self.options.lease_ttl,
            max_deliver=self.options.max_deliver,
            topic=self._joined_topic,
            before_join=self._trimmer.trim,
            dead_letter=self._dead_letter,
            forget=self._members.discard,
        )

    async def _joined_topic(self, topic: str) -> TopicInfo:
        await self._ensure_open()
        return await self._catalog.get(topic)

    async def replay(
        self,
        topic: str,
        *,
        group: str,
        offsets: Mapping[int, int] | None = None,
        since: datetime | None = None,
    ) -> None:
        """Move a group to given offsets per partition, or to the first event at or after a time.

        Recreates the group's consumer on each moved partition: deliveries not yet settled there
        are forgotten (settling them changes nothing) and attempts count from 1 again.
        """
        check_name("topic", topic)
        check_name("group", group)
        check_replay(offsets, since)
        await self._ensure_open()
        info = await self._catalog.get(topic)
        targets = replay_targets(info, offsets, since)
        await restart_group(self.connection, info, group, targets)
        for member in list(self._members):
            member.replayed(info.name, group, set(targets))

    # -- retention -----------------------------------------------------------------------------

    async def enforce_retention(self) -> int:
        """Apply retention to the topics this broker knows now; return how many events went."""
        await self._ensure_open()
        removed = 0
        for info in self._catalog.known():
            removed += await self._trimmer.trim(info)
        return removed

    # -- moving topics (tidings.messaging.transfer) ---------------------------------------------

    async def describe_topic(self, topic: str) -> TopicInfo | None:
        """Return the topic's shape as stored on the server, or None when it does not exist."""
        await self._ensure_open()
        return await self._catalog.find(topic)

    async def read_partition(
        self, topic: str, partition: int, *, from_offset: int = 0, limit: int = 1000
    ) -> list[StoredMessage]:
        """Return up to ``limit`` retained messages of a partition from an offset, in order."""
        await self._ensure_open()
        info = transfer.check_partition(await self._catalog.find(topic), topic, partition)
        jsm = self.connection.jsm()
        return await transfer.read_partition(jsm, info, partition, from_offset, limit)

    async def group_positions(self, topic: str) -> Mapping[str, Mapping[int, int]]:
        """Return each group's committed offset (its consumers' ack floors) per partition."""
        await self._ensure_open()
        info = await self._catalog.find(topic)
        if info is None:
            return {}
        return await transfer.group_positions(self.connection.jsm(), info)

    async def append_to_partition(
        self, topic: str, partition: int, messages: Sequence[tuple[Event, str | None]]
    ) -> list[PublishResult]:
        """Store (event, key) pairs at the end of one partition, in order, once per event id."""
        for event, _ in messages:
            if not isinstance(event, Event):
                raise TypeError(f"expected tidings.Event, got {type(event).__name__}")
        await self._ensure_open()
        info = transfer.check_partition(await self._catalog.find(topic), topic, partition)
        if not messages:
            return []
        return await self._send(info, transfer.outgoing(info, partition, messages))

    def known_topics(self) -> list[TopicInfo]:
        """Return the topics this broker created, published to or subscribed to."""
        return self._catalog.known() if self.state is State.OPEN else []

    async def delete_topic(self, topic: str) -> None:
        """Delete a topic's streams and its dead-letter topic's (NATS only; for cleanup)."""
        await self._ensure_open()
        for name in (topic, dead_letter_topic(topic)):
            info = await self._catalog.find(name)
            if info is not None:
                await self._catalog.delete(info)
            with translate_errors(f"delete topic {name!r}"):
                await forget_topic(self.connection, TopicNames.of(name).token)

    def __repr__(self) -> str:
        return f"<NatsBroker {self.url} {self.state.value}>"
