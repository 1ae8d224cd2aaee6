"""The in-memory broker (``memory://``): the SQLite broker's semantics, kept in lists and dicts.

Everything but durability is real: partitions and offsets, idempotent publish, consumer groups
with cursors and pending entries (attempts, ack deadlines, delayed nacks, leases), work sharing
by partitions, dead letters, retention and replay; see `tidings.messaging.base` for the model.
It is what unit tests of handlers and the router run on, so it takes no shortcut: a delivery
is handed out by a claim, comes back after its deadline, and counts its attempts exactly.
Deadlines use the monotonic clock; publish times (for replay and retention) the wall clock.
"""

from __future__ import annotations

import asyncio
import bisect
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Final

from tidings.messaging.base import BrokerBase, Claimed, ClaimResult, Member, Outgoing
from tidings.messaging.ports import (
    Capabilities,
    Operation,
    PublishResult,
    Retention,
    StartFrom,
    Support,
    TopicInfo,
    dead_letter_topic,
    partition_for,
)

__all__ = ["MEMORY_CAPABILITIES", "MemoryBroker"]

MEMORY_CAPABILITIES: Final = Capabilities(
    support={op: Support.NATIVE for op in Operation if op is not Operation.DURABLE_OFFSETS},
    notes={Operation.DURABLE_OFFSETS: "state lives in the process and ends with it"},
)


@dataclass(slots=True)
class _Message:
    key: str | None
    event_id: str | None
    envelope: bytes
    flags: int
    headers: Mapping[str, str] | None
    published_at_us: int


@dataclass(slots=True)
class _Partition:
    messages: list[_Message] = field(default_factory=list)
    base: int = 0  # offset of messages[0]; retention moves it up

    @property
    def end(self) -> int:
        return self.base + len(self.messages)

    def at(self, offset: int) -> _Message:
        return self.messages[offset - self.base]


@dataclass(slots=True)
class _Entry:
    attempt: int
    visible_at: float
    holder: str | None
    lease: int


@dataclass(slots=True)
class _Group:
    cursors: list[int]
    pending: list[dict[int, _Entry]]
    members: set[str] = field(default_factory=set)

    def committed(self, partition: int) -> int:
        entries = self.pending[partition]
        return min(entries) if entries else self.cursors[partition]

    def find(self, claimed: Claimed) -> _Entry | None:
        entry = self.pending[claimed.partition].get(claimed.offset)
        return entry if entry is not None and entry.lease == claimed.lease else None


@dataclass(slots=True)
class _Topic:
    info: TopicInfo
    partitions: list[_Partition]
    ids: dict[str, tuple[int, int]] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    keyless: int = 0

    def new_group(self, start: StartFrom) -> _Group:
        at_end = start is StartFrom.LATEST
        cursors = [p.end if at_end else p.base for p in self.partitions]
        return _Group(cursors, [{} for _ in self.partitions])


