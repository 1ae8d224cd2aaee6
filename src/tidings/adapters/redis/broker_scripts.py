"""The Redis broker's scripts, with their arguments encoded and their replies decoded.

`BrokerScripts` registers the Lua of `broker_lua_topics` and `broker_lua_groups` on a client
(redis-py runs them by EVALSHA and loads them again after a server restart) and gives each a
typed method. Nothing here knows about subscriptions; `tidings.adapters.redis.broker` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import msgspec
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from tidings.adapters.redis import broker_lua_groups as groups
from tidings.adapters.redis import broker_lua_topics as topics
from tidings.adapters.redis.broker_cancel import call
from tidings.messaging.base import Claimed, Outgoing
from tidings.messaging.ports import PublishResult, Retention, TopicInfo

__all__ = ["BrokerScripts", "ClaimArgs", "Placed", "Stored", "claimed_entry", "entry_fields"]

_headers_decoder: Final = msgspec.json.Decoder(dict[str, str])
_encoder: Final = msgspec.json.Encoder()
_msgpack: Final = msgspec.msgpack.Encoder()
_US: Final = 1_000_000
RETENTION_BATCH: Final = 1000

Reply = list[object]


@dataclass(frozen=True, slots=True)
class Placed:
    """A message on its way to a partition."""

    partition: int
    message: Outgoing


@dataclass(frozen=True, slots=True)
class Stored:
    """One stream entry's fields, decoded."""

    key: str | None
    envelope: bytes
    flags: int
    headers: dict[str, str] | None
    published_us: int


@dataclass(frozen=True, slots=True)
class ClaimArgs:
    """Who claims, how many, under which lease, for how long (times in µs)."""

    topic: str
    group: str
    member: str
    partitions: int
    limit: int
    lease: int
    deadline_us: int
    session_us: int
    first: int


def entry_fields(raw: object) -> Stored:
    """Decode a stream entry's field list (``[b"e", envelope, b"f", flags, ...]``)."""
    assert isinstance(raw, list)
    fields = dict(zip(raw[::2], raw[1::2], strict=True))
    key, headers = fields.get(b"k"), fields.get(b"h")
    return Stored(
        key=None if key is None else key.decode(),
        envelope=bytes(fields[b"e"]),
        flags=int(fields[b"f"]),
        headers=None if not headers else _headers_decoder.decode(headers),
        published_us=int(fields.get(b"t", 0)),
    )


def claimed_entry(partition: int, offset: int, attempt: int, lease: int, raw: object) -> Claimed:
    """Return the `Claimed` of a stream entry handed out under ``lease``.

    Every entry the broker writes starts ``e <envelope> f <flags> t <µs>``, so the common case
    reads those by position and looks only at the optional fields after them (this runs once
    per delivery); any other layout goes through `entry_fields`.
    """
    assert isinstance(raw, list)
    if len(raw) >= 6 and raw[0] == b"e" and raw[2] == b"f":
        key = headers = None
        for j in range(6, len(raw), 2):
            name = raw[j]
            if name == b"k":
                key = raw[j + 1].decode()
            elif name == b"h" and raw[j + 1]:
                headers = _headers_decoder.decode(raw[j + 1])
        return Claimed(partition, offset, key, attempt, lease, raw[1], int(raw[3]), headers)
    stored = entry_fields(raw)
    return Claimed(
        partition, offset, stored.key, attempt, lease, stored.envelope, stored.flags, stored.headers
    )


def _int(value: object) -> int:
    """Return an integer of a script's reply (an int, or digits as bytes)."""
    if isinstance(value, int):
        return value
    assert isinstance(value, bytes | str), f"expected an integer, got {value!r}"
    return int(value)


def _ack_batches(entries: Sequence[Claimed]) -> bytes:
    """Encode entries for `ACK_MANY`: per partition, [partition, offsets, ids, leases] as text."""
    batches: dict[int, tuple[int, list[str], list[str], list[str]]] = {}
    lease, lease_text = None, ""
    for claimed in entries:
        batch = batches.get(claimed.partition)
        if batch is None:
            batch = batches[claimed.partition] = (claimed.partition, [], [], [])
        if claimed.lease != lease:  # the entries of one claim share their lease
            lease, lease_text = claimed.lease, str(claimed.lease)
        offset = claimed.offset
        batch[1].append(str(offset))
        batch[2].append(f"0-{offset + 1}")
        batch[3].append(lease_text)
    return _msgpack.encode(list(batches.values()))


def _message_args(message: Outgoing) -> list[object]:
    headers = b"" if not message.headers else _encoder.encode(dict(message.headers))
    has_key = message.key is not None
    return ["1" if has_key else "0", message.key or "", message.flags, message.envelope, headers]


