"""What the SQLite broker does inside a write transaction: publish, join, claim, settle, replay.

Each function runs on the writer thread, inside the group commit's transaction, and is given
the connection and the time in µs; see `tidings.messaging.base` for the model they follow.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Final

import msgspec

from tidings.adapters.sqlite import broker_sql as q
from tidings.messaging.base import Claimed, Outgoing
from tidings.messaging.ports import (
    PublishResult,
    Retention,
    StartFrom,
    TopicInfo,
    dead_letter_topic,
    partition_for,
)

__all__ = ["GroupRef", "TopicRow"]

DEFAULT_PARTITIONS: Final = 4
_headers_decoder: Final = msgspec.json.Decoder(dict[str, str])


@dataclass(frozen=True, slots=True)
class TopicRow:
    """A topic as stored."""

    topic_id: int
    partitions: int
    max_age_us: int | None
    max_count: int | None

    def info(self, name: str) -> TopicInfo:
        """Return the public shape of the topic."""
        from datetime import timedelta

        age = None if self.max_age_us is None else timedelta(microseconds=self.max_age_us)
        return TopicInfo(name, self.partitions, Retention(max_age=age, max_count=self.max_count))


@dataclass(frozen=True, slots=True)
class GroupRef:
    """Where a member's group lives."""

    topic_id: int
    group_id: int
    partitions: int


def ensure_topic(
    conn: sqlite3.Connection,
    name: str,
    partitions: int = DEFAULT_PARTITIONS,
    retention: Retention | None = None,
) -> TopicRow:
    """Return the topic, creating it (and its partitions) when missing."""
    row = conn.execute(q.TOPIC, (name,)).fetchone()
    if row is not None:
        return TopicRow(*row)
    rule = retention or Retention()
    age_us = None if rule.max_age is None else int(rule.max_age.total_seconds() * 1_000_000)
    topic_id = conn.execute(q.INSERT_TOPIC, (name, partitions, age_us, rule.max_count)).lastrowid
    assert topic_id is not None
    conn.executemany(q.INSERT_PARTITION, [(topic_id, p) for p in range(partitions)])
    return TopicRow(topic_id, partitions, age_us, rule.max_count)


# -- publishing -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Appender:
    """One topic's heads and keyless counter during a transaction, and the rows to insert."""

    topic: TopicRow
    heads: dict[int, int]
    keyless: int
    now: int
    rows: list[tuple[object, ...]] = field(default_factory=list)
    seen: dict[str, PublishResult] = field(default_factory=dict)

    def add(self, conn: sqlite3.Connection | None, message: Outgoing) -> PublishResult:
        """Place a message; with a connection, look its event id up in the table first."""
        event_id = message.event_id
        if event_id is not None:
            known = self.seen.get(event_id)
            if known is None and conn is not None:
                known = _stored(conn, self.topic.topic_id, event_id)
            if known is not None:
                return PublishResult(event_id, known.partition, known.offset, duplicate=True)
        partition = partition_for(message.key, self.topic.partitions, fallback=self.keyless)
        self.keyless += message.key is None
        offset = self.heads[partition]
        self.heads[partition] = offset + 1
        headers = None if not message.headers else msgspec.json.encode(message.headers)
        where = (self.topic.topic_id, partition, offset)
        self.rows.append(
            (*where, event_id, message.key, message.flags, message.envelope, headers, self.now)
        )
        result = PublishResult(event_id or "", partition, offset)
        if event_id is not None:
            self.seen[event_id] = result
        return result


def _stored(conn: sqlite3.Connection, topic_id: int, event_id: str) -> PublishResult | None:
    row = conn.execute(q.MESSAGE_BY_ID, (topic_id, event_id)).fetchone()
    return None if row is None else PublishResult(event_id, row[0], row[1])


def append(
    conn: sqlite3.Connection,
    now: int,
    *,
    topic: str,
    messages: Sequence[Outgoing],
    partitions: int = DEFAULT_PARTITIONS,
) -> list[PublishResult]:
    """Store messages at the heads of their partitions, skipping event ids already stored.

    The ids are first left to the unique index (one insert per message, no lookup); only a
    batch that holds a stored id is rolled back and placed again, looking every id up.
    """
    row = ensure_topic(conn, topic, partitions)
    heads = dict(conn.execute(q.HEADS, (row.topic_id,)).fetchall())
    keyless = conn.execute(q.KEYLESS, (row.topic_id,)).fetchone()[0]
    conn.execute("SAVEPOINT unchecked")
    try:
        appender = _Appender(row, dict(heads), keyless, now)
        results = [appender.add(None, message) for message in messages]
        conn.executemany(q.INSERT_MESSAGE, appender.rows)
    except sqlite3.IntegrityError:  # an id was stored before: place them again, looking up
        conn.execute("ROLLBACK TO unchecked")
        appender = _Appender(row, dict(heads), keyless, now)
        results = [appender.add(conn, message) for message in messages]
        conn.executemany(q.INSERT_MESSAGE, appender.rows)
    conn.execute("RELEASE unchecked")
    moved = [(head, row.topic_id, p) for p, head in appender.heads.items() if head != heads[p]]
    conn.executemany(q.SET_HEAD, moved)
    if appender.keyless != keyless:
        conn.execute(q.SET_KEYLESS, (appender.keyless, row.topic_id))
    return results


