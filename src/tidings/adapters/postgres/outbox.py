"""The outbox in PostgreSQL: a writer for the application's psycopg transaction, a relay source.

Writing: `PostgresOutbox.add` inserts one row through the application's own
``psycopg.AsyncConnection``, inside its open transaction. The same statement first takes a
transaction-level advisory lock on the aggregate, so transactions writing one aggregate's
events commit one after the other, in ``seq`` order. A statement trigger NOTIFYs the relays
when the transaction commits.

Reading (`PostgresOutboxSource`): aggregates are spread over `SHARDS` shards, one row each in
``<table>_shards``. A fetch opens a transaction on the source's own connection, locks some free
shards that hold unrelayed rows (``FOR UPDATE SKIP LOCKED``: relays never wait on each other),
and reads their unrelayed rows by ``seq``; the transaction, and the shard locks with it, lasts
until `mark_relayed` commits (or `release` rolls back, or the relay's process dies and the
server ends its session). So one aggregate is only ever relayed by one relay at a time, in
``seq`` order, and a row whose transaction commits late is still unrelayed when it becomes
visible: nothing is read "after the last seq", so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Final

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from tidings.adapters.postgres.connection import (
    Listener,
    conninfo_from_url,
    open_pool,
    translate_errors,
)
from tidings.errors import ConfigurationError
from tidings.events import Event
from tidings.eventstore.base import DEFAULT_MAX_EVENT_BYTES, Wakeup
from tidings.lifecycle import Resource
from tidings.outbox.ports import OutboxMessage, OutboxSource, OutboxStatus
from tidings.outbox.rows import DEFAULT_TABLE, SHARDS, lock_key, message, outbox_row
from tidings.outbox.schema import PostgresSQL, pyformat

__all__ = ["PostgresOutbox", "PostgresOutboxSource", "create_outbox_table"]

Conn = psycopg.AsyncConnection[TupleRow]
_DDL_LOCK: Final = 0x7469_6469_6E67_7300  # "tidings\0": serialises concurrent table creation
_PURGE_BATCH: Final = 1000


async def create_outbox_table(conn: Conn, sql: PostgresSQL) -> None:
    """Create the outbox tables, indexes and trigger unless they exist (own transaction)."""
    with translate_errors():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            cursor = await conn.execute("SELECT to_regclass(%s)", (sql.qualified,))
            row = await cursor.fetchone()
            if row is not None and row[0] is not None:
                return
            for statement in sql.ddl():
                await conn.execute(statement.encode())


class PostgresOutbox:
    """Writes outbox rows through the application's psycopg connection.

    Args:
        schema: The schema of the outbox table.
        table: The outbox table's name.
        max_event_bytes: The largest encoded event accepted.
    """

    def __init__(
        self,
        *,
        schema: str = "public",
        table: str = DEFAULT_TABLE,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.sql = PostgresSQL(schema, table)
        self.max_event_bytes = max_event_bytes
        self._insert = pyformat(self.sql.insert()).encode()

    async def create_table(self, conn: Conn) -> None:
        """Create the table if missing; run it outside the application's transactions."""
        await create_outbox_table(conn, self.sql)

    async def add(
        self,
        conn: Conn,
        event: Event,
        *,
        topic: str,
        key: str | None = None,
        aggregate_type: str | None = None,
        aggregate_id: str | None = None,
    ) -> None:
        """Insert ``event`` for ``topic`` in the connection's current transaction.

        It is published only if that transaction commits. Defaults of the key and the
        aggregate: `tidings.outbox.rows.outbox_row`. Driver errors are the application's to
        handle (they abort its transaction), so they are raised as psycopg raised them.
        """
        row = outbox_row(
            event,
            topic=topic,
            key=key,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            max_event_bytes=self.max_event_bytes,
        )
        params = row.params()
        params["lock"] = lock_key(self.sql.qualified, row.aggregate_id)
        await conn.execute(self._insert, params)