class BrokerScripts:
    """The broker's scripts on one client, under one key prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.prefix = prefix

        def load(source: str) -> AsyncScript:
            return client.register_script(topics.COMMON + source)

        self._ensure = load(topics.ENSURE_TOPIC)
        self._publish = load(topics.PUBLISH)
        self._replay = load(topics.REPLAY)
        self._retention = load(topics.RETENTION)
        self._positions = load(topics.GROUP_POSITIONS)
        self._join = load(groups.JOIN)
        self._claim = load(groups.CLAIM)
        self._ack = load(groups.ACK)
        self._ack_many = load(groups.ACK_MANY)
        self._nack = load(groups.NACK)
        self._extend = load(groups.EXTEND)
        self._dead_letter = load(groups.DEAD_LETTER)
        self._leave = load(groups.LEAVE)

    async def _run(self, script: AsyncScript, *args: object) -> Reply:
        reply = await call(script(keys=[], args=[self.prefix, *args]))  # type: ignore[list-item]
        return reply if isinstance(reply, list) else [reply]

    # -- topics ---------------------------------------------------------------------------------

    async def ensure_topic(self, topic: str, partitions: int, retention: Retention) -> TopicInfo:
        """Create a topic unless it exists; return its shape as stored."""
        age = "" if retention.max_age is None else int(retention.max_age.total_seconds() * _US)
        count = "" if retention.max_count is None else retention.max_count
        reply = await self._run(self._ensure, topic, partitions, age, count)
        return topic_info(topic, reply)

    async def publish(
        self, topic: str, placed: Sequence[Placed], *, default_partitions: int
    ) -> list[PublishResult]:
        """Append messages (deduplicated by event id); return where each one is."""
        args: list[object] = [topic, default_partitions, len(placed)]
        for item in placed:
            args += [item.partition, item.message.event_id or "", *_message_args(item.message)]
        reply = await self._run(self._publish, *args)
        return [
            PublishResult(item.message.event_id or "", _int(p), _int(o), bool(d))
            for item, p, o, d in zip(placed, reply[::3], reply[1::3], reply[2::3], strict=True)
        ]

    async def replay(
        self,
        topic: str,
        group: str,
        *,
        default_partitions: int,
        offsets: Mapping[int, int] | None,
        since_us: int | None,
    ) -> None:
        """Recreate the group at offsets per partition, or at a time."""
        pairs = [value for item in (offsets or {}).items() for value in item]
        since = "" if since_us is None else since_us
        await self._run(self._replay, topic, group, default_partitions, since, *pairs)

    async def enforce_retention(self, topic: str) -> int:
        """Trim one topic by its retention; return how many entries went."""
        removed = 0
        while True:
            reply = await self._run(self._retention, topic, RETENTION_BATCH)
            batch = _int(reply[0])
            removed += batch
            if batch < RETENTION_BATCH:
                return removed

    async def group_positions(self, topic: str) -> dict[str, dict[int, int]]:
        """Return each group's committed offset per partition."""
        reply = await self._run(self._positions, topic)
        out: dict[str, dict[int, int]] = {}
        for group, p, o in zip(reply[::3], reply[1::3], reply[2::3], strict=True):
            name = group.decode() if isinstance(group, bytes) else str(group)
            out.setdefault(name, {})[_int(p)] = _int(o)
        return out

    # -- members --------------------------------------------------------------------------------

    async def join(
        self, topic: str, group: str, member: str, *, start: str, session_us: int, partitions: int
    ) -> int:
        """Create the group on every partition and start the member's session."""
        reply = await self._run(self._join, topic, group, member, start, session_us, partitions)
        return _int(reply[0])

    async def claim(self, request: ClaimArgs) -> tuple[list[Claimed], int | None]:
        """Hand the member its deliveries; return them and µs until the group's next is due."""
        reply = await self._run(
            self._claim,
            request.topic,
            request.group,
            request.member,
            request.partitions,
            request.limit,
            request.lease,
            request.deadline_us,
            request.session_us,
            request.first,
        )
        due = _int(reply[0])
        lease = request.lease
        claimed = [
            claimed_entry(_int(p), _int(o), _int(attempt), lease, raw)
            for p, o, attempt, raw in zip(
                reply[1::4], reply[2::4], reply[3::4], reply[4::4], strict=True
            )
        ]
        return claimed, None if due < 0 else due

    async def ack(self, topic: str, group: str, claimed: Claimed) -> bool:
        """XACK the entry if still held under its lease."""
        held = (topic, group, claimed.partition, claimed.offset, claimed.lease)
        return bool((await self._run(self._ack, *held))[0])

    async def ack_many(self, topic: str, group: str, entries: Sequence[Claimed]) -> int:
        """XACK the entries still held under their leases; return how many."""
        reply = await self._run(self._ack_many, topic, group, _ack_batches(entries))
        return _int(reply[0])

    async def nack(self, topic: str, group: str, claimed: Claimed, delay_us: int) -> bool:
        """Make the entry visible after the delay, if still held under its lease."""
        held = (topic, group, claimed.partition, claimed.offset, claimed.lease)
        return bool((await self._run(self._nack, *held, delay_us))[0])

    async def extend(self, topic: str, group: str, claimed: Claimed, seconds_us: int) -> bool:
        """Move the entry's deadline, if still held under its lease."""
        held = (topic, group, claimed.partition, claimed.offset, claimed.lease)
        return bool((await self._run(self._extend, *held, seconds_us))[0])

    async def dead_letter(
        self, topic: str, group: str, claimed: Claimed, target: Placed, dead_topic: str
    ) -> bool:
        """Append the message to the dead-letter partition and XACK the entry, together."""
        held = (topic, group, claimed.partition, claimed.offset, claimed.lease)
        args = (*held, dead_topic, target.partition, *_message_args(target.message))
        return bool((await self._run(self._dead_letter, *args))[0])

    async def leave(
        self, topic: str, group: str, member: str, partitions: int, unyielded: Sequence[Claimed]
    ) -> None:
        """Release what the member holds, un-count unyielded attempts, end its session."""
        entries = [
            value for c in unyielded for value in (c.partition, c.offset, c.lease, c.attempt)
        ]
        await self._run(self._leave, topic, group, member, partitions, *entries)


def topic_info(topic: str, reply: Sequence[object]) -> TopicInfo:
    """Build a `TopicInfo` from ``HMGET partitions max_age_us max_count``."""
    partitions, age, count = reply[0], reply[1], reply[2]
    retention = Retention(
        max_age=None if age is None else timedelta(microseconds=_int(age)),
        max_count=None if count is None else _int(count),
    )
    return TopicInfo(topic, _int(partitions), retention)