# -- groups, members, claims ------------------------------------------------------------------


def _ensure_group(conn: sqlite3.Connection, topic: TopicRow, name: str, start: StartFrom) -> int:
    row = conn.execute(q.GROUP, (topic.topic_id, name)).fetchone()
    if row is not None:
        return int(row[0])
    group_id = conn.execute(q.INSERT_GROUP, (topic.topic_id, name)).lastrowid
    assert group_id is not None
    latest = start is StartFrom.LATEST
    positions = conn.execute(q.LOW_AND_HEAD, (topic.topic_id,)).fetchall()
    cursors = [(group_id, p, head if latest else low) for p, low, head in positions]
    conn.executemany(q.INSERT_CURSOR, cursors)
    return group_id


def join(
    conn: sqlite3.Connection,
    now: int,
    *,
    topic: str,
    group: str,
    member: str,
    start: StartFrom,
    session_us: int,
) -> GroupRef:
    """Create the topic and group as needed, and start the member's session."""
    row = ensure_topic(conn, topic)
    group_id = _ensure_group(conn, row, group, start)
    conn.execute(q.UPSERT_MEMBER, (group_id, member, now + session_us))
    return GroupRef(row.topic_id, group_id, row.partitions)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Who claims, how many, under which lease, for how long."""

    ref: GroupRef
    member: str
    limit: int
    lease: int
    deadline_us: int
    session_us: int


def claim(
    conn: sqlite3.Connection, now: int, *, request: ClaimRequest
) -> tuple[list[Claimed], int | None]:
    """Hand the member its deliveries; return them and when the group's next entry is due."""
    ref = request.ref
    conn.execute(q.UPSERT_MEMBER, (ref.group_id, request.member, now + request.session_us))
    alive = conn.execute(q.ALIVE_MEMBERS, (ref.group_id, now)).fetchone()[0]
    share = -(-ref.partitions // max(1, alive))
    mine, free = _holdings(conn, request, now)
    taker = _Taker(conn, request, now)
    used = 0
    for partition in chain(mine, free):
        if used >= share or len(taker.out) >= request.limit:
            break
        took = taker.take(partition, request.limit - len(taker.out))
        used += int(took or partition in mine)
    due = conn.execute(q.NEXT_DUE, (ref.group_id, now)).fetchone()[0]
    return taker.out, due


def _holdings(
    conn: sqlite3.Connection, request: ClaimRequest, now: int
) -> tuple[list[int], list[int]]:
    """Return the partitions the member holds in flight, and those nobody holds (rotated)."""
    rows = conn.execute(q.HOLDERS, (request.ref.group_id, now)).fetchall()
    mine = sorted({p for p, holder in rows if holder == request.member})
    busy = {p for p, holder in rows if holder != request.member}
    count = request.ref.partitions
    start = zlib.crc32(request.member.encode()) % count
    rotated = [(start + i) % count for i in range(count)]
    return mine, [p for p in rotated if p not in busy and p not in mine]


class _Taker:
    """Takes visible entries, then new messages, from one partition after another."""

    def __init__(self, conn: sqlite3.Connection, request: ClaimRequest, now: int) -> None:
        self.conn, self.request, self.now = conn, request, now
        self.until = now + request.deadline_us
        self.out: list[Claimed] = []

    def take(self, partition: int, limit: int) -> bool:
        before = len(self.out)
        self._again(partition, limit)
        if len(self.out) - before < limit:
            self._new(partition, limit - (len(self.out) - before))
        return len(self.out) > before

    def _again(self, partition: int, limit: int) -> None:
        ref, request = self.request.ref, self.request
        params = (ref.topic_id, ref.group_id, partition, self.now, limit)
        rows = self.conn.execute(q.READY, params).fetchall()
        lease = (request.member, request.lease, self.until, ref.group_id, partition)
        self.conn.executemany(q.HAND_AGAIN, [(*lease, row[0]) for row in rows])
        for offset, attempt, key, flags, envelope, headers in rows:
            self._out(partition, offset, attempt + 1, key, flags, envelope, headers)

    def _new(self, partition: int, limit: int) -> None:
        ref, request = self.request.ref, self.request
        cursor = self.conn.execute(q.CURSOR, (ref.group_id, partition)).fetchone()[0]
        params = (ref.topic_id, partition, cursor, limit)
        rows = self.conn.execute(q.NEW_MESSAGES, params).fetchall()
        if not rows:
            return
        held = (self.until, request.member, request.lease)
        entries = [(ref.group_id, partition, row[0], *held) for row in rows]
        self.conn.executemany(q.INSERT_PENDING, entries)
        self.conn.execute(q.SET_CURSOR, (rows[-1][0] + 1, ref.group_id, partition))
        for offset, key, flags, envelope, headers in rows:
            self._out(partition, offset, 1, key, flags, envelope, headers)

    def _out(
        self,
        partition: int,
        offset: int,
        attempt: int,
        key: str | None,
        flags: int,
        envelope: bytes,
        headers: bytes | None,
    ) -> None:
        decoded = None if headers is None else _headers_decoder.decode(headers)
        lease = self.request.lease
        self.out.append(Claimed(partition, offset, key, attempt, lease, envelope, flags, decoded))


# -- settlement -------------------------------------------------------------------------------


def _entry(ref: GroupRef, claimed: Claimed) -> tuple[int, int, int, int]:
    return ref.group_id, claimed.partition, claimed.offset, claimed.lease


def ack(conn: sqlite3.Connection, now: int, *, ref: GroupRef, claimed: Claimed) -> int:
    """Remove the entry if the lease is current; return how many rows changed."""
    return conn.execute(q.ACK, _entry(ref, claimed)).rowcount


def nack(
    conn: sqlite3.Connection, now: int, *, ref: GroupRef, claimed: Claimed, delay_us: int
) -> int:
    """Make the entry visible again after the delay, if the lease is current."""
    return conn.execute(q.NACK, (now + delay_us, *_entry(ref, claimed))).rowcount


def extend(
    conn: sqlite3.Connection, now: int, *, ref: GroupRef, claimed: Claimed, seconds_us: int
) -> int:
    """Move the entry's deadline, if the lease is current."""
    return conn.execute(q.EXTEND, (now + seconds_us, *_entry(ref, claimed))).rowcount


def dead_letter(
    conn: sqlite3.Connection,
    now: int,
    *,
    ref: GroupRef,
    claimed: Claimed,
    topic: str,
    message: Outgoing,
) -> int:
    """Remove the entry and append the message to the topic's dead-letter topic, together."""
    removed = conn.execute(q.ACK, _entry(ref, claimed)).rowcount
    if removed:
        append(
            conn, now, topic=dead_letter_topic(topic), messages=[message], partitions=ref.partitions
        )
    return removed


def leave(
    conn: sqlite3.Connection,
    now: int,
    *,
    ref: GroupRef,
    member: str,
    unyielded: Sequence[Claimed],
) -> None:
    """Release what the member holds (visible now), un-count unseen attempts, end its session."""
    conn.execute(q.RELEASE, (now, ref.group_id, member))
    conn.executemany(q.UNCOUNT, [_entry(ref, claimed) for claimed in unyielded])
    conn.execute(q.DELETE_MEMBER, (ref.group_id, member))


# -- replay and retention ---------------------------------------------------------------------


def replay(
    conn: sqlite3.Connection,
    now: int,
    *,
    topic: str,
    group: str,
    offsets: Mapping[int, int] | None,
    since_us: int | None,
) -> None:
    """Move the group's cursors and drop its pending entries in the moved partitions."""
    row = ensure_topic(conn, topic)
    group_id = _ensure_group(conn, row, group, StartFrom.EARLIEST)
    bounds = {p: (low, head) for p, low, head in conn.execute(q.LOW_AND_HEAD, (row.topic_id,))}
    targets = dict(offsets) if offsets is not None else _since(conn, row, bounds, since_us or 0)
    for partition, offset in targets.items():
        if partition not in bounds:
            raise ValueError(f"topic {topic!r} has no partition {partition}")
        low, head = bounds[partition]
        conn.execute(q.SET_CURSOR, (min(max(offset, low), head), group_id, partition))
        conn.execute(q.DROP_PENDING, (group_id, partition))


def _since(
    conn: sqlite3.Connection, row: TopicRow, bounds: Mapping[int, tuple[int, int]], since_us: int
) -> dict[int, int]:
    targets = {}
    for partition, (_, head) in bounds.items():
        first = conn.execute(q.FIRST_SINCE, (row.topic_id, partition, since_us)).fetchone()[0]
        targets[partition] = head if first is None else first
    return targets


def expire(conn: sqlite3.Connection, now: int) -> int:
    """Delete messages past their topic's retention below every group's committed offset."""
    removed = 0
    for topic_id, max_age_us, max_count in conn.execute(q.RETAINED_TOPICS).fetchall():
        cutoff = -1 if max_age_us is None else now - max_age_us
        for partition, head in conn.execute(q.HEADS, (topic_id,)).fetchall():
            committed = conn.execute(q.COMMITTED, (topic_id, partition)).fetchone()[0]
            keep_from = head if committed is None else committed
            over = -1 if max_count is None else head - max_count
            params = (topic_id, partition, keep_from, over, cutoff)
            removed += conn.execute(q.EXPIRE, params).rowcount
    conn.execute(q.FORGET_DEAD_MEMBERS, (now - 3_600_000_000,))
    return removed