class MemoryBroker(BrokerBase):
    """A broker in this process's memory (``memory://``); one instance is one broker."""

    capabilities = MEMORY_CAPABILITIES

    def __init__(self, url: str = "memory://") -> None:
        super().__init__()
        self.url = url
        self._topics: dict[str, _Topic] = {}

    async def _open_storage(self) -> None:
        """Nothing to connect to."""

    async def _close_storage(self) -> None:
        """Nothing to release: the state stays readable for inspection."""

    # -- topics and publishing ---------------------------------------------------------------

    async def _ensure_topic(self, topic: str, partitions: int, retention: Retention) -> TopicInfo:
        return self._topic(topic, partitions, retention).info

    def _topic(self, name: str, partitions: int = 4, retention: Retention | None = None) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            info = TopicInfo(name, partitions, retention or Retention())
            topic = self._topics[name] = _Topic(info, [_Partition() for _ in range(partitions)])
        return topic

    async def _append(self, topic: str, messages: Sequence[Outgoing]) -> list[PublishResult]:
        log = self._topic(topic)
        return [self._append_one(log, message) for message in messages]

    def _append_one(self, topic: _Topic, message: Outgoing) -> PublishResult:
        event_id = message.event_id
        if event_id is not None and event_id in topic.ids:
            return PublishResult(event_id, *topic.ids[event_id], duplicate=True)
        index = partition_for(message.key, len(topic.partitions), fallback=topic.keyless)
        topic.keyless += message.key is None
        partition = topic.partitions[index]
        stored = _Message(
            message.key,
            event_id,
            message.envelope,
            message.flags,
            message.headers,
            time.time_ns() // 1000,
        )
        partition.messages.append(stored)
        if event_id is not None:
            topic.ids[event_id] = (index, partition.end - 1)
        return PublishResult(event_id or "", index, partition.end - 1)

    # -- members and claims ------------------------------------------------------------------

    def _group(self, member: Member) -> tuple[_Topic, _Group]:
        topic = self._topic(member.topic)
        group = topic.groups.get(member.group)
        if group is None:
            group = topic.groups[member.group] = topic.new_group(member.start)
        return topic, group

    async def _join(self, member: Member) -> None:
        self._group(member)[1].members.add(member.id)

    async def _claim(self, member: Member, limit: int) -> ClaimResult:
        await asyncio.sleep(0)  # a claim is I/O elsewhere: let the other members run first
        topic, group = self._group(member)
        group.members.add(member.id)
        now = time.monotonic()
        claim = _Claim(topic, group, member, now)
        share = -(-len(topic.partitions) // len(group.members))
        mine, free = _holdings(group, member, now)
        used = 0
        for index in chain(mine, free):
            if used >= share or len(claim.out) >= limit:
                break
            taken = claim.take(index, limit - len(claim.out))
            used += int(taken or index in mine)
        return ClaimResult(claim.out, _due(group, now))

    # -- settlement --------------------------------------------------------------------------

    def _entry(self, member: Member, claimed: Claimed) -> tuple[_Group, _Entry | None]:
        group = self._group(member)[1]
        return group, group.find(claimed)

    async def _ack(self, member: Member, claimed: Claimed) -> None:
        group, entry = self._entry(member, claimed)
        if entry is not None:
            del group.pending[claimed.partition][claimed.offset]

    async def _nack(self, member: Member, claimed: Claimed, delay: float) -> None:
        entry = self._entry(member, claimed)[1]
        if entry is not None:
            entry.holder, entry.visible_at = None, time.monotonic() + delay

    async def _extend(self, member: Member, claimed: Claimed, seconds: float) -> None:
        entry = self._entry(member, claimed)[1]
        if entry is not None:
            entry.visible_at = time.monotonic() + seconds

    async def _dead_letter(self, member: Member, claimed: Claimed, message: Outgoing) -> None:
        group, entry = self._entry(member, claimed)
        if entry is None:
            return
        del group.pending[claimed.partition][claimed.offset]
        partitions = len(self._topic(member.topic).partitions)
        self._append_one(self._topic(dead_letter_topic(member.topic), partitions), message)

    async def _leave(self, member: Member, unyielded: Sequence[Claimed]) -> None:
        group = self._group(member)[1]
        group.members.discard(member.id)
        now = time.monotonic()
        for entry in _entries(group):
            if entry.holder == member.id:
                entry.holder, entry.visible_at = None, now
        for claimed in unyielded:  # handed out but never seen: not a delivery
            unseen = group.find(claimed)
            if unseen is not None:
                unseen.attempt -= 1

    # -- replay and retention ----------------------------------------------------------------

    async def _replay(
        self, topic: str, group: str, offsets: Mapping[int, int] | None, since_us: int | None
    ) -> None:
        log = self._topic(topic)
        state = log.groups.get(group)
        if state is None:
            state = log.groups[group] = log.new_group(StartFrom.EARLIEST)
        targets = dict(offsets) if offsets is not None else _offsets_since(log, since_us or 0)
        for index, offset in targets.items():
            if not 0 <= index < len(log.partitions):
                raise ValueError(f"topic {topic!r} has no partition {index}")
            partition = log.partitions[index]
            state.cursors[index] = min(max(offset, partition.base), partition.end)
            state.pending[index].clear()

    async def _enforce_retention(self) -> int:
        now_us = time.time_ns() // 1000
        return sum(_expire(topic, now_us) for topic in self._topics.values())


class _Claim:
    """One claim in progress: takes visible entries, then new messages, partition by partition."""

    def __init__(self, topic: _Topic, group: _Group, member: Member, now: float) -> None:
        self.topic, self.group, self.member = topic, group, member
        self.lease = member.next_lease()
        self.deadline = now + member.ack_deadline
        self.now = now
        self.out: list[Claimed] = []

    def take(self, index: int, limit: int) -> bool:
        before = len(self.out)
        pending = self.group.pending[index]
        for offset in sorted(o for o, e in pending.items() if e.visible_at <= self.now)[:limit]:
            self._hand(index, offset, pending[offset])
        cursor, end = self.group.cursors[index], self.topic.partitions[index].end
        while len(self.out) - before < limit and cursor < end:
            pending[cursor] = entry = _Entry(0, 0.0, None, 0)
            self._hand(index, cursor, entry)
            cursor += 1
        self.group.cursors[index] = cursor
        return len(self.out) > before

    def _hand(self, index: int, offset: int, entry: _Entry) -> None:
        entry.attempt += 1
        entry.holder, entry.lease, entry.visible_at = self.member.id, self.lease, self.deadline
        message = self.topic.partitions[index].at(offset)
        self.out.append(
            Claimed(
                index,
                offset,
                message.key,
                entry.attempt,
                self.lease,
                message.envelope,
                message.flags,
                message.headers,
            )
        )


def _entries(group: _Group) -> Iterator[_Entry]:
    for pending in group.pending:
        yield from pending.values()


def _holdings(group: _Group, member: Member, now: float) -> tuple[list[int], list[int]]:
    """Return the partitions the member holds in flight, and those no member holds (rotated)."""
    mine, free = [], []
    count = len(group.pending)
    start = zlib.crc32(member.id.encode()) % count
    for index in [(start + i) % count for i in range(count)]:
        holders = {e.holder for e in group.pending[index].values() if e.visible_at > now}
        holders.discard(None)
        if member.id in holders:
            mine.append(index)
        elif not holders:
            free.append(index)
    return sorted(mine), free


def _due(group: _Group, now: float) -> float | None:
    later = [e.visible_at for e in _entries(group) if e.visible_at > now]
    return min(later) - now if later else None


def _offsets_since(topic: _Topic, since_us: int) -> dict[int, int]:
    return {
        index: partition.base
        + bisect.bisect_left(partition.messages, since_us, key=lambda m: m.published_at_us)
        for index, partition in enumerate(topic.partitions)
    }


def _expire(topic: _Topic, now_us: int) -> int:
    """Drop the messages past the topic's retention that every group has settled."""
    rule = topic.info.retention
    if rule.max_age is None and rule.max_count is None:
        return 0
    oldest_us = -1 if rule.max_age is None else now_us - int(rule.max_age.total_seconds() * 1e6)
    removed = 0
    for index, partition in enumerate(topic.partitions):
        keep_from = min((g.committed(index) for g in topic.groups.values()), default=partition.end)
        over = partition.end - rule.max_count if rule.max_count is not None else partition.base
        count = 0
        for message in partition.messages[: max(0, keep_from - partition.base)]:
            if message.published_at_us >= oldest_us and partition.base + count >= over:
                break
            count += 1
        for message in partition.messages[:count]:
            if message.event_id is not None:
                topic.ids.pop(message.event_id, None)
        del partition.messages[:count]
        partition.base += count
        removed += count
    return removed
