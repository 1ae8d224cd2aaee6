"""Processed keys and the inbox in PostgreSQL (table ``tidings_dedup`` in the store's schema).

Keys are unique (the primary key), and every statement is one atomic upsert, so concurrent
claims and records from any number of processes agree. Expiry uses the server's clock
(``now()``), so consumers on several machines agree too; expired rows are deleted by `purge`,
a batch per transaction (``FOR UPDATE SKIP LOCKED``, so two purgers do not wait on each
other).

An inbox transaction (`PostgresInbox.transaction`) inserts the key first, in the round trip
of its ``BEGIN`` (one simple query, bound on the client), inside the transaction that the
handler then writes its effects through: a concurrent transaction for
the same key waits on that row until the first one ends, then finds the key done (and commits
nothing) or, if the first rolled back, goes ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, LiteralString

from psycopg import AsyncClientCursor
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from tidings.adapters.postgres.snapshots import Conn, PostgresTables
from tidings.idempotency.inbox import Inbox, InboxBase, InboxTx
from tidings.idempotency.ports import (
    DEFAULT_LEASE,
    DEFAULT_TTL,
    AlreadyProcessed,
    Claim,
    DedupStore,
    inbox_key,
    ttl_seconds,
)
from tidings.messaging.ports import Delivery

__all__ = ["PostgresDedupStore", "PostgresInbox", "PostgresInboxTx"]

_CLAIM: Final = """
INSERT INTO {table} AS d (key, done, owner, expires_at)
VALUES (%(key)s, false, %(owner)s, now() + make_interval(secs => %(seconds)s))
ON CONFLICT (key) DO UPDATE SET done = false, owner = excluded.owner,
    expires_at = excluded.expires_at, outcome = NULL
WHERE NOT (d.expires_at IS NULL OR d.expires_at > now())
    OR (NOT d.done AND d.owner = excluded.owner)
RETURNING 1"""
_RECORD: Final = """
INSERT INTO {table} AS d (key, done, owner, expires_at, outcome)
VALUES (%(key)s, true, NULL, now() + make_interval(secs => %(seconds)s), %(outcome)s)
ON CONFLICT (key) DO UPDATE SET done = true, owner = NULL,
    expires_at = excluded.expires_at, outcome = excluded.outcome
