"""The in-memory broker's state: partitions of messages, groups of cursors and pending entries.

Everything here runs on the event loop between two awaits, so no lock is needed; the
`MemoryBroker` methods in `tidings.adapters.memory.broker` call these to keep the model of
`tidings.messaging.base`.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from tidings.messaging.base import Claimed, Member
from tidings.messaging.ports import StartFrom, TopicInfo

__all__ = [
    "Claim",
    "Entry",
    "Group",
    "Message",
    "Partition",
    "Topic",
    "due",
    "entries",
    "expire",
    "holdings",
    "offsets_since",
]


@dataclass(slots=True)
class Message:
    key: str | None
    event_id: str | None
    envelope: bytes
    flags: int
    headers: Mapping[str, str] | None
    published_at_us: int


@dataclass(slots=True)
class Partition:
    messages: list[Message] = field(default_factory=list)
    base: int = 0  # offset of messages[0]; retention moves it up

    @property
    def end(self) -> int:
        return self.base + len(self.messages)

    def at(self, offset: int) -> Message:
        return self.messages[offset - self.base]


@dataclass(slots=True)
class Entry:
    attempt: int
    visible_at: float
    holder: str | None
    lease: int


@dataclass(slots=True)
class Group:
    cursors: list[int]
    pending: list[dict[int, Entry]]
    members: set[str] = field(default_factory=set)

    def committed(self, partition: int) -> int:
        entries = self.pending[partition]
        return min(entries) if entries else self.cursors[partition]

    def find(self, claimed: Claimed) -> Entry | None:
        entry = self.pending[claimed.partition].get(claimed.offset)
        return entry if entry is not None and entry.lease == claimed.lease else None


@dataclass(slots=True)
class Topic:
    info: TopicInfo
    partitions: list[Partition]
    ids: dict[str, tuple[int, int]] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    keyless: int = 0

    def new_group(self, start: StartFrom) -> Group:
        at_end = start is StartFrom.LATEST
        cursors = [p.end if at_end else p.base for p in self.partitions]
        return Group(cursors, [{} for _ in self.partitions])


class Claim:
    """One claim in progress: takes visible entries, then new messages, partition by partition."""

    def __init__(self, topic: Topic, group: Group, member: Member, now: float) -> None:
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
            pending[cursor] = entry = Entry(0, 0.0, None, 0)
            self._hand(index, cursor, entry)
            cursor += 1
        self.group.cursors[index] = cursor
        return len(self.out) > before

    def _hand(self, index: int, offset: int, entry: Entry) -> None:
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


def entries(group: Group) -> Iterator[Entry]:
    for pending in group.pending:
        yield from pending.values()


def holdings(group: Group, member: Member, now: float) -> tuple[list[int], list[int]]:
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


def due(group: Group, now: float) -> float | None:
    later = [e.visible_at for e in entries(group) if e.visible_at > now]
    return min(later) - now if later else None


def offsets_since(topic: Topic, since_us: int) -> dict[int, int]:
    return {
        index: partition.base
        + bisect.bisect_left(partition.messages, since_us, key=lambda m: m.published_at_us)
        for index, partition in enumerate(topic.partitions)
    }


def expire(topic: Topic, now_us: int) -> int:
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
