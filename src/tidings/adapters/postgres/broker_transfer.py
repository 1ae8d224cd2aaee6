"""Reading a PostgreSQL broker's topics out, for `tidings.messaging.transfer.TopicTransfer`.

Each function runs one statement on a connection it is given; `PostgresBroker` wraps them in
its connection handling. Writing a partition goes through the broker's publishing path.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from tidings.adapters.postgres.broker_publish import TopicRow
from tidings.adapters.postgres.broker_sql import BrokerStatements
from tidings.messaging.stored import from_envelope
from tidings.messaging.transfer import StoredMessage

__all__ = ["describe", "group_positions", "read_partition"]

Conn = AsyncConnection[TupleRow]


async def describe(conn: Conn, s: BrokerStatements, name: str) -> TopicRow | None:
    """Return the topic's row, or None when it does not exist."""
    cursor = await conn.execute(s.topic, (name,))
    row = await cursor.fetchone()
    return None if row is None else TopicRow(*row)


async def read_partition(
    conn: Conn, s: BrokerStatements, topic_id: int, partition: int, from_offset: int, limit: int
) -> list[StoredMessage]:
    """Return up to ``limit`` retained messages of a partition from an offset, in order."""
    cursor = await conn.execute(s.read_partition, (topic_id, partition, from_offset, limit))
    return [
        from_envelope(partition, offset, key, envelope, flags)
        for offset, key, flags, envelope in await cursor.fetchall()
    ]


async def group_positions(
    conn: Conn, s: BrokerStatements, topic_id: int
) -> dict[str, dict[int, int]]:
    """Return each group's committed offset per partition: lowest pending, else its cursor."""
    cursor = await conn.execute(s.committed, (topic_id,))
    out: dict[str, dict[int, int]] = {}
    for group, partition, offset in await cursor.fetchall():
        out.setdefault(group, {})[partition] = offset
    return out
