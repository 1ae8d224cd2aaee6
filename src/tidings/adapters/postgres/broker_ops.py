"""What the PostgreSQL broker does for topics, replay and retention, on a connection it is given.

Each function runs its statements on the connection `PostgresBroker` hands it (inside the
broker's connection handling, which translates errors and retries where safe).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from tidings.adapters.postgres.broker_claims import ensure_group
from tidings.adapters.postgres.broker_publish import TopicRow
from tidings.adapters.postgres.broker_sql import BrokerStatements
from tidings.messaging.ports import Retention, StartFrom

__all__ = ["ensure_topic", "expire", "replay"]

Conn = AsyncConnection[TupleRow]
_US: Final = 1_000_000


async def ensure_topic(
    conn: Conn, s: BrokerStatements, name: str, partitions: int, retention: Retention
) -> TopicRow:
    """Return the topic's row, creating the topic (and its partitions) when missing."""
    age_us = None if retention.max_age is None else int(retention.max_age.total_seconds() * _US)
    cursor = await conn.execute(s.create_topic, (name, partitions, age_us, retention.max_count))
    row = await cursor.fetchone()
    if row is None:  # it existed: the first shape stays
        cursor = await conn.execute(s.topic, (name,))
        row = await cursor.fetchone()
    assert row is not None, "a topic is never deleted"
    return TopicRow(*row)


async def replay(
    conn: Conn,
    s: BrokerStatements,
    topic: TopicRow,
    group: str,
    *,
    offsets: Mapping[int, int] | None,
    since_us: int | None,
) -> None:
    """Move the group's cursors and drop its pending entries in the moved partitions.

    Under the group's lock, as claims take it, so no claim sees half a replay.
    """
    group_id = await ensure_group(conn, s, topic.topic_id, group, StartFrom.EARLIEST)
    async with conn.transaction():
        await conn.execute(s.lock_group, (group_id,))
        targets = await _targets(conn, s, topic, offsets, since_us)
        for partition, offset in targets.items():
            await conn.execute(s.set_cursor, (offset, group_id, partition))
            await conn.execute(s.drop_pending, (group_id, partition))


async def _targets(
    conn: Conn,
    s: BrokerStatements,
    topic: TopicRow,
    offsets: Mapping[int, int] | None,
    since_us: int | None,
) -> dict[int, int]:
    """Return the new cursor per partition, kept between the retained low and the head."""
    cursor = await conn.execute(s.bounds, (topic.topic_id,))
    bounds = {p: (low, head) for p, low, head in await cursor.fetchall()}
    if offsets is None:
        cursor = await conn.execute(s.first_since, (since_us or 0, topic.topic_id))
        offsets = {int(p): int(first) for p, first in await cursor.fetchall()}
    targets = {}
    for partition, offset in offsets.items():
        if partition not in bounds:
            raise ValueError(f"the topic has no partition {partition}")
        low, head = bounds[partition]
        targets[partition] = min(max(offset, low), head)
    return targets


async def expire(conn: Conn, s: BrokerStatements) -> int:
    """Delete messages past retention below every group's committed offset; return how many.

    Also forgets members whose session ended more than an hour ago.
    """
    cursor = await conn.execute(s.expire)
    removed = max(0, cursor.rowcount)
    await conn.execute(s.forget_dead_members)
    return removed
