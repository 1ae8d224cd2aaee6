"""`RedisBroker`: the messaging port on Redis Streams (``redis://host:6379/0``).

How the port maps onto Redis (each module's docstring has the details):

- a topic is one stream per partition, ``<prefix>:t:<topic>:<partition>``, with entry ids
  ``0-<offset + 1>`` so offsets are dense from 0 (`broker_lua_topics`); its shape lives in the
  hash ``<prefix>:topic:<topic>``; publishing checks and records event ids in
  ``<prefix>:ids:<topic>`` and XADDs in one Lua script (idempotent publish);
- a group is one Redis consumer group per partition stream: its last-delivered id is the
  cursor, its PEL the pending entries and their delivery counters the attempts
  (`broker_lua_groups`); deadlines and nack delays are a sorted set per group and partition;
  only one member reads a partition at a time, so a group gets it in offset order;
- every claim and settlement is one Lua script, so several processes share groups safely; they
  wake one another through pub/sub (`broker_wake`);
- retention trims with XTRIM MINID, never past any group's lowest pending entry or cursor;
- durability is the server's persistence: see `broker_durability`.

The broker follows the claims model of `tidings.messaging.base` and implements
`tidings.messaging.transfer.TopicTransfer` for topic migration. It needs one Redis server (or a
primary with replicas), not Redis Cluster: scripts compute their keys.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import zlib
from collections.abc import Coroutine, Mapping, Sequence
from typing import Final

import redis.asyncio as aioredis

from tidings.adapters.redis import translate_errors
from tidings.adapters.redis.broker_acks import AckBatcher
from tidings.adapters.redis.broker_cancel import call
from tidings.adapters.redis.broker_capabilities import REDIS_CAPABILITIES
from tidings.adapters.redis.broker_durability import warn_unless_persistent
from tidings.adapters.redis.broker_options import parse_url
from tidings.adapters.redis.broker_scripts import (
    BrokerScripts,
    ClaimArgs,
    Placed,
    entry_fields,
)
from tidings.adapters.redis.broker_wake import WakeListener
from tidings.errors import ClosedError
from tidings.events import Event
from tidings.messaging.base import (
    DEFAULT_PARTITIONS,
    BrokerBase,
    Claimed,
    ClaimResult,
    Member,
    Outgoing,
    check_name,
)
from tidings.messaging.base import session_us as member_session_us
from tidings.messaging.ports import (
    PublishResult,
    Retention,
    StartFrom,
    TopicInfo,
    dead_letter_topic,
    partition_for,
)
from tidings.messaging.stored import from_envelope
from tidings.messaging.transfer import StoredMessage, TopicTransfer

__all__ = ["RedisBroker"]

_US: Final = 1_000_000


class RedisBroker(BrokerBase, TopicTransfer):
    """A broker on Redis Streams; open it with ``async with RedisBroker(url) as broker``.

    Args:
        url: ``redis://[user:password@]host:port/db``, with the options below in the query.
        prefix: Prepended to every key and channel (default ``tidings``).
        aof_warning: Warn once on open when the server's AOF is off (see `broker_durability`).
        await_acks: Whether ``ack()`` waits for Redis (default: it returns once queued for the
            next batch; see `broker_acks`). ``nack``, ``extend`` and ``reject`` always wait.
        retention_interval: Seconds between runs of the retention job while open.
        max_event_bytes: Largest encoded event accepted (default 1 MiB).
    """

    capabilities = REDIS_CAPABILITIES

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str | None = None,
        aof_warning: bool | None = None,
        await_acks: bool | None = None,
        retention_interval: float | None = None,
        max_event_bytes: int | None = None,
    ) -> None:
        super().__init__()
        overrides: dict[str, object] = {
            "prefix": prefix,
            "aof_warning": aof_warning,
            "await_acks": await_acks,
            "retention_interval": retention_interval,
        }
        self.url = url
        self._driver_url, self.options = parse_url(url, overrides)
        self.retention_interval = self.options.retention_interval
        if max_event_bytes is not None:
            self.max_event_bytes = max_event_bytes
        self._client: aioredis.Redis | None = None
        self._topics: dict[str, TopicInfo] = {}
        self._keyless = itertools.count(secrets.randbelow(1 << 16))
        self._settling: dict[str, set[asyncio.Future[bool]]] = {}

    def __repr__(self) -> str:
        return f"<RedisBroker {self.url} {self.state.value}>"

    @property
    def client(self) -> aioredis.Redis:
        """The redis-py client (open the broker first)."""
        if self._client is None:
            raise ClosedError(f"{type(self).__name__} (not opened)")
        return self._client

    # -- lifecycle ------------------------------------------------------------------------------

    async def _open_storage(self) -> None:
        timeout = self.options.connect_timeout
        client = aioredis.Redis.from_url(self._driver_url, socket_connect_timeout=timeout)
        try:
            with translate_errors():
                await call(client.ping())
                if self.options.aof_warning:
                    await warn_unless_persistent(client)
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._scripts = BrokerScripts(client, self.options.prefix)
        self._wake = WakeListener(client, self._wakeup.notify)
        self._acks = AckBatcher(self._send_acks)

    async def _close_storage(self) -> None:
        await self._acks.drain()
        await self._wake.aclose()
        await self.client.aclose()

    # -- topics and publishing -----------------------------------------------------------------

    async def _ensure_topic(self, topic: str, partitions: int, retention: Retention) -> TopicInfo:
        known = self._topics.get(topic)
        if known is not None:
            return known
        with translate_errors():
            info = await self._scripts.ensure_topic(topic, partitions, retention)
        self._topics[topic] = info
        return info

    async def _topic(self, topic: str) -> TopicInfo:
        return await self._ensure_topic(topic, DEFAULT_PARTITIONS, Retention())

    async def _append(self, topic: str, messages: Sequence[Outgoing]) -> list[PublishResult]:
        info = await self._topic(topic)
        fallback = next(self._keyless)
        placed = [
            Placed(partition_for(m.key, info.partitions, fallback=fallback), m) for m in messages
        ]
        return await self._store(info, placed)

    async def _store(self, info: TopicInfo, placed: Sequence[Placed]) -> list[PublishResult]:
        with translate_errors():
            return await self._scripts.publish(
                info.name, placed, default_partitions=info.partitions
            )

    # -- members and claims --------------------------------------------------------------------

    async def _join(self, member: Member) -> None:
        start = "$" if member.start is StartFrom.LATEST else "0"
        with translate_errors():
            member.joined = await self._scripts.join(
                member.topic,
                member.group,
                member.id,
                start=start,
                session_us=member_session_us(member),
                partitions=DEFAULT_PARTITIONS,
            )
            await self._wake.watch(f"{self.options.prefix}:wake:{member.topic}")

    async def _claim(self, member: Member, limit: int) -> ClaimResult:
        partitions = _partitions(member)
        session_us = member_session_us(member)
        request = ClaimArgs(
            topic=member.topic,
            group=member.group,
            member=member.id,
            partitions=partitions,
            limit=limit,
            lease=member.next_lease(),
            deadline_us=int(member.ack_deadline * _US),
            session_us=session_us,
            first=zlib.crc32(member.id.encode()) % partitions,
        )
        with translate_errors():
            claimed, due_us = await self._scripts.claim(request)
        heartbeat = session_us / 3 / _US
        due = heartbeat if due_us is None else min(heartbeat, due_us / _US)
        return ClaimResult(claimed, due)

    # -- settlement ----------------------------------------------------------------------------

    async def _ack(self, member: Member, claimed: Claimed) -> None:
        if self.options.await_acks:  # one atomic script: if cancelled before it runs, it comes back
            with translate_errors():
                await self._scripts.ack(member.topic, member.group, claimed)
            return
        self._acks.submit(member.topic, member.group, claimed)

    async def _send_acks(self, topic: str, group: str, entries: Sequence[Claimed]) -> int:
        with translate_errors():
            return await self._scripts.ack_many(topic, group, entries)

    async def _nack(self, member: Member, claimed: Claimed, delay: float) -> None:
        with translate_errors():
            await self._scripts.nack(member.topic, member.group, claimed, int(delay * _US))

    async def _extend(self, member: Member, claimed: Claimed, seconds: float) -> None:
        with translate_errors():
            await self._scripts.extend(member.topic, member.group, claimed, int(seconds * _US))

    async def _dead_letter(self, member: Member, claimed: Claimed, message: Outgoing) -> None:
        await self._settle(member, self._move_to_dead_letters(member, claimed, message))

    async def _move_to_dead_letters(
        self, member: Member, claimed: Claimed, message: Outgoing
    ) -> bool:
        dead = dead_letter_topic(member.topic)
        info = await self._ensure_topic(dead, _partitions(member), Retention())
        partition = partition_for(message.key, info.partitions, fallback=claimed.partition)
        target = Placed(partition, message)
        return await self._scripts.dead_letter(member.topic, member.group, claimed, target, dead)

    async def _settle(self, member: Member, work: Coroutine[object, object, bool]) -> None:
        """Run a settlement to its end even if the caller is cancelled; `_leave` waits for it.

        A handler cancelled mid-``reject`` (its subscription closing) must not lose the dead
        letter (it takes two steps the first time: the dead-letter topic, then the move), nor
        let the member's leave overtake it.
        """
        task = asyncio.ensure_future(work)
        running = self._settling.setdefault(member.id, set())
        running.add(task)
        task.add_done_callback(running.discard)
        task.add_done_callback(_retrieve)
        with translate_errors():
            await asyncio.shield(task)

    async def _leave(self, member: Member, unyielded: Sequence[Claimed]) -> None:
        if not isinstance(member.joined, int):
            return  # never joined
        await self._acks.drain()
        running = self._settling.pop(member.id, set())
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        with translate_errors():
            await self._scripts.leave(
                member.topic, member.group, member.id, member.joined, unyielded
            )

    # -- replay and retention ------------------------------------------------------------------

    async def _replay(
        self, topic: str, group: str, offsets: Mapping[int, int] | None, since_us: int | None
    ) -> None:
        info = await self._topic(topic)
        if offsets is not None and any(not 0 <= p < info.partitions for p in offsets):
            raise ValueError(f"{topic!r} has partitions 0 to {info.partitions - 1}: {offsets}")
        with translate_errors():
            await self._scripts.replay(
                topic,
                group,
                default_partitions=info.partitions,
                offsets=offsets,
                since_us=since_us,
            )

    async def _enforce_retention(self) -> int:
        with translate_errors():
            retained = await call(self.client.smembers(f"{self.options.prefix}:retained"))
            removed = 0
            for topic in sorted(_text(name) for name in retained):
                removed += await self._scripts.enforce_retention(topic)
        return removed

    # -- topic transfer ------------------------------------------------------------------------

    async def describe_topic(self, topic: str) -> TopicInfo | None:
        """Return the topic's partitions and retention, or None when it does not exist."""
        check_name("topic", topic)
        await self._ensure_open()
        with translate_errors():
            exists = await call(self.client.exists(f"{self.options.prefix}:topic:{topic}"))
        return await self._topic(topic) if exists else None

    async def read_partition(
        self, topic: str, partition: int, *, from_offset: int = 0, limit: int = 1000
    ) -> list[StoredMessage]:
        """Return up to ``limit`` retained messages of a partition from an offset, in order."""
        check_name("topic", topic)
        await self._ensure_open()
        stream = f"{self.options.prefix}:t:{topic}:{partition}"
        with translate_errors():
            entries = await call(
                self.client.xrange(stream, f"0-{from_offset + 1}", "+", count=limit)
            )
        return [_stored(partition, entry_id, fields) for entry_id, fields in entries or []]

    async def group_positions(self, topic: str) -> Mapping[str, Mapping[int, int]]:
        """Return each group's committed offset per partition."""
        check_name("topic", topic)
        await self._ensure_open()
        with translate_errors():
            return await self._scripts.group_positions(topic)

    async def append_to_partition(
        self, topic: str, partition: int, messages: Sequence[tuple[Event, str | None]]
    ) -> list[PublishResult]:
        """Store (event, key) pairs at the end of one partition, in order."""
        check_name("topic", topic)
        outgoing = [self._outgoing(event, key) for event, key in messages]
        await self._ensure_open()
        info = await self._topic(topic)
        if not 0 <= partition < info.partitions:
            raise ValueError(f"topic {topic!r} has no partition {partition}")
        results = await self._store(info, [Placed(partition, m) for m in outgoing])
        self._wakeup.notify()
        return results


def _retrieve(task: asyncio.Future[bool]) -> None:
    """Mark a settlement's failure as seen (its caller may be gone; the entry comes back)."""
    if not task.cancelled():
        task.exception()


def _partitions(member: Member) -> int:
    assert isinstance(member.joined, int), f"{member!r} has not joined"
    return member.joined


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stored(partition: int, entry_id: object, raw: object) -> StoredMessage:
    assert isinstance(raw, dict), f"unexpected stream entry {raw!r}"
    offset = int(_text(entry_id).split("-")[1]) - 1
    stored = entry_fields([value for item in raw.items() for value in item])
    return from_envelope(partition, offset, stored.key, stored.envelope, stored.flags)
