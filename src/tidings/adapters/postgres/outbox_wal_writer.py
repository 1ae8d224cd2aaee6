"""The tableless outbox's writer: one logical decoding message per event, in the caller's
transaction.

`PostgresWalOutbox.add` runs ``pg_logical_emit_message(true, prefix, payload)`` on the
application's psycopg connection. Being transactional, the message is decoded only if its
transaction commits, at the transaction's commit position, so readers see messages in commit
order. With ``channel`` set (the default), the same statement queues a NOTIFY, sent at commit,
that wakes relays at once (NOTIFY takes a database-wide lock at commit; pass ``channel=None``
when writers commit at very high rates and polling latency is enough).
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

from tidings.adapters.postgres.outbox_wal_payload import encode_payload
from tidings.events import Event
from tidings.eventstore.base import DEFAULT_MAX_EVENT_BYTES

__all__ = ["DEFAULT_CHANNEL", "DEFAULT_PREFIX", "PostgresWalOutbox", "add"]

DEFAULT_PREFIX: Final = "tidings.outbox"
"""The logical decoding message prefix outbox messages are written with."""
DEFAULT_CHANNEL: Final = "tidings_outbox_wal"
"""The NOTIFY channel writers announce commits on, and sources listen to."""

_EMIT: Final = b"SELECT pg_logical_emit_message(true, %s, %s::bytea)"
_EMIT_NOTIFY: Final = b"SELECT pg_logical_emit_message(true, %s, %s::bytea), pg_notify(%s, '')"


class PostgresWalOutbox:
    """Writes outbox messages to the WAL through the application's psycopg connection.

    Args:
        prefix: The message prefix (a source reads one prefix).
        channel: The NOTIFY channel to wake relays on at commit, or None (relays poll).
        max_event_bytes: The largest encoded event accepted.
    """

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_PREFIX,
        channel: str | None = DEFAULT_CHANNEL,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.prefix = prefix
        self.channel = channel
        self.max_event_bytes = max_event_bytes

    async def add(
        self,
        conn: psycopg.AsyncConnection[Any],
        event: Event,
        *,
        topic: str,
        key: str | None = None,
        aggregate_type: str | None = None,
        aggregate_id: str | None = None,
    ) -> None:
        """Write ``event`` for ``topic`` in the connection's current transaction.

        It becomes readable when that transaction commits, and never if it rolls back (on an
        autocommit connection outside a transaction it commits at once). Defaults of the key
        and the aggregate: `tidings.outbox.rows.outbox_row`. Driver errors are the
        application's to handle (they abort its transaction), so they are raised as psycopg
        raised them.

        Raises:
            ValueError: no aggregate id can be found, or the topic name is not valid.
            EventTooLargeError: the encoded event is over ``max_event_bytes``.
        """
        content = encode_payload(
            event,
            topic=topic,
            key=key,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            max_event_bytes=self.max_event_bytes,
        )
        if self.channel is None:
            await conn.execute(_EMIT, (self.prefix, content))
        else:
            await conn.execute(_EMIT_NOTIFY, (self.prefix, content, self.channel))


_default_writer: Final = PostgresWalOutbox()


async def add(
    conn: psycopg.AsyncConnection[Any],
    event: Event,
    *,
    topic: str,
    key: str | None = None,
    aggregate_type: str | None = None,
    aggregate_id: str | None = None,
) -> None:
    """`PostgresWalOutbox.add` with the default prefix and channel."""
    await _default_writer.add(
        conn, event, topic=topic, key=key, aggregate_type=aggregate_type, aggregate_id=aggregate_id
    )