WHERE NOT (d.done AND (d.expires_at IS NULL OR d.expires_at > now()))
RETURNING 1"""
_STATE: Final = """
SELECT d.done, d.outcome FROM {table} AS d
WHERE d.key = %(key)s AND (d.expires_at IS NULL OR d.expires_at > now())"""
_RELEASE: Final = """
DELETE FROM {table} AS d
WHERE d.key = %(key)s AND NOT d.done AND d.owner = %(owner)s
    AND (d.expires_at IS NULL OR d.expires_at > now())"""
_PURGE: Final = """
DELETE FROM {table} WHERE key IN (
    SELECT key FROM {table} WHERE expires_at <= now() LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"""
_OUTCOME: Final = "UPDATE {table} SET outcome = %(outcome)s WHERE key = %(key)s"


class PostgresDedupStore(PostgresTables, DedupStore):
    """A dedup store in PostgreSQL.

    Args:
        url: ``postgresql://user@host:port/dbname``.
        schema: The schema of ``tidings_dedup``; created when missing.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
    """

    table = "tidings_dedup"
    ddl = (
        """CREATE TABLE IF NOT EXISTS {table} (
            key TEXT COLLATE "C" PRIMARY KEY,
            done BOOLEAN NOT NULL,
            owner TEXT,
            expires_at TIMESTAMPTZ,
            outcome BYTEA)""",
        """CREATE INDEX IF NOT EXISTS tidings_dedup_expiry ON {table} (expires_at)
            WHERE expires_at IS NOT NULL""",
    )

    def __init__(
        self, url: str, *, schema: str = "public", min_size: int = 1, max_size: int = 8
    ) -> None:
        super().__init__(url, schema=schema, min_size=min_size, max_size=max_size)
        self._sql = {name: self.render(text) for name, text in _STATEMENTS.items()}

    async def _fetchone(
        self, conn: Conn, name: str, params: Mapping[str, object]
    ) -> TupleRow | None:
        return await (await conn.execute(self._sql[name], params)).fetchone()

    async def claim(self, key: str, owner: str, *, lease: float = DEFAULT_LEASE) -> Claim:
        """Claim a free or expired key (or renew one's own claim) for ``lease`` seconds."""
        params = {"key": key, "owner": owner, "seconds": lease}
        async with self._connection() as conn:
            if await self._fetchone(conn, "claim", params) is not None:
                return Claim.ACQUIRED
            found = await self._fetchone(conn, "state", params)
        return Claim.DONE if found is not None and found[0] else Claim.BUSY

    async def record(self, key: str, *, ttl: float | None = DEFAULT_TTL) -> bool:
        """Mark the key done for ``ttl`` seconds; False when it was done already."""
        params = {"key": key, "seconds": ttl_seconds(ttl), "outcome": None}
        async with self._connection() as conn:
            return await self._fetchone(conn, "record", params) is not None

    async def seen(self, key: str) -> bool:
        """Return True when the key is done and not expired."""
        async with self._connection() as conn:
            found = await self._fetchone(conn, "state", {"key": key})
        return found is not None and bool(found[0])

    async def release(self, key: str, owner: str) -> bool:
        """Drop ``owner``'s claim on the key; False when it held none."""
        async with self._connection() as conn:
            cursor = await conn.execute(self._sql["release"], {"key": key, "owner": owner})
            return cursor.rowcount > 0

    async def purge(self, *, batch_size: int = 1000) -> int:
        """Delete every expired key, ``batch_size`` per transaction; return how many."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        total = 0
        async with self._connection() as conn:
            while True:
                cursor = await conn.execute(self._sql["purge"], {"limit": batch_size})
                total += cursor.rowcount
                if cursor.rowcount < batch_size:
                    return total


_STATEMENTS: Final[dict[str, LiteralString]] = {
    "claim": _CLAIM,
    "record": _RECORD,
    "state": _STATE,
    "release": _RELEASE,
    "purge": _PURGE,
    "outcome": _OUTCOME,
}


class PostgresInboxTx(InboxTx):
    """A handler's handle on the inbox transaction: write the effects through `connection`.

    Attributes:
        connection: The psycopg ``AsyncConnection``, inside the transaction: never commit it.
    """

    def __init__(self, inbox: PostgresInbox, key: str, connection: Conn) -> None:
        super().__init__(inbox, key)
        self.connection = connection

    async def execute(self, query: str | bytes, params: Sequence[object] = ()) -> int:
        """Run one statement in the transaction; return the rows it changed."""
        cursor = await self.connection.execute(query, params)
        return cursor.rowcount

    async def executemany(self, query: str | bytes, rows: Sequence[Sequence[object]]) -> None:
        """Run one statement for each row, in the transaction."""
        async with self.connection.cursor() as cursor:
            await cursor.executemany(query, rows)

    async def fetchall(
        self, query: str | bytes, params: Sequence[object] = ()
    ) -> list[tuple[Any, ...]]:
        """Run a query in the transaction (it sees the transaction's writes); return rows."""
        cursor = await self.connection.execute(query, params)
        return await cursor.fetchall()


async def _rollback(conn: Conn) -> None:
    if conn.info.transaction_status != TransactionStatus.IDLE:
        await conn.execute(b"ROLLBACK")


class PostgresInbox(InboxBase[PostgresInboxTx], PostgresDedupStore, Inbox[PostgresInboxTx]):
    """An inbox in PostgreSQL: the keys in ``tidings_dedup``, the effects in your tables.

    Each open transaction holds a pooled connection, so ``max_size`` bounds how many handlers
    write at once; give the router's ``concurrency`` about as many.
    """

    tx_class = PostgresInboxTx

    def __init__(
        self, url: str, *, schema: str = "public", min_size: int = 1, max_size: int = 16
    ) -> None:
        super().__init__(url, schema=schema, min_size=min_size, max_size=max_size)
        # Bound on the client, so that BEGIN and the insert go as one simple query.
        self._begin_record = b"BEGIN;" + self._sql["record"]
        self.before_commit: Callable[[], Awaitable[None]] | None = None
        """Fault injection: awaited inside each transaction, just before it commits."""

    async def _begin(self, conn: Conn, params: Mapping[str, object]) -> None:
        """BEGIN and insert the key in one round trip; raise AlreadyProcessed if it is done."""
        try:
            async with AsyncClientCursor(conn) as cursor:
                await cursor.execute(self._begin_record, params)
                cursor.nextset()  # from BEGIN's result to the INSERT's
                inserted = await cursor.fetchone()
        except BaseException:
            await asyncio.shield(_rollback(conn))
            raise
        if inserted is None:
            found = await self._fetchone(conn, "state", params)
            await _rollback(conn)
            raise AlreadyProcessed(str(params["key"]), None if found is None else found[1])

    @contextlib.asynccontextmanager
    async def transaction(
        self,
        delivery: Delivery,
        *,
        consumer: str,
        key: str | None = None,
        ttl: float | None = DEFAULT_TTL,
        ack: bool = True,
    ) -> AsyncIterator[PostgresInboxTx]:
        """Insert the key, run the block, commit; ack (see `Inbox.transaction`)."""
        stored = inbox_key(consumer, key or delivery.event.id)
        params = {"key": stored, "seconds": ttl_seconds(ttl), "outcome": None}
        try:
            async with self._connection() as conn:
                await self._begin(conn, params)
                try:
                    tx = PostgresInboxTx(self, stored, conn)
                    yield tx
                    if tx.outcome is not None:
                        outcome = {**params, "outcome": tx.outcome}
                        await conn.execute(self._sql["outcome"], outcome)
                    if self.before_commit is not None:
                        await self.before_commit()
                    await conn.execute(b"COMMIT")
                except BaseException:
                    await asyncio.shield(_rollback(conn))
                    raise
        except AlreadyProcessed:
            if ack:
                await delivery.ack()
            raise
        if ack:
            await delivery.ack()
