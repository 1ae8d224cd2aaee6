"""What the SQLite broker does inside a write transaction: topics, publishing, replay, retention.

Each function runs on the writer thread, inside the group commit's transaction, and is given
the connection and the time in µs; see `tidings.messaging.base` for the model they follow.
Claims and settlements are in `tidings.adapters.sqlite.broker_claims`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec

from tidings.adapters.sqlite import broker_sql as q
from tidings.messaging.base import Outgoing
from tidings.messaging.ports import (
    PublishResult,
    Retention,
    StartFrom,
    TopicInfo,
    partition_for,
)

__all__ = ["TopicRow", "append", "ensure_group", "ensure_topic", "expire", "replay"]

DEFAULT_PARTITIONS: Final = 4


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

    def add(
        self, conn: sqlite3.Connection | None, message: Outgoing, at: int | None = None
    ) -> PublishResult:
        """Place a message in partition ``at`` (else its key's); given ``conn``, look its id up."""
        event_id = message.event_id
        if event_id is not None:
            known = self.seen.get(event_id)
            if known is None and conn is not None:
                known = _stored(conn, self.topic.topic_id, event_id)
            if known is not None:
                return PublishResult(event_id, known.partition, known.offset, duplicate=True)
        partition = at
        if partition is None:
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
    at: int | None = None,
) -> list[PublishResult]:
    """Store messages at the heads of their partitions, skipping event ids already stored.

    ``at`` puts every message in that one partition instead of the partition of its key.

    The ids are first left to the unique index (one insert per message, no lookup); only a
    batch that holds a stored id is rolled back and placed again, looking every id up.
    """
    row = ensure_topic(conn, topic, partitions)
    heads = dict(conn.execute(q.HEADS, (row.topic_id,)).fetchall())
    keyless = conn.execute(q.KEYLESS, (row.topic_id,)).fetchone()[0]
    conn.execute("SAVEPOINT unchecked")
    try:
        appender = _Appender(row, dict(heads), keyless, now)
        results = [appender.add(None, message, at) for message in messages]
        conn.executemany(q.INSERT_MESSAGE, appender.rows)
    except sqlite3.IntegrityError:  # an id was stored before: place them again, looking up
        conn.execute("ROLLBACK TO unchecked")
        appender = _Appender(row, dict(heads), keyless, now)
        results = [appender.add(conn, message, at) for message in messages]
        conn.executemany(q.INSERT_MESSAGE, appender.rows)
    conn.execute("RELEASE unchecked")
    moved = [(head, row.topic_id, p) for p, head in appender.heads.items() if head != heads[p]]
    conn.executemany(q.SET_HEAD, moved)
    if appender.keyless != keyless:
        conn.execute(q.SET_KEYLESS, (appender.keyless, row.topic_id))
    return results


# -- groups ------------------------------------------------------------------------------------


def ensure_group(conn: sqlite3.Connection, topic: TopicRow, name: str, start: StartFrom) -> int:
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
    group_id = ensure_group(conn, row, group, StartFrom.EARLIEST)
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
