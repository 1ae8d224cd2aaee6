"""What the SQLite broker does to copy a topic out and in (`tidings.messaging.transfer`).

Each function runs on the writer thread, inside the group commit's transaction (so a read
sees every settlement queued before it), given the connection and the time in µs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from tidings.adapters.sqlite import broker_ops as ops
from tidings.adapters.sqlite import broker_sql as q
from tidings.messaging.base import Outgoing
from tidings.messaging.ports import PublishResult, TopicInfo
from tidings.messaging.stored import from_envelope
from tidings.messaging.transfer import StoredMessage

__all__ = ["append_to_partition", "describe_topic", "group_positions", "read_partition"]

_READ: Final = (
    "SELECT msg_offset, msg_key, flags, envelope FROM tidings_messages"
    " WHERE topic_id = ? AND partition = ? AND msg_offset >= ? ORDER BY msg_offset LIMIT ?"
)
_POSITIONS: Final = (
    "SELECT g.name, c.partition, COALESCE((SELECT MIN(d.msg_offset) FROM tidings_pending d"
    " WHERE d.group_id = c.group_id AND d.partition = c.partition), c.next_offset)"
    " FROM tidings_cursors c JOIN tidings_groups g ON g.group_id = c.group_id"
    " WHERE g.topic_id = ? ORDER BY g.name, c.partition"
)


def _topic(conn: sqlite3.Connection, name: str) -> ops.TopicRow | None:
    row = conn.execute(q.TOPIC, (name,)).fetchone()
    return None if row is None else ops.TopicRow(*row)


def _partition_of(conn: sqlite3.Connection, name: str, partition: int) -> ops.TopicRow:
    row = _topic(conn, name)
    if row is None:
        raise ValueError(f"topic {name!r} does not exist")
    if not 0 <= partition < row.partitions:
        raise ValueError(f"topic {name!r} has no partition {partition}")
    return row


def describe_topic(conn: sqlite3.Connection, now: int, *, topic: str) -> TopicInfo | None:
    """Return the topic's shape, or None when it does not exist."""
    row = _topic(conn, topic)
    return None if row is None else row.info(topic)


def read_partition(
    conn: sqlite3.Connection, now: int, *, topic: str, partition: int, start: int, limit: int
) -> list[StoredMessage]:
    """Return up to ``limit`` messages of a partition at offsets >= ``start``, in order."""
    row = _partition_of(conn, topic, partition)
    rows = conn.execute(_READ, (row.topic_id, partition, start, limit)).fetchall()
    return [
        from_envelope(partition, offset, key, envelope, flags)
        for offset, key, flags, envelope in rows
    ]


def group_positions(conn: sqlite3.Connection, now: int, *, topic: str) -> dict[str, dict[int, int]]:
    """Return each group's committed offset per partition: lowest pending, else its cursor."""
    row = _topic(conn, topic)
    positions: dict[str, dict[int, int]] = {}
    if row is None:
        return positions
    for group, partition, committed in conn.execute(_POSITIONS, (row.topic_id,)):
        positions.setdefault(group, {})[partition] = committed
    return positions


def append_to_partition(
    conn: sqlite3.Connection,
    now: int,
    *,
    topic: str,
    partition: int,
    messages: Sequence[Outgoing],
) -> list[PublishResult]:
    """Store messages at the head of one partition, skipping event ids the topic holds."""
    row = _partition_of(conn, topic, partition)
    return ops.append(
        conn, now, topic=topic, messages=messages, partitions=row.partitions, at=partition
    )