class PostgresOutboxSource(Resource, OutboxSource):
    """Reads a PostgreSQL outbox table for a relay; several relays may run at once.

    Args:
        url: ``postgresql://user@host:port/dbname``.
        schema: The schema of the outbox table.
        table: The outbox table's name.
        retention: Seconds to keep relayed rows (marked with ``processed_at``); 0 deletes them
            as soon as they are relayed.
        shards_per_fetch: How many shards a fetch locks at most (fewer leaves more for other
            relays working at the same time).
        connect_timeout: Seconds to wait for the first connection.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        table: str = DEFAULT_TABLE,
        retention: float = 0.0,
        shards_per_fetch: int = SHARDS,
        connect_timeout: float = 10.0,
    ) -> None:
        if not 1 <= shards_per_fetch <= SHARDS:
            raise ConfigurationError(f"shards_per_fetch must be within 1..{SHARDS}")
        self.url = url
        self.sql = PostgresSQL(schema, table)
        self.retention = float(retention)
        self.shards_per_fetch = shards_per_fetch
        self.connect_timeout = connect_timeout
        self._conninfo = conninfo_from_url(url)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._conn: Conn | None = None
        self._wakeup = Wakeup()
        self._token = self._wakeup.token()
        self._listener = Listener(self._conninfo, self.sql.channel, self._wakeup.notify)
        self._last_purge = 0.0
        keep = self.retention > 0
        self._statements = {
            "claim": pyformat(self.sql.claim_shards()).encode(),
            "fetch": pyformat(self.sql.fetch()).encode(),
            "mark": pyformat(self.sql.mark(keep=keep)).encode(),
            "purge": pyformat(self.sql.purge()).encode(),
            "status": pyformat(self.sql.status()).encode(),
        }

    async def _open(self) -> None:
        self._pool = await open_pool(
            self._conninfo,
            sizes=(1, 2),
            name=f"tidings-outbox-{self.sql.schema}",
            timeout=self.connect_timeout,
            setup=lambda conn: create_outbox_table(conn, self.sql),
        )
        self._listener.start()

    async def _close(self) -> None:
        await self._listener.aclose()
        await self._drop_connection()
        if self._pool is not None:
            await self._pool.close()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=False, connect_timeout=int(self.connect_timeout)
            )
            # This connection runs only the fetch and mark statements. An outbox table's
            # statistics are often stale (it fills and empties); planned from them, a bitmap
            # scan reads a shard's whole backlog to return its oldest rows.
            try:
                await conn.execute(b"SET enable_bitmapscan = off")
                await conn.commit()
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def fetch(self, limit: int) -> Sequence[OutboxMessage]:
        """Lock free shards with unrelayed rows and return their oldest ``limit`` rows.

        The shards stay locked (the transaction stays open) until `mark_relayed` or `release`.
        """
        await self._ensure_open()
        self._token = self._wakeup.token()  # a NOTIFY from now on ends the next wait
        async with self._guarded():
            conn = await self._connection()
            cursor = await conn.execute(
                self._statements["claim"], {"shards": self.shards_per_fetch}
            )
            shards = [row[0] for row in await cursor.fetchall()]
            if shards:
                cursor = await conn.execute(
                    self._statements["fetch"], {"shards": shards, "limit": limit}
                )
                rows = await cursor.fetchall()
                if rows:
                    return [message(r[0], r[1], r[2], r[3], r[4], (r[5], r[6]), r[7]) for r in rows]
            await conn.rollback()
            return []

    async def mark_relayed(self, messages: Sequence[OutboxMessage]) -> None:
        """Stamp or delete the rows and commit, which also frees the shards."""
        await self._ensure_open()
        async with self._guarded():
            conn = await self._connection()
            seqs = [m.position for m in messages]
            if seqs:
                await conn.execute(self._statements["mark"], {"seqs": seqs})
            await conn.commit()
        if self.retention > 0 and time.monotonic() - self._last_purge > 1.0:
            self._last_purge = time.monotonic()
            await self._purge()

    async def _purge(self) -> None:
        assert self._pool is not None
        params = {"seconds": self.retention, "limit": _PURGE_BATCH}
        with translate_errors():
            async with self._pool.connection() as conn:
                await conn.execute(self._statements["purge"], params)

    async def release(self, messages: Sequence[OutboxMessage]) -> None:
        """Roll back: the rows stay unrelayed and the shards are free again."""
        async with self._guarded():
            if self._conn is not None and not self._conn.closed:
                await self._conn.rollback()

    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        # A connection that failed mid-transaction is closed: the server then ends its
        # transaction and frees its shards, and the next call connects again.
        try:
            with translate_errors():
                yield
        except BaseException:
            await self._drop_connection()
            raise

    async def wait(self, timeout: float) -> None:
        """Return on a NOTIFY from a committing writer (or a reconnect), or after ``timeout``."""
        await self._ensure_open()
        token = self._token
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await token.wait()

    async def status(self) -> OutboxStatus:
        """Return the backlog, the time of its oldest row, and the relayed rows kept."""
        await self._ensure_open()
        assert self._pool is not None
        with translate_errors():
            async with self._pool.connection() as conn:
                cursor = await conn.execute(self._statements["status"])
                row = await cursor.fetchone()
        assert row is not None
        return OutboxStatus(backlog=row[0], oldest=row[1], relayed=row[2])
