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
import time
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Final

from tidings.adapters.memory import broker_log as log
from tidings.events import Event
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
from tidings.messaging.stored import from_envelope
from tidings.messaging.transfer import StoredMessage, TopicTransfer

__all__ = ["MEMORY_CAPABILITIES", "MemoryBroker"]

MEMORY_CAPABILITIES: Final = Capabilities(
    support={op: Support.NATIVE for op in Operation if op is not Operation.DURABLE_OFFSETS},
    notes={Operation.DURABLE_OFFSETS: "state lives in the process and ends with it"},
)


class MemoryBroker(BrokerBase, TopicTransfer):
    """A broker in this process's memory (``memory://``); one instance is one broker."""

    capabilities = MEMORY_CAPABILITIES

    def __init__(self, url: str = "memory://") -> None:
        super().__init__()
        self.url = url
        self._topics: dict[str, log.Topic] = {}

    async def _open_storage(self) -> None:
        """Nothing to connect to."""

    async def _close_storage(self) -> None:
        """Nothing to release: the state stays readable for inspection."""

    # -- topics and publishing ---------------------------------------------------------------

    async def _ensure_topic(self, topic: str, partitions: int, retention: Retention) -> TopicInfo:
        return self._topic(topic, partitions, retention).info

    def _topic(
        self, name: str, partitions: int = 4, retention: Retention | None = None
    ) -> log.Topic:
        topic = self._topics.get(name)
        if topic is None:
            info = TopicInfo(name, partitions, retention or Retention())
            parts = [log.Partition() for _ in range(partitions)]
            topic = self._topics[name] = log.Topic(info, parts)
        return topic

    async def _append(self, topic: str, messages: Sequence[Outgoing]) -> list[PublishResult]:
        log = self._topic(topic)
        return [self._append_one(log, message) for message in messages]

    def _append_one(
        self, topic: log.Topic, message: Outgoing, at: int | None = None
    ) -> PublishResult:
        event_id = message.event_id
        if event_id is not None and event_id in topic.ids:
            return PublishResult(event_id, *topic.ids[event_id], duplicate=True)
        index = at
        if index is None:
            index = partition_for(message.key, len(topic.partitions), fallback=topic.keyless)
            topic.keyless += message.key is None
        partition = topic.partitions[index]
        stored = log.Message(
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

    def _group(self, member: Member) -> tuple[log.Topic, log.Group]:
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
        claim = log.Claim(topic, group, member, now)
        share = -(-len(topic.partitions) // len(group.members))
        mine, free = log.holdings(group, member, now)
        used = 0
        for index in chain(mine, free):
            if used >= share or len(claim.out) >= limit:
                break
            taken = claim.take(index, limit - len(claim.out))
            used += int(taken or index in mine)
        return ClaimResult(claim.out, log.due(group, now))

    # -- settlement --------------------------------------------------------------------------

    def _entry(self, member: Member, claimed: Claimed) -> tuple[log.Group, log.Entry | None]:
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
        for entry in log.entries(group):
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
        state = self._topic(topic)
        moved = state.groups.get(group)
        if moved is None:
            moved = state.groups[group] = state.new_group(StartFrom.EARLIEST)
        since = since_us or 0
        targets = dict(offsets) if offsets is not None else log.offsets_since(state, since)
        for index, offset in targets.items():
            if not 0 <= index < len(state.partitions):
                raise ValueError(f"topic {topic!r} has no partition {index}")
            partition = state.partitions[index]
            moved.cursors[index] = min(max(offset, partition.base), partition.end)
            moved.pending[index].clear()

    async def _enforce_retention(self) -> int:
        now_us = time.time_ns() // 1000
        return sum(log.expire(topic, now_us) for topic in self._topics.values())

    # -- moving topics (tidings.messaging.transfer) -------------------------------------------

    async def describe_topic(self, topic: str) -> TopicInfo | None:
        """Return the topic's shape, or None when it does not exist."""
        state = self._topics.get(topic)
        return None if state is None else state.info

    async def read_partition(
        self, topic: str, partition: int, *, from_offset: int = 0, limit: int = 1000
    ) -> list[StoredMessage]:
        """Return up to ``limit`` retained messages of a partition from an offset, in order."""
        stored = self._existing(topic, partition).partitions[partition]
        start = max(from_offset, stored.base)
        window = stored.messages[start - stored.base : start - stored.base + limit]
        return [
            from_envelope(partition, offset, m.key, m.envelope, m.flags)
            for offset, m in enumerate(window, start)
        ]

    async def group_positions(self, topic: str) -> Mapping[str, Mapping[int, int]]:
        """Return each group's committed offset per partition."""
        state = self._topics.get(topic)
        groups = {} if state is None else state.groups
        return {
            name: {p: g.committed(p) for p in range(len(g.cursors))} for name, g in groups.items()
        }

    async def append_to_partition(
        self, topic: str, partition: int, messages: Sequence[tuple[Event, str | None]]
    ) -> list[PublishResult]:
        """Store (event, key) pairs at the end of one partition, in order, once per event id."""
        await self._ensure_open()
        state = self._existing(topic, partition)
        outgoing = [self._outgoing(event, key) for event, key in messages]
        results = [self._append_one(state, message, partition) for message in outgoing]
        self._wakeup.notify()
        return results

    def _existing(self, topic: str, partition: int) -> log.Topic:
        state = self._topics.get(topic)
        if state is None:
            raise ValueError(f"topic {topic!r} does not exist")
        if not 0 <= partition < len(state.partitions):
            raise ValueError(f"topic {topic!r} has no partition {partition}")
        return state
